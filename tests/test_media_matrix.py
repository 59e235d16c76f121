"""The format matrix (``facecut.tools.make_media --profile formats``) checked with PyAV alone.

Each file stands for one class of real-world file (codec, container, timing
quirk). These tests check that the file really is what it claims (container,
codecs, pixel format, rotation, the quirk itself) and that its truth file
matches what a decoder sees, so tests of the engine can trust both.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from facecut.tools.make_media import (
    FORMAT_ENCODERS,
    FORMAT_MATRIX,
    Shot,
    format_spec,
    load_truth,
    make_format_video,
    render_frame,
)

NAMES = list(FORMAT_MATRIX) + ["dup_of_basic.mp4"]

MP4 = "mov,mp4,m4a,3gp,3g2,mj2"
MKV = "matroska,webm"
# name: (demuxer, video decoder, decoded pix_fmt, audio decoders or None)
EXPECTED: dict[str, tuple[str, str, str, tuple[str, ...] | None]] = {
    "basic.mp4": (MP4, "h264", "yuv420p", ("aac",)),
    "hevc_opus.mkv": (MKV, "hevc", "yuv420p", ("opus", "libopus")),
    "vp9_opus.webm": (MKV, "vp9", "yuv420p", ("opus", "libopus")),
    "mpeg4_bframes.avi": ("avi", "mpeg4", "yuv420p", ("mp3", "mp3float")),
    "packed_b.avi": ("avi", "mpeg4", "yuv420p", ("mp3", "mp3float")),
    "mpeg2_mp2.ts": ("mpegts", "mpeg2video", "yuv420p", ("mp2", "mp2float")),
    "h264_10bit.mp4": (MP4, "h264", "yuv420p10le", ("aac",)),
    "odd_size.mp4": (MP4, "h264", "yuv420p", ("aac",)),
    "rot90.mov": (MP4, "h264", "yuv420p", ("aac",)),
    "rot180.mp4": (MP4, "h264", "yuv420p", ("aac",)),
    "rot270.mp4": (MP4, "h264", "yuv420p", ("aac",)),
    "fragmented.mp4": (MP4, "h264", "yuv420p", ("aac",)),
    "mjpeg_pcm.avi": ("avi", "mjpeg", "yuvj420p", ("pcm_s16le",)),
    "wmv2_wma.wmv": ("asf", "wmv2", "yuv420p", ("wmav2",)),
    "gap.mp4": (MP4, "h264", "yuv420p", ("aac",)),
    "reschange_cut.ts": ("mpegts", "h264", "yuv420p", ("aac",)),
    "reschange_mid.ts": ("mpegts", "h264", "yuv420p", ("aac",)),
    "vfr_phone.mp4": (MP4, "h264", "yuv420p", ("aac",)),
    "long_shot.mp4": (MP4, "h264", "yuv420p", ("aac",)),
    "dup_of_basic.mp4": (MP4, "h264", "yuv420p", ("aac",)),
}
ROTATION = {"rot90.mov": 90, "rot180.mp4": 180, "rot270.mp4": 270, "vfr_phone.mp4": 90}


def _file(format_matrix: Path, name: str) -> Path:
    path = format_matrix / name
    if not path.exists():
        missing = [c for c in FORMAT_ENCODERS[name] if c not in av.codecs_available]
        if missing:
            pytest.skip(f"{name}: encoder(s) {', '.join(missing)} not in this PyAV build")
        pytest.fail(f"{name} was not made")
    return path


class Decoded:
    """Everything the tests need from one decode pass (packet by packet)."""

    def __init__(self, path: Path) -> None:
        with av.open(str(path)) as c:
            self.format = c.format.name
            self.start_time = c.start_time
            v = c.streams.video[0]
            self.vcodec = v.codec_context.name
            self.vtag = v.codec_context.codec_tag
            self.audio = [s.codec_context.name for s in c.streams.audio]
            self.pts, self.times, self.sizes, self.rotations, self.pix = [], [], [], [], []
            self.vpackets: list[int] = []
            self.atimes: list[float] = []
            for packet in c.demux():
                if packet.stream.type == "video":
                    if packet.size:
                        self.vpackets.append(packet.size)
                    for f in packet.decode():
                        self.pts.append(f.pts)
                        self.times.append(f.time)
                        self.sizes.append((f.width, f.height))
                        self.rotations.append(f.rotation)
                        self.pix.append(f.format.name)
                elif packet.stream.type == "audio" and packet.stream.index == c.streams.audio[0].index:
                    for f in packet.decode():
                        self.atimes.append(f.time)


@lru_cache(maxsize=None)
def _decode(path: Path) -> Decoded:
    return Decoded(path)


def _expected_times(t) -> list[float]:
    return t.frame_times or [i / t.fps for i in range(t.frames)]


# --------------------------------------------------------------------------- every file


def test_every_class_is_made(format_matrix):
    for name in NAMES:
        if any(c not in av.codecs_available for c in FORMAT_ENCODERS[name]):
            continue
        assert (format_matrix / name).exists(), name
        t = load_truth(format_matrix / name)
        assert t.klass and t.path == name
        assert t.t0 is not None and t.pix_fmt
        assert (format_matrix / name).stat().st_size < 1_000_000, name


@pytest.mark.parametrize("name", NAMES)
def test_container_codecs_and_rotation(format_matrix, name):
    path = _file(format_matrix, name)
    t, d = load_truth(path), _decode(path)
    demuxer, vcodec, pix, audio = EXPECTED[name]
    assert d.format == demuxer
    assert d.vcodec == vcodec
    assert set(d.pix) == {pix} and t.pix_fmt == pix
    rotation = ROTATION.get(name, 0)
    # PyAV reports counter-clockwise degrees in (-180, 180]: 270 reads as -90.
    assert {r % 360 for r in d.rotations} == {rotation} and t.rotation % 360 == rotation
    if rotation % 180:
        assert (t.width, t.height) == (t.coded_height, t.coded_width)
    else:
        assert (t.width, t.height) == (t.coded_width, t.coded_height)
    assert d.sizes[0] == (t.coded_width, t.coded_height)
    assert t.audio == (audio is not None)
    if audio:
        assert len(d.audio) == 1 and d.audio[0] in audio, d.audio
        assert d.atimes, "no audio decoded"
    else:
        assert d.audio == []


@pytest.mark.parametrize("name", NAMES)
def test_frame_count_and_display_times(format_matrix, name):
    path = _file(format_matrix, name)
    t, d = load_truth(path), _decode(path)
    assert len(d.times) == t.frames
    half = 0.5 / t.fps
    # packed_b's pts arrive out of order (its own test); sorted they are still the truth.
    times = sorted(d.times)
    rel = np.array(times) - times[0]
    assert np.abs(rel - np.array(_expected_times(t))).max() < half
    assert abs(times[0] - t.t0) < half
    assert _expected_times(t)[-1] < t.duration <= _expected_times(t)[-1] + 2.5 / t.fps
    assert t.cuts == [s.start_frame for s in t.shots[1:]]
    assert t.shots[-1].end_frame == t.frames
    assert [t.shots[i].kind for i in (0, -1)] == ["face"] * 2
    assert all(s.swappable and s.face_short >= 130 for s in t.shots if s.kind == "face")
    if name not in ("packed_b.avi",):
        assert d.times == sorted(d.times), "frame times go backwards"


@pytest.mark.parametrize("name", NAMES)
def test_audio_starts_with_the_video(format_matrix, name):
    path = _file(format_matrix, name)
    t, d = load_truth(path), _decode(path)
    if not t.audio:
        pytest.skip("no audio")
    assert d.atimes[0] == pytest.approx(t.audio_t0, abs=1e-3)
    # Same start up to codec delays and muxer habits (see the truth notes).
    assert abs(t.audio_t0 - t.t0) <= 0.1


@pytest.mark.parametrize("name", NAMES)
def test_pictures_match_the_truth(format_matrix, name):
    """Sampled frames, in decoder output order, are the pictures the truth says
    (shot, position in the shot, size, rotation applied as display metadata)."""
    path = _file(format_matrix, name)
    t = load_truth(path)
    _, shots, _, seed = format_spec(t.duplicate_of or name)
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
    for j in range(0, t.frames, 9):
        f = frames[j]
        s = next(s for s in t.shots if s.start_frame <= j < s.end_frame)
        count = s.end_frame - s.start_frame
        img = np.rot90(f.to_ndarray(format="bgr24"), k=(f.rotation // 90) % 4)
        h, w = img.shape[:2]
        shot = shots[s.index]
        if w != t.width:  # after a size change the picture scales with the frame
            shot = replace(shot, face_px=shot.face_px * w / t.width)
        ref = render_frame(shot, (j - s.start_frame) / max(1, count - 1), w, h, seed * 1000 + s.index)
        mse = ((img.astype(np.float64) - ref) ** 2).mean()
        assert 10 * np.log10(255**2 / mse) > 25, (name, j)


# --------------------------------------------------------------------------- the quirks


def test_mkv_and_webm_and_mov_are_what_they_say(format_matrix):
    head = {n: _file(format_matrix, n).read_bytes()[:64] for n in ("hevc_opus.mkv", "vp9_opus.webm")}
    assert b"matroska" in head["hevc_opus.mkv"] and b"webm" in head["vp9_opus.webm"]
    assert _file(format_matrix, "rot90.mov").read_bytes()[4:12] == b"ftypqt  "
    assert _file(format_matrix, "rot180.mp4").read_bytes()[4:8] == b"ftyp"
    assert _file(format_matrix, "rot180.mp4").read_bytes()[8:12] != b"qt  "


def test_fragmented_mp4_has_fragments(format_matrix):
    data = _file(format_matrix, "fragmented.mp4").read_bytes()
    assert data.count(b"moof") >= 3 and b"mvex" in data
    t = load_truth(format_matrix / "fragmented.mp4")
    assert t.t0 > 0  # no edit list: the B-frame delay shows


def test_packed_b_pts_arrive_out_of_order(format_matrix):
    path = _file(format_matrix, "packed_b.avi")
    t, d = load_truth(path), _decode(path)
    back = sum(1 for a, b in zip(d.pts, d.pts[1:]) if b < a)
    assert back >= t.frames // 3, d.pts[:20]
    assert all(a - b == 1 for a, b in zip(d.pts, d.pts[1:]) if b < a)  # small steps only
    assert sorted(d.pts) == list(range(d.pts[0], d.pts[0] + t.frames))
    # The DivX packed layout: one tiny N-VOP chunk after each P+B chunk.
    nvops = sum(1 for s in d.vpackets if s < 20)
    assert len(d.vpackets) == t.frames and nvops >= t.frames // 3
    assert d.vtag == "DX50"
    assert b"DivX503b1393p" in path.read_bytes()


def test_packed_b_pictures_come_in_display_order(format_matrix):
    """Only the pts are scrambled: every output picture is closer to its own
    display position than to its neighbours'."""
    path = _file(format_matrix, "packed_b.avi")
    t = load_truth(path)
    _, shots, _, seed = format_spec("packed_b.avi")
    with av.open(str(path)) as c:
        got = [f.to_ndarray(format="gray").astype(np.float32) for f in c.decode(video=0)]
    ref = []
    for s in t.shots:
        count = s.end_frame - s.start_frame
        for k in range(count):
            img = render_frame(shots[s.index], k / max(1, count - 1), t.width, t.height, seed * 1000 + s.index)
            ref.append(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32))
    for j in range(1, t.frames - 1):
        err = [((got[j] - ref[j + k]) ** 2).mean() for k in (-1, 0, 1)]
        assert err[1] < min(err[0], err[2]), j


def test_standard_mpeg4_avi_pts_are_monotonic(format_matrix):
    d = _decode(_file(format_matrix, "mpeg4_bframes.avi"))
    assert d.pts == sorted(d.pts)
    assert all(s > 20 for s in d.vpackets)  # no N-VOP placeholders


def test_ts_files_start_late(format_matrix):
    for name in ("mpeg2_mp2.ts", "reschange_cut.ts", "reschange_mid.ts"):
        path = _file(format_matrix, name)
        t, d = load_truth(path), _decode(path)
        assert d.start_time and d.start_time > 0
        assert t.t0 == pytest.approx(1.4, abs=0.02)
        assert min(d.times) == pytest.approx(t.t0, abs=0.02)


@pytest.mark.parametrize("name", ["reschange_cut.ts", "reschange_mid.ts"])
def test_resolution_changes_inside_one_stream(format_matrix, name):
    path = _file(format_matrix, name)
    t, d = load_truth(path), _decode(path)
    assert t.sizes and len(t.sizes) == 2
    assert sorted(set(d.sizes)) == sorted({(int(w), int(h)) for _, w, h in t.sizes})
    rel = [x - t.t0 for x in d.times]
    for r, size in zip(rel, d.sizes):
        want = [(w, h) for start, w, h in t.sizes if start <= r + 1e-6][-1]
        assert size == want, (r, size)
    steps = np.diff(d.times)
    assert steps.max() < 1.5 / t.fps and steps.min() > 0.5 / t.fps  # continuous across the change
    change = t.sizes[1][0]
    at_cut = any(abs(c - change) < 1e-6 for c in t.cut_times)
    assert at_cut == (name == "reschange_cut.ts")


def test_gap_file_has_the_gap(format_matrix):
    path = _file(format_matrix, "gap.mp4")
    t, d = load_truth(path), _decode(path)
    assert t.gaps == [[3.0, 6.0]]
    rel = np.array(d.times) - t.t0
    steps = np.diff(rel)
    big = np.flatnonzero(steps > 1.0)
    assert len(big) == 1
    i = big[0]
    assert rel[i] + 1 / t.fps == pytest.approx(3.0, abs=1e-3)
    assert rel[i + 1] == pytest.approx(6.0, abs=1e-3)
    # The audio has the same hole.
    a = np.array(d.atimes) - t.t0
    assert not ((a > 3.05) & (a < 5.95)).any()
    assert (a < 3.0).any() and (a >= 6.0).any()


def test_duplicate_is_a_byte_copy(format_matrix):
    dup = _file(format_matrix, "dup_of_basic.mp4")
    t = load_truth(dup)
    assert t.duplicate_of == "basic.mp4"
    assert dup.read_bytes() == (format_matrix / "basic.mp4").read_bytes()
    base = load_truth(format_matrix / "basic.mp4")
    assert base.duplicate_of is None and t.frames == base.frames


def test_long_shot(format_matrix):
    t = load_truth(_file(format_matrix, "long_shot.mp4"))
    assert len(t.shots) == 1 and t.cuts == []
    assert t.duration >= 40 - 1e-6 and t.fps == 10
    assert t.shots[0].swappable and t.shots[0].face_short >= 130


def test_vfr_phone(format_matrix):
    t = load_truth(_file(format_matrix, "vfr_phone.mp4"))
    assert t.vfr and t.frame_times and t.rotation == 90
    assert len(set(np.round(np.diff(t.frame_times), 3))) > 3


def test_odd_size_and_its_bytes_repeat(format_matrix, tmp_path):
    t = load_truth(_file(format_matrix, "odd_size.mp4"))
    assert t.coded_width % 16 != 0
    shots = [Shot("face", 0.4, "astronaut", face_px=100), Shot("noface", 0.4, "coffee")]
    for name in ("a.mp4", "b.mp4"):
        make_format_video(tmp_path / name, shots, klass="odd_size", width=426, height=240, pad_planes=True)
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()
