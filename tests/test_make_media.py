"""The generator's truth must match what a decoder sees."""

from __future__ import annotations

import av
import numpy as np

from facecut.tools.make_media import load_truth


def _frames(path):
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            yield f


def test_truth_matches_decoded_stream(media_dir):
    for path in sorted(media_dir.rglob("*.mp4")) + sorted(media_dir.rglob("*.mkv")):
        t = load_truth(path)
        frames = list(_frames(path))
        assert len(frames) == t.frames, path.name
        times = [f.time for f in frames]
        expected = t.frame_times or [i / t.fps for i in range(t.frames)]
        assert np.allclose(times, expected, atol=1e-3), path.name
        assert frames[0].rotation == t.rotation
        assert t.cuts == [s.start_frame for s in t.shots[1:]]
        assert t.shots[-1].end_frame == t.frames


def test_cut_frames_differ_much_more_than_neighbours(media_dir):
    """The frame at a cut differs from the one before far more than within a shot."""
    path = media_dir / "basic.mp4"
    t = load_truth(path)
    imgs = [f.to_ndarray(format="gray").astype(np.int16) for f in _frames(path)]
    diff = np.array([np.abs(b - a).mean() for a, b in zip(imgs, imgs[1:])])  # diff[i]: i -> i+1
    at_cuts = diff[[c - 1 for c in t.cuts]]
    within = np.delete(diff, [c - 1 for c in t.cuts])
    assert at_cuts.min() > 4 * np.percentile(within, 99)


def test_rotation_is_display_metadata(media_dir):
    t = load_truth(media_dir / "rotated.mp4")
    f = next(_frames(media_dir / "rotated.mp4"))
    assert (f.width, f.height) == (t.coded_width, t.coded_height)
    assert (t.width, t.height) == (t.coded_height, t.coded_width)
    assert f.rotation == 90


def test_truth_shots_describe_faces(media_dir):
    t = load_truth(media_dir / "basic.mp4")
    kinds = [s.kind for s in t.shots]
    assert kinds == ["face", "noface", "face", "small", "enter"]
    assert [s.swappable for s in t.shots] == [True, False, True, False, False]
    enter = t.shots[4]
    assert enter.start < enter.face_from < enter.end
    assert t.shots[3].face_short < 40


def test_generation_is_deterministic(tmp_path):
    from facecut.tools.make_media import Shot, make_video

    shots = [Shot("face", 0.4, "astronaut", face_px=100), Shot("noface", 0.4, "coffee")]
    for name in ("a.mp4", "b.mp4"):
        make_video(tmp_path / name, shots, seed=3, vfr=True, rotation=270, width=288, height=512)
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()
