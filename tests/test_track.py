"""Tracking on constructed detection sequences (the real analysis is exercised in
test_score.py). Sequences are built as log records, exactly what the engine writes."""

from __future__ import annotations

import numpy as np
import pytest

from facecut.config import TrackConfig
from facecut.records import SCHEMA, Cut, Done, Face, LogHeader, Sample, embedding_to_bytes
from facecut.track import VideoLog, greedy_pairs, track_video
from facecut.videolog import shots_from_cuts

FPS = 2.0


def face(x: float = 100.0, y: float = 80.0, size: float = 120.0, *, yaw: float = 0.0, pitch: float = 0.0,
         score: float = 0.99, emb=None) -> Face:
    """A face box of ``size`` px short side at (x, y), source pixels."""
    return Face(box=(x, y, x + size, y + 1.25 * size), kps=(0.0,) * 10, score=score, yaw=yaw, pitch=pitch,
                roll=0.0, short=size, emb=None if emb is None else embedding_to_bytes(emb))


def log(frames, *, n: int | None = None, cuts=(), fps: float = FPS, fingerprint: str = "fp", model: str = "test"):
    """Log records of a video sampled at ``fps``: ``frames`` maps a grid index k to
    the faces of sample k (a list of lists works too); samples 0..n-1 sit on the
    grid (k / fps); ``cuts`` are shot-cut times in seconds (frame-accurate, so not
    on the grid), logged before the first sample at or after them."""
    if not isinstance(frames, dict):
        frames = dict(enumerate(frames))
    n = n if n is not None else max(frames, default=-1) + 1
    out = [LogHeader(schema=SCHEMA, video="x.mp4", fingerprint=fingerprint, fps=fps, t0=0.0, max_side=1280,
                     model=model, model_params="{}", detector="adaptive", detector_params="{}")]
    pending = sorted(cuts)
    for k in range(n):
        t = k / fps
        while pending and pending[0] <= t:
            c = pending.pop(0)
            out.append(Cut(pts=round(c * 1000), time=c))
        out.append(Sample(k=k, pts=round(t * 1000), time=t, scale=1.0, faces=tuple(frames.get(k, ()))))
    out += [Cut(pts=round(c * 1000), time=c) for c in pending]
    out.append(Done(status="ok", samples=n, duration=n / fps))
    return out


def spans(tracks):
    """(shot, first k, last k, detections) of each track."""
    return [(t.shot, int(t.k[0]), int(t.k[-1]), len(t)) for t in tracks]


def test_one_face_moving_slowly_is_one_track():
    recs = log([[face(100 + 6 * k)] for k in range(20)])
    tracks = track_video(recs)
    assert spans(tracks) == [(0, 0, 19, 20)]
    t = tracks[0]
    assert t.id == 0 and t.start == 0.0 and t.end == 9.5
    assert np.allclose(t.column("short"), 120.0)


def test_tracks_never_cross_a_cut():
    # The same box on both sides of a cut at 5.04 s (between samples 10 and 11).
    recs = log([[face()] for _ in range(20)], cuts=[5.04])
    tracks = track_video(recs)
    assert spans(tracks) == [(0, 0, 10, 11), (1, 11, 19, 9)]


def test_short_gaps_are_stitched_long_ones_are_not():
    frames = {k: [face()] for k in range(30)}
    for k in (5, 6):  # 1 s without detection: within max_gap (1 s)
        del frames[k]
    for k in (15, 16, 17):  # 1.5 s: longer than max_gap
        del frames[k]
    tracks = track_video(log(frames, n=30))
    assert spans(tracks) == [(0, 0, 14, 13), (0, 18, 29, 12)]
    assert spans(track_video(log(frames, n=30), TrackConfig(max_gap=2.0))) == [(0, 0, 29, 25)]


def test_fast_move_is_stitched_by_position_a_jump_is_not():
    # 90 px per sample at 120 px faces: IoU ~0.14, below the IoU gate, but only
    # 0.75 face sizes of shift: the same face moving fast.
    fast = [[face(50 + 90 * k)] for k in range(6)]
    assert spans(track_video(log(fast))) == [(0, 0, 5, 6)]
    # A jump of 3 face sizes, or to twice the size, is somebody else.
    jump = [[face(50)], [face(50)], [face(410)], [face(410)]]
    assert spans(track_video(log(jump))) == [(0, 0, 1, 2), (0, 2, 3, 2)]
    grow = [[face(50, size=100)], [face(50, size=100)], [face(20, size=220)], [face(20, size=220)]]
    assert spans(track_video(log(grow))) == [(0, 0, 1, 2), (0, 2, 3, 2)]


def test_two_faces_side_by_side_are_two_tracks():
    frames = [[face(40 + 2 * k), face(300 - 2 * k)] for k in range(10)]
    frames += [[face(300 - 2 * k)] for k in range(10, 14)]  # the left one leaves
    tracks = track_video(log(frames))
    assert spans(tracks) == [(0, 0, 9, 10), (0, 0, 13, 14)]
    assert tracks[0].column("box")[0][0] < tracks[1].column("box")[0][0]


def unit(seed: int, d: int = 64) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=d)
    return v / np.linalg.norm(v)


def test_embeddings_keep_identities_when_faces_swap_places():
    # Two people; detection drops out for a sample, then they stand where the
    # other stood. Boxes alone would swap the tracks, embeddings do not.
    a, b = unit(1), unit(2)
    before = [[face(60, emb=a), face(260, emb=b)] for _ in range(4)]
    after = [[face(60, emb=b), face(260, emb=a)] for _ in range(4)]
    tracks = track_video(log(before + [[]] + after))
    assert spans(tracks) == [(0, 0, 8, 8), (0, 0, 8, 8)]
    for t, ref in zip(tracks, (a, b)):
        emb = t.column("emb")
        assert np.allclose(emb @ ref, 1.0, atol=1e-2)  # every detection is the same person
    # Without embeddings the boxes decide: each track keeps its place.
    plain = [[face(60), face(260)] for _ in range(4)] + [[]] + [[face(60), face(260)] for _ in range(4)]
    assert [t.column("box")[-1][0] for t in track_video(log(plain))] == [60, 260]


def test_embedding_stitches_a_gap_that_moved_too_far_for_position():
    a = unit(3)
    frames = {0: [face(40, emb=a)], 1: [face(40, emb=a)], 3: [face(400, emb=a)], 4: [face(400, emb=a)]}
    assert spans(track_video(log(frames))) == [(0, 0, 4, 4)]
    plain = {k: [face(f.box[0])] for k, fs in frames.items() for f in fs}
    assert spans(track_video(log(plain))) == [(0, 0, 1, 2), (0, 3, 4, 2)]


def test_shots_and_sample_membership():
    shots = shots_from_cuts([5.04, 0.0, 12.0, 5.04], 10.0)  # 0 and beyond the end are ignored
    assert [(s.start, s.end) for s in shots] == [(0.0, 5.04), (5.04, 10.0)]
    v = VideoLog.from_records(log([[face()]] * 20, cuts=[5.0]))
    # a cut's frame is the first of the new shot: the sample at exactly 5.0 is in shot 1
    assert v.shot.tolist() == [0] * 10 + [1] * 10
    assert v.dt == 0.5 and v.duration == 10.0


def test_greedy_pairs_best_first_each_once():
    scored = [(0.9, 0, 0), (0.8, 0, 1), (0.7, 1, 0), (0.6, 1, 1), (0.1, 2, 2)]
    assert greedy_pairs(scored, 0.3) == [(0, 0), (1, 1)]
    assert greedy_pairs([], 0.3) == []


@pytest.mark.parametrize("n", [0, 5])
def test_no_faces_no_tracks(n):
    assert track_video(log([], n=n)) == []
