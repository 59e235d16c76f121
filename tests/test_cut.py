"""cut: clips from hand-made plans on generated media (real files, real decode).

Plans are built here with records.Plan/SourcePlan/Clip (the score stage is not
needed): each source's ``t0`` is its first frame's time, as the analysis logs it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner

from facecut.cli import main
from facecut.cut import cut_plan, read_clip_tag
from facecut.cut import orchestrator as cutmod  # where _check_and_open is looked up
from facecut.errors import ConfigError
from facecut.fsio import clip_id, fingerprint, output_folder, read_json, video_key, write_json
from facecut.workdir import WorkDir
from facecut.records import Clip, ClipStats, Plan, SourcePlan
from facecut.tools.make_media import Shot, load_truth, make_video

ROOT = Path(__file__).resolve().parents[1]
FPS = 25  # facecut.tools.make_media default
FRAME = 1 / FPS

# basic.mp4: shots of 3, 2, 3, 2, 3 s -> hard cuts at 3, 5, 8, 10 s; keyframes every 2 s and on cuts.
BASIC_SPANS = [(0.0, 2.5), (0.52, 1.2), (3.0, 4.9), (3.4, 4.0), (5.0, 7.96), (6.3, 7.1), (8.2, 9.0), (10.5, 12.96)]

BASIC = output_folder("basic.mp4")  # the folder of basic.mp4's clips in OUT


# --------------------------------------------------------------------------- helpers


def first_frame_time(path: Path) -> float:
    with av.open(str(path)) as c:
        return float(next(c.decode(video=0)).time)


def make_plan(input_dir: Path, spans: dict[str, list[tuple[float, float]]], t0: dict | None = None) -> Plan:
    sources, clips = [], []
    for rel, pairs in spans.items():
        path = input_dir / rel
        fp = fingerprint(path) if path.exists() else "gone"
        start = (t0 or {}).get(rel, first_frame_time(path) if path.exists() else 0.0)
        sources.append(SourcePlan(path=rel, key=video_key(rel), status="ok", fingerprint=fp, t0=start,
                                  duration=load_truth(path).duration if path.with_name(path.name + ".truth.json").exists() else 0.0))
        for i, (a, b) in enumerate(pairs):
            clips.append(Clip(id=clip_id(fp, a, b), source=rel, key=video_key(rel), start=a, end=b, shot=i,
                              tracks=[i], stats=ClipStats(frames=1, face_short_median=120.0, yaw_range=(0.0, 0.0))))
    return Plan(input_dir=str(input_dir), sources=sources, clips=clips)


def new_work(root: Path, plan: Plan) -> WorkDir:
    wd = WorkDir(root).ensure()
    write_json(wd.plan_json, plan)
    return wd


def load_plan(wd: WorkDir) -> Plan:
    return read_json(wd.plan_json, Plan)


def video_duration(path: Path) -> float:
    """What a player shows: the MP4 track duration; for MKV the end of the last frame."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        if v.duration:
            return float(v.duration * v.time_base)
        ends = [(p.pts + (p.duration or 0)) * p.time_base for p in c.demux(v) if p.size and p.pts is not None]
        return float(max(ends))


def decode_clip(path: Path) -> dict:
    with av.open(str(path)) as c:
        frames = [(f.time, f.rotation, f.to_ndarray(format="gray")) for f in c.decode(video=0)]
        audio = 0.0
        if c.streams.audio:
            c.seek(0)
            audio = sum(f.samples / f.sample_rate for f in c.decode(audio=0))
    return {"times": [t for t, _, _ in frames], "rotation": frames[0][1], "images": [g for _, _, g in frames],
            "audio": audio}


def source_frames(path: Path) -> tuple[list[float], list[np.ndarray]]:
    with av.open(str(path)) as c:
        fr = [(f.time, f.to_ndarray(format="gray")) for f in c.decode(video=0)]
    return [t for t, _ in fr], [g for _, g in fr]


def closest(img: np.ndarray, candidates: list[np.ndarray]) -> int:
    return int(np.argmin([np.abs(img.astype(np.int16) - c.astype(np.int16)).mean() for c in candidates]))


def check_clip(out: Path, clip: Clip, frame: float, *, audio: bool, bframes: int = 2, src_end: float = 1e9):
    """A written clip: decodes, lasts cut_end - cut_start (one frame), covers its plan."""
    assert clip.file and clip.container in ("mp4", "mkv")
    path = out / clip.file
    assert path.suffix == "." + clip.container and path.is_file()
    info = decode_clip(path)
    span = clip.cut_end - clip.cut_start
    assert video_duration(path) == pytest.approx(span, abs=frame + 1e-3), clip
    assert info["times"][0] == pytest.approx(0.0, abs=1e-3)
    assert info["times"][-1] < span
    assert clip.lead_in == pytest.approx(clip.start - clip.cut_start, abs=1e-6)
    assert -1e-3 <= clip.lead_in < 2.0 + 1e-3  # keyframe at/before the start, GOP 2 s
    # Ends where planned; B-frames after the last reference frame before the end can go.
    assert clip.cut_end <= clip.end + frame + 1e-3
    assert clip.cut_end >= min(clip.end, src_end) - (bframes + 1) * frame - 1e-3
    if audio:
        assert info["audio"] == pytest.approx(span, abs=0.06)
    return info


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def extra_media(tmp_path_factory) -> Path:
    """Containers the test batch lacks: WebM (VP8: MKV fallback), AVI (MPEG-4 with
    B-frames), an MPEG-TS whose timestamps restart halfway (two files joined), and
    a video without audio."""
    d = tmp_path_factory.mktemp("cutmedia")
    short = [Shot("face", 1.0, "astronaut", face_px=120), Shot("noface", 1.0, "coffee")]
    make_video(d / "clip.webm", short, codec="libvpx", seed=5)
    make_video(d / "old.avi", short, codec="mpeg4", bframes=2, seed=6)
    shots = [Shot("face", 2.0, "astronaut", face_px=120), Shot("noface", 2.0, "coffee"),
             Shot("face", 2.0, "hanks", face_px=120, background="rocket")]
    make_video(d / "part.mp4", shots, seed=8)
    make_video(d / "silent.mp4", short, audio=False, seed=9)
    parts = []
    for i, (a, b) in enumerate([(0.0, 4.0), (2.0, 6.0)]):
        ts = d / f"part{i}.ts"
        _remux_ts(d / "part.mp4", ts, a, b)
        parts.append(ts.read_bytes())
    (d / "joined.ts").write_bytes(b"".join(parts))  # timestamps restart at the join
    return d


def _remux_ts(src: Path, dst: Path, t_from: float, t_to: float) -> None:
    """Copy [t_from, t_to) of ``src`` into an MPEG-TS whose timestamps start at 0."""
    with av.open(str(src)) as i, av.open(str(dst), "w", format="mpegts") as o:
        m = {s.index: o.add_stream_from_template(s) for s in i.streams}
        for p in i.demux():
            if p.size == 0 or p.pts is None:
                continue
            t = float(p.pts * p.time_base)
            if t < t_from or t >= t_to:
                continue
            off = round(Fraction(t_from) / p.time_base)
            p.pts, p.dts = p.pts - off, p.dts - off
            p.stream = m[p.stream.index]
            o.mux_one(p)


@pytest.fixture(scope="module")
def basic_cut(media_dir, tmp_path_factory):
    """Eight clips of basic.mp4 by stream copy, with av.open counted."""
    root = tmp_path_factory.mktemp("basic")
    wd = new_work(root / "work", make_plan(media_dir, {"basic.mp4": BASIC_SPANS}))
    opened = []
    real_open = av.open

    def counting_open(file, *a, **kw):
        if str(file).endswith("basic.mp4"):
            opened.append(file)
        return real_open(file, *a, **kw)

    mp = pytest.MonkeyPatch()
    mp.setattr(av, "open", counting_open)
    try:
        result = cut_plan(wd, root / "out", sidecar=True)
    finally:
        mp.undo()
    return wd, root / "out", result, opened


# --------------------------------------------------------------------------- stream copy


def test_many_clips_from_one_source_open_it_once(basic_cut):
    _, out, result, opened = basic_cut
    assert result.ok and result.written == len(BASIC_SPANS) and result.failed == 0
    assert result.opens == 1 and result.sources[0].opens == 1
    assert len(opened) == 1  # counted independently of the result
    assert result.bytes == sum(p.stat().st_size for p in (out / BASIC).glob("*.mp4"))


def test_copied_clips_decode_last_their_cut_and_keep_audio(basic_cut, media_dir):
    wd, out, _, _ = basic_cut
    plan = wd.load_plan()
    truth = load_truth(media_dir / "basic.mp4")
    assert plan.params["cut"] == {"out_dir": str(out), "accurate": False, "max_lead_in": 2.0}
    for clip in plan.clips:
        assert clip.file == f"{BASIC}/{clip.id}.mp4"
        info = check_clip(out, clip, FRAME, audio=True, src_end=truth.duration)
        assert len(info["times"]) == pytest.approx((clip.cut_end - clip.cut_start) * FPS, abs=1)
        with open(out / clip.file, "rb") as f:
            head = f.read(64 * 1024)
        assert 0 <= head.find(b"moov") < head.find(b"mdat") or head.find(b"mdat") < 0  # +faststart


def test_copied_clip_shows_the_planned_frame_at_its_lead_in(basic_cut, media_dir):
    wd, out, _, _ = basic_cut
    times, images = source_frames(media_dir / "basic.mp4")
    for clip in wd.load_plan().clips:
        info = decode_clip(out / clip.file)
        k = int(np.argmin([abs(t - clip.lead_in) for t in info["times"]]))
        s = int(np.argmin([abs(t - clip.start) for t in times]))
        # Stream copy: the very same coded frame, so the same pixels.
        assert np.array_equal(info["images"][k], images[s]), clip


def test_shot_cut_starts_need_no_lead_in(basic_cut):
    """x264 puts keyframes on hard cuts: spans starting there cut cleanly."""
    wd, _, _, _ = basic_cut
    by_start = {c.start: c for c in wd.load_plan().clips}
    for start in (0.0, 3.0, 5.0):
        assert by_start[start].lead_in == pytest.approx(0.0, abs=1e-6)
    assert by_start[3.4].lead_in == pytest.approx(0.4, abs=1e-6)


def test_sidecar_holds_the_plan_entry(basic_cut):
    wd, out, _, _ = basic_cut
    for clip in wd.load_plan().clips:
        side = read_json((out / clip.file).with_suffix(".json"), Clip)
        assert side == clip


def test_rerun_skips_everything_without_opening_the_source(basic_cut):
    wd, out, _, _ = basic_cut
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    plan_before = wd.plan_json.read_bytes()
    again = cut_plan(wd, out, sidecar=True)
    assert again.written == 0 and again.skipped == len(BASIC_SPANS) and again.opens == 0
    assert again.sources[0].status == "skipped"
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    assert wd.plan_json.read_bytes() == plan_before


def test_clip_tag_describes_the_clip(basic_cut):
    wd, out, _, _ = basic_cut
    clip = wd.load_plan().clips[2]
    tag, dur = read_clip_tag(out / clip.file)
    assert tag["id"] == clip.id and tag["mode"] == "copy" and tag["source"] == "basic.mp4"
    assert tag["cut_start"] == pytest.approx(clip.cut_start)
    assert dur == pytest.approx(clip.cut_end - clip.cut_start, abs=FRAME)


def test_damaged_or_foreign_file_is_cut_again(media_dir, tmp_path):
    wd = new_work(tmp_path / "w", make_plan(media_dir, {"basic.mp4": [(3.0, 4.9), (5.0, 7.96)]}))
    out = tmp_path / "out"
    cut_plan(wd, out)
    a, b = wd.load_plan().clips
    (out / a.file).write_bytes((out / a.file).read_bytes()[:5000])  # truncated by someone
    (out / b.file).write_bytes((out / a.file).read_bytes())  # another file under its name
    again = cut_plan(wd, out)
    assert again.written == 2 and again.skipped == 0 and again.opens == 1
    for clip in wd.load_plan().clips:
        check_clip(out, clip, FRAME, audio=True)


def test_finished_clips_unknown_to_the_plan_are_adopted(media_dir, tmp_path):
    """A run killed between renaming clips and writing plan.json loses nothing."""
    plan = make_plan(media_dir, {"basic.mp4": [(3.0, 4.9), (5.0, 7.96)]})
    wd = new_work(tmp_path / "w", plan)
    out = tmp_path / "out"
    cut_plan(wd, out)
    done = wd.load_plan()
    write_json(wd.plan_json, plan)  # the plan as it was before the cut
    again = cut_plan(wd, out)
    assert again.skipped == 2 and again.written == 0 and again.opens == 0
    for got, want in zip(wd.load_plan().clips, done.clips):
        assert got.file == want.file and got.cut_start == pytest.approx(want.cut_start)
        assert got.cut_end == pytest.approx(want.cut_end, abs=FRAME)


# --------------------------------------------------------------------------- containers, rotation, VFR


def test_rotation_is_kept(media_dir, tmp_path):
    for accurate in (False, True):
        wd = new_work(tmp_path / f"w{accurate}", make_plan(media_dir, {"rotated.mp4": [(0.4, 2.0), (3.0, 4.6)]}))
        out = tmp_path / f"out{accurate}"
        assert cut_plan(wd, out, accurate=accurate).ok
        for clip in wd.load_plan().clips:
            info = decode_clip(out / clip.file)
            assert info["rotation"] == 90
            assert info["images"][0].shape == (288, 512)  # coded 512x288; players turn it upright


def test_mkv_and_vfr_sources(media_dir, tmp_path):
    spans = {"sub/nofaces.mkv": [(0.3, 1.5), (2.0, 3.6)], "vfr.mp4": [(1.0, 4.0), (5.0, 7.5), (0.0, 1.0)]}
    wd = new_work(tmp_path / "w", make_plan(media_dir, spans))
    out = tmp_path / "out"
    snaps = []
    result = cut_plan(wd, out, progress=lambda p: snaps.append((p.source, p.clips_done, p.clips)))
    assert result.ok and result.written == 5 and result.opens == 2
    assert snaps[-1] == ("vfr.mp4", 3, 3) and ("sub/nofaces.mkv", 2, 2) in snaps
    assert [s[1] for s in snaps if s[0] == "vfr.mp4"] == sorted(s[1] for s in snaps if s[0] == "vfr.mp4")
    vfr_frame = 2 * FRAME  # make_media's VFR runs go down to half rate
    for clip in wd.load_plan().clips:
        truth = load_truth(media_dir / clip.source)
        assert clip.file.startswith(output_folder(clip.source) + "/")
        check_clip(out, clip, vfr_frame if truth.vfr else FRAME, audio=True, src_end=truth.duration)


def test_vp8_falls_back_to_mkv_and_says_so(extra_media, tmp_path):
    wd = new_work(tmp_path / "w", make_plan(extra_media, {"clip.webm": [(0.2, 1.9)]}))
    out = tmp_path / "out"
    result = cut_plan(wd, out)
    src = result.sources[0]
    assert src.status == "ok" and src.container == "mkv"
    assert any("MKV" in n for n in src.notes)
    clip = wd.load_plan().clips[0]
    assert clip.container == "mkv" and clip.file.endswith(".mkv")
    info = decode_clip(out / clip.file)
    assert len(info["times"]) >= 40 and info["audio"] > 1.5
    assert cut_plan(wd, out).skipped == 1  # MKV clips are recognised on re-run too


def test_avi_mpeg4_with_b_frames_remuxes(extra_media, tmp_path):
    wd = new_work(tmp_path / "w", make_plan(extra_media, {"old.avi": [(0.0, 1.0), (1.0, 2.0)]}))
    out = tmp_path / "out"
    assert cut_plan(wd, out).ok
    for clip in wd.load_plan().clips:
        assert clip.container == "mp4"
        info = check_clip(out, clip, FRAME, audio=False, src_end=2.0)
        assert len(info["times"]) == pytest.approx((clip.cut_end - clip.cut_start) * FPS, abs=1)
        # Frames in display order (the AVI has no pts of its own) and the planned one at the lead-in.
        times, images = source_frames(extra_media / "old.avi")
        t0 = times[0]
        for k in (0, len(info["times"]) // 2, len(info["times"]) - 1):
            s = int(np.argmin([abs(t - t0 - clip.cut_start - info["times"][k]) for t in times]))
            assert np.array_equal(info["images"][k], images[s]), (clip, k)


@pytest.mark.parametrize("accurate", [False, True])
def test_audio_of_a_codec_ffmpeg_does_not_know_is_left_out(extra_media, tmp_path, accurate):
    """An AVI whose audio format tag no decoder knows (PyAV gives the stream no codec
    context): its clips carry the video, the source says what was left out (was:
    AttributeError ending the whole cut)."""
    src = tmp_path / "in"
    src.mkdir()
    data = (extra_media / "old.avi").read_bytes()
    head = data[: 20 + int.from_bytes(data[16:20], "little")]  # RIFF AVI + the 'hdrl' list
    fmt = head.index(b"strf", head.index(b"auds")) + 8  # WAVEFORMATEX.wFormatTag
    (src / "odd.avi").write_bytes(data[:fmt] + b"\x7a\x7a" + data[fmt + 2:])
    with av.open(str(src / "odd.avi")) as c:
        assert [a.codec_context for a in c.streams.audio] == [None]
    wd = new_work(tmp_path / "w", make_plan(src, {"odd.avi": [(0.0, 1.0)]}))
    out = tmp_path / "out"
    result = cut_plan(wd, out, accurate=accurate)
    (sc,) = result.sources
    assert sc.status == "ok" and result.written == 1, sc
    clip = wd.load_plan().clips[0]
    with av.open(str(out / clip.file)) as c:
        assert [s.type for s in c.streams] == ["video"] and c.duration > 0.8e6
    if not accurate:
        assert any("audio stream 1 left out" in n for n in sc.notes), sc.notes


def test_timestamp_jump_is_never_cut_across(extra_media, tmp_path):
    """joined.ts = part.mp4 [0, 4) then [2, 6) with timestamps restarting at 0. The
    analysis timeline keeps going (4..8 s is the second part); a clip over the
    jump ends there, a clip after it comes from the second part."""
    spans = {"joined.ts": [(1.0, 3.0), (3.0, 5.0), (6.0, 7.6)]}
    wd = new_work(tmp_path / "w", make_plan(extra_media, spans))
    out = tmp_path / "out"
    result = cut_plan(wd, out)
    src = result.sources[0]
    assert result.ok and src.written == 3
    assert any("jump" in n for n in src.notes)
    before, across, after = wd.load_plan().clips
    assert across.cut_end == pytest.approx(4.0, abs=FRAME)  # stops at the jump
    assert any("discontinuity" in n and across.id in n for n in src.notes)
    times, images = source_frames(extra_media / "part.mp4")
    for clip, src_t in ((before, 1.0), (after, 6.0 - 4.0 + 2.0)):  # second part starts at 2 s of part.mp4
        check_clip(out, clip, FRAME, audio=True)
        info = decode_clip(out / clip.file)
        k = int(np.argmin([abs(t - clip.lead_in) for t in info["times"]]))
        s = int(np.argmin([abs(t - src_t) for t in times]))
        assert closest(info["images"][k], images[s - 1 : s + 2]) == 1


# --------------------------------------------------------------------------- accurate


def test_accurate_clips_start_and_end_on_the_planned_frames(media_dir, tmp_path):
    # 2.96: last frame of shot 1; 3.0: first of shot 2; 5.01 falls inside the
    # frame shown at 5.0 (first of shot 3), which is the one to start with.
    spans = [(2.96, 4.0), (3.0, 4.0), (5.01, 6.0), (8.2, 9.0)]
    wd = new_work(tmp_path / "w", make_plan(media_dir, {"basic.mp4": spans}))
    out = tmp_path / "out"
    result = cut_plan(wd, out, accurate=True)
    assert result.ok and result.written == 4 and result.opens == 1
    times, images = source_frames(media_dir / "basic.mp4")
    for clip, first in zip(wd.load_plan().clips, (2.96, 3.0, 5.0, 8.2)):
        assert clip.cut_start == pytest.approx(first, abs=1e-3)
        assert clip.lead_in == pytest.approx(clip.start - first, abs=1e-3)
        assert abs(clip.cut_start - clip.start) < FRAME
        assert clip.cut_end == pytest.approx(clip.end, abs=1e-3)
        info = check_clip(out, clip, FRAME, audio=True, bframes=0)
        assert len(info["times"]) == round((clip.cut_end - clip.cut_start) * FPS)
        s = int(np.argmin([abs(t - first) for t in times]))
        assert closest(info["images"][0], images[s - 1 : s + 2]) == 1, clip
        assert closest(info["images"][-1], images[s + len(info["times"]) - 2 : s + len(info["times"]) + 1]) == 1
        tag, _ = read_clip_tag(out / clip.file)
        assert tag["mode"] == "accurate"


def test_accurate_timestamp_jump_is_never_cut_across(extra_media, tmp_path):
    """The accurate path on joined.ts (timestamps restart at 0 after 4 s): the same
    timeline as the analysis and the copy path. A clip over the jump ends there;
    a clip after it shows the second part's frames, every frame re-encoded."""
    spans = {"joined.ts": [(1.0, 3.0), (3.0, 5.0), (6.0, 7.6)]}
    wd = new_work(tmp_path / "w", make_plan(extra_media, spans))
    out = tmp_path / "out"
    result = cut_plan(wd, out, accurate=True)
    src = result.sources[0]
    assert result.ok and src.written == 3, src
    before, across, after = wd.load_plan().clips
    assert across.cut_start == pytest.approx(3.0, abs=FRAME)
    assert across.cut_end == pytest.approx(4.0, abs=FRAME)  # stops at the jump
    assert any("discontinuity" in n and across.id in n for n in src.notes)
    times, images = source_frames(extra_media / "part.mp4")
    for clip, src_t in ((before, 1.0), (after, 6.0 - 4.0 + 2.0)):  # the second part starts at 2 s of part.mp4
        info = check_clip(out, clip, FRAME, audio=True, bframes=0)
        assert len(info["times"]) == round((clip.cut_end - clip.cut_start) * FPS)
        s = int(np.argmin([abs(t - src_t) for t in times]))
        assert closest(info["images"][0], images[s - 1 : s + 2]) == 1, clip
    info = decode_clip(out / across.file)
    assert len(info["times"]) == round((across.cut_end - across.cut_start) * FPS)  # nothing from after the jump


@pytest.mark.parametrize("accurate", [False, True])
def test_spans_past_the_end_of_the_source(media_dir, tmp_path, accurate):
    """A plan made on a longer file than the one cut (or a rounding at the end): a
    span running past the end ends with the source's last frame; one starting
    after the end fails with its reason, and the others are written."""
    truth = load_truth(media_dir / "basic.mp4")
    end = truth.duration
    spans = {"basic.mp4": [(end - 1.0, end + 2.0), (end + 1.0, end + 3.0), (1.0, 2.0)]}
    wd = new_work(tmp_path / "w", make_plan(media_dir, spans))
    out = tmp_path / "out"
    result = cut_plan(wd, out, accurate=accurate)
    sc = result.sources[0]
    assert sc.status == "partial" and sc.written == 2 and sc.failed == 1, sc
    tail, beyond, inside_ = wd.load_plan().clips
    assert beyond.file is None and "starts after the end of the source" in sc.failures[beyond.id]
    assert tail.cut_end == pytest.approx(end, abs=FRAME + 1e-3)
    info = check_clip(out, tail, FRAME, audio=True, bframes=0 if accurate else 2, src_end=end)
    if accurate:
        assert len(info["times"]) == round((tail.cut_end - tail.cut_start) * FPS)
    check_clip(out, inside_, FRAME, audio=True, bframes=0 if accurate else 2)


def test_accurate_vfr(media_dir, tmp_path):
    truth = load_truth(media_dir / "vfr.mp4")
    ft = truth.frame_times
    spans = [(ft[30], ft[60]), (ft[100], ft[140])]
    wd = new_work(tmp_path / "w", make_plan(media_dir, {"vfr.mp4": spans}))
    out = tmp_path / "out"
    assert cut_plan(wd, out, accurate=True).ok
    for clip, (a, b) in zip(wd.load_plan().clips, ((30, 60), (100, 140))):
        assert clip.cut_start == pytest.approx(ft[a], abs=1e-3)
        assert clip.cut_end == pytest.approx(ft[b], abs=1e-3)
        info = check_clip(out, clip, 2 * FRAME, audio=True, bframes=0)
        assert len(info["times"]) == b - a
        assert np.allclose(info["times"], [t - ft[a] for t in ft[a:b]], atol=2e-3)


def test_switching_mode_recuts_and_replaces(media_dir, tmp_path):
    wd = new_work(tmp_path / "w", make_plan(media_dir, {"basic.mp4": [(3.4, 4.0)]}))
    out = tmp_path / "out"
    cut_plan(wd, out)
    assert wd.load_plan().clips[0].lead_in == pytest.approx(0.4)
    acc = cut_plan(wd, out, accurate=True)
    assert acc.written == 1 and acc.skipped == 0
    assert wd.load_plan().clips[0].lead_in == pytest.approx(0.0, abs=1e-3)
    assert cut_plan(wd, out, accurate=True).skipped == 1
    assert len(list((out / BASIC).glob("*.mp4"))) == 1


# --------------------------------------------------------------------------- failures


def test_missing_source_is_reported_and_others_go_on(media_dir, tmp_path):
    plan = make_plan(media_dir, {"gone.mp4": [(0.0, 1.0)], "basic.mp4": [(3.0, 4.0)]})
    wd = new_work(tmp_path / "w", plan)
    result = cut_plan(wd, tmp_path / "out")
    gone, basic = result.sources
    assert gone.status == "failed" and "not found" in gone.reason and gone.opens == 0
    assert basic.status == "ok" and basic.written == 1
    assert not result.ok
    clips = {c.source: c for c in wd.load_plan().clips}
    assert clips["gone.mp4"].file is None and clips["basic.mp4"].file


def test_changed_source_is_refused(media_dir, tmp_path):
    plan = make_plan(media_dir, {"basic.mp4": [(3.0, 4.0)]})
    plan.sources[0].fingerprint = "0-changed"
    wd = new_work(tmp_path / "w", plan)
    result = cut_plan(wd, tmp_path / "out")
    assert result.sources[0].status == "failed" and "changed" in result.sources[0].reason
    assert not list((tmp_path / "out").rglob("*.mp4"))


def test_a_source_replaced_between_analysis_and_cut_is_refused(media_dir, tmp_path, caplog):
    """A real file swapped for another video after `facecut run` analysed it: the
    cut refuses it with the reason (clips of the old content would be wrong) and
    the next run analyses the new content."""
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(media_dir / "basic.mp4", src / "a.mp4")
    args = ["--provider", "cpu", "--decoders", "1", "--infer-procs", "1", "--no-dashboard"]
    work, out = tmp_path / "w", tmp_path / "o"
    res = CliRunner().invoke(main, ["run", str(src), "-o", str(out), "-w", str(work), *args])
    assert res.exit_code == 0, res.output
    sp = read_json(WorkDir(work).plan_json, Plan).sources[0]
    st = (src / "a.mp4").stat()
    assert (sp.size, sp.mtime_ns) == (st.st_size, st.st_mtime_ns)
    for f in out.rglob("*.mp4"):
        f.unlink()
    os.utime(src / "a.mp4", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: the same bytes
    with caplog.at_level("WARNING"):
        result = cut_plan(WorkDir(work), out)
    assert result.ok and result.written == len(list(out.rglob("*.mp4"))) > 0
    assert "a.mp4: modified since it was analysed" in caplog.text
    caplog.clear()

    shutil.copy(media_dir / "vfr.mp4", src / "a.mp4")
    for f in out.rglob("*.mp4"):
        f.unlink()
    result = cut_plan(WorkDir(work), out)
    assert result.sources[0].status == "failed" and "changed" in result.sources[0].reason
    assert not list(out.rglob("*.mp4"))
    with caplog.at_level("WARNING"):
        res = CliRunner().invoke(main, ["run", str(src), "-o", str(out), "-w", str(work), *args])
    assert res.exit_code == 0, res.output
    assert "a.mp4: file changed since it was analysed" in caplog.text
    assert read_json(WorkDir(work).plan_json, Plan).sources[0].fingerprint == fingerprint(src / "a.mp4")


def test_a_really_truncated_source_keeps_the_clips_before_the_damage(tmp_path):
    """A capture cut short (a full disk, a copy aborted): a streamable file truncated
    at 55 %. The clip before the end is written and plays; the one past it fails
    with a reason; nothing half-written remains."""
    src = tmp_path / "in"
    make_video(src / "cap.mkv", [Shot("face", 3.0, "astronaut", face_px=120), Shot("noface", 3.0, "coffee")],
               seed=11)
    data = (src / "cap.mkv").read_bytes()
    (src / "cap.mkv").write_bytes(data[: int(len(data) * 0.55)])
    wd = new_work(tmp_path / "w", make_plan(src, {"cap.mkv": [(0.5, 1.5), (4.5, 5.5)]}))
    out = tmp_path / "out"
    result = cut_plan(wd, out)
    sc = result.sources[0]
    assert sc.status == "partial" and sc.written == 1 and sc.failed == 1, sc
    first, second = wd.load_plan().clips
    assert first.file and second.file is None and sc.failures[second.id]
    with av.open(str(out / first.file)) as c:
        assert sum(1 for _ in c.decode(video=0)) >= 24  # a second of 25 fps, decoded to its end
    assert [p.name for p in out.rglob("*") if p.is_file() and p.suffix == ".mp4"] == [Path(first.file).name]
    assert not [p for p in out.rglob("*.tmp")]


def test_source_failing_mid_read_keeps_finished_clips_only(media_dir, tmp_path, monkeypatch):
    spans = {"basic.mp4": [(0.0, 1.0), (3.0, 4.0), (10.0, 12.0)], "vfr.mp4": [(1.0, 2.0)]}
    wd = new_work(tmp_path / "w", make_plan(media_dir, spans))
    real = cutmod._check_and_open

    class Dying:
        """A container whose reads fail after 5 s of basic.mp4 (a disk going away)."""

        def __init__(self, c):
            self.c = c

        def __getattr__(self, name):
            return getattr(self.c, name)

        def demux(self, *a, **kw):
            for p in self.c.demux(*a, **kw):
                if p.pts is not None and p.time_base and p.pts * p.time_base > 5:
                    raise OSError(5, "Input/output error")
                yield p

    def open_dying(path, sp):
        c = real(path, sp)
        return Dying(c) if path.name == "basic.mp4" else c

    monkeypatch.setattr(cutmod, "_check_and_open", open_dying)
    out = tmp_path / "out"
    result = cut_plan(wd, out)
    basic, vfr = result.sources
    assert basic.status == "partial" and basic.written == 2 and basic.failed == 1
    assert "Input/output error" in basic.reason
    assert vfr.status == "ok" and vfr.written == 1
    clips = wd.load_plan().clips
    assert [c.file is not None for c in clips] == [True, True, False, True]
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    monkeypatch.setattr(cutmod, "_check_and_open", real)
    again = cut_plan(wd, out)  # the disk is back
    assert again.written == 1 and again.skipped == 3


def test_no_plan_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no plan"):
        cut_plan(WorkDir(tmp_path / "w"), tmp_path / "out")


def test_temp_leftovers_of_dead_runs_are_removed(media_dir, tmp_path):
    plan = make_plan(media_dir, {"basic.mp4": [(3.0, 4.0)]})
    wd = new_work(tmp_path / "w", plan)
    out = tmp_path / "out"
    (out / BASIC).mkdir(parents=True)
    dead = out / BASIC / f".{plan.clips[0].id}.mp4.999999999.tmp"
    dead.write_bytes(b"half a clip")
    foreign = out / BASIC / "notes.txt"
    foreign.write_text("mine")
    cut_plan(wd, out)
    assert not dead.exists() and foreign.exists()


# --------------------------------------------------------------------------- killed midway

KILL_SCRIPT = """
import sys, time
from pathlib import Path
from facecut.cut import cut_plan
from facecut.workdir import WorkDir
cut_plan(WorkDir(Path(sys.argv[1])), Path(sys.argv[2]), progress=lambda p: time.sleep(0.1))
"""

KILL_SPANS = [(a / 10, a / 10 + 1.5) for a in range(0, 115, 9)]  # 13 overlapping clips


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_killed_cut_resumes_to_complete_clips(media_dir, tmp_path):
    wd = new_work(tmp_path / "w", make_plan(media_dir, {"basic.mp4": KILL_SPANS}))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(wd.root), str(out)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while len(list((out / BASIC).glob("*.mp4"))) < 4:
        assert proc.poll() is None, proc.communicate()
        if time.time() > deadline:  # a hang guard, not a speed check
            pytest.fail("the cut never wrote a clip")
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    finished = sorted(p.name for p in (out / BASIC).glob("*.mp4"))
    assert 4 <= len(finished) < len(KILL_SPANS)
    for p in finished:  # whatever has a final name is complete
        assert read_clip_tag(out / BASIC / p)[0] is not None

    result = cut_plan(wd, out)
    assert result.ok and result.opens == 1
    assert result.skipped == len(finished)  # adopted, not cut again
    assert result.written == len(KILL_SPANS) - len(finished)
    plan = wd.load_plan()
    names = sorted(p.name for p in (out / BASIC).iterdir())
    assert names == sorted(f"{c.id}.mp4" for c in plan.clips)  # every clip once, no temp files
    truth = load_truth(media_dir / "basic.mp4")
    for clip in plan.clips:
        check_clip(out, clip, FRAME, audio=True, src_end=truth.duration)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_cut_killed_inside_a_clip_write_ends_as_an_uninterrupted_cut(media_dir, tmp_path):
    """SIGKILL while a clip is half-written under its temp name (no progress call
    to wait in): the half clip never gets a final name, and the resumed cut
    equals a cut that was never interrupted, clip for clip and byte for byte."""
    # 26 overlapping clips: several are open at every moment of the pass, so one is
    # caught with bytes under its temp name on any machine.
    spans = {"basic.mp4": KILL_SPANS + [(a + 0.3, b + 0.3) for a, b in KILL_SPANS]}
    ref_wd, ref_out = new_work(tmp_path / "rw", make_plan(media_dir, spans)), tmp_path / "ref"
    assert cut_plan(ref_wd, ref_out).ok

    wd, out = new_work(tmp_path / "w", make_plan(media_dir, spans)), tmp_path / "out"
    script = KILL_SCRIPT.replace("progress=lambda p: time.sleep(0.1)", "")
    proc = subprocess.Popen([sys.executable, "-c", script, str(wd.root), str(out)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    half = []
    while not half:
        half = [p for p in out.rglob("*.tmp") if p.is_file() and p.stat().st_size > 0]
        if proc.poll() is not None or time.time() > deadline:  # a hang guard, not a speed check
            pytest.fail("no clip was caught half-written")
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    caught = half[0].name.split(".")[1]  # .<clip id>.mp4.<pid>.tmp
    assert not (out / BASIC / f"{caught}.mp4").exists()  # the half clip has no final name

    assert cut_plan(wd, out).ok
    ref, got = ref_wd.load_plan(), wd.load_plan()
    assert [c.file for c in got.clips] == [c.file for c in ref.clips]
    assert sorted(p.name for p in (out / BASIC).iterdir()) == sorted(p.name for p in (ref_out / BASIC).iterdir())
    for clip in ref.clips:
        assert (out / clip.file).read_bytes() == (ref_out / clip.file).read_bytes(), clip.id


def tone_hz(samples: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spec))])


@pytest.mark.parametrize("accurate", [False, True])
def test_audio_stays_in_sync(media_dir, tmp_path, accurate):
    """make_media's tone changes pitch at each shot cut (220 Hz, then 275 Hz at 3 s):
    the change must sit at the same clip time as the picture's cut."""
    wd = new_work(tmp_path / "w", make_plan(media_dir, {"basic.mp4": [(2.2, 4.4)]}))
    out = tmp_path / "out"
    assert cut_plan(wd, out, accurate=accurate).ok
    clip = wd.load_plan().clips[0]
    cut_at = 3.0 - clip.cut_start  # the shot cut, in clip time
    with av.open(str(out / clip.file)) as c:
        rate = c.streams.audio[0].sample_rate
        first = None
        chunks = []
        for f in c.decode(audio=0):
            first = f.time if first is None else first
            chunks.append(f.to_ndarray()[0])
    wave = np.concatenate(chunks)
    assert first == pytest.approx(0.0, abs=0.03)

    def at(t0, t1):
        return tone_hz(wave[int((t0 - first) * rate) : int((t1 - first) * rate)], rate)

    assert at(cut_at - 0.55, cut_at - 0.05) == pytest.approx(220, abs=3)
    assert at(cut_at + 0.05, cut_at + 0.55) == pytest.approx(275, abs=3)
    # The switch itself, to within 10 ms (0.1 s windows: 10 Hz bins, tones 55 Hz apart).
    assert at(cut_at - 0.11, cut_at - 0.01) == pytest.approx(220, abs=10)
    assert at(cut_at + 0.01, cut_at + 0.11) == pytest.approx(275, abs=10)


def test_the_same_span_twice_makes_one_file(media_dir, tmp_path):
    wd = new_work(tmp_path / "w", make_plan(media_dir, {"basic.mp4": [(3.0, 4.0), (3.0, 4.0)]}))
    out = tmp_path / "out"
    result = cut_plan(wd, out)
    assert result.ok and result.written == 1 and result.skipped == 1
    a, b = wd.load_plan().clips
    assert a.file == b.file and a.cut_end == b.cut_end
    assert len(list((out / BASIC).iterdir())) == 1


@pytest.mark.parametrize("accurate", [False, True])
def test_source_without_audio(extra_media, tmp_path, accurate):
    wd = new_work(tmp_path / "w", make_plan(extra_media, {"silent.mp4": [(0.2, 1.0), (1.0, 1.6), (1.5, 9.0)]}))
    out = tmp_path / "out"
    result = cut_plan(wd, out, accurate=accurate)
    assert result.ok and result.written == 3
    for clip in wd.load_plan().clips:
        check_clip(out, clip, FRAME, audio=False, bframes=0 if accurate else 2, src_end=2.0)
        with av.open(str(out / clip.file)) as c:
            assert not c.streams.audio
    assert wd.load_plan().clips[2].cut_end == pytest.approx(2.0, abs=1e-3)  # the end of the source


def test_a_span_of_one_frame_is_cut_and_the_others_too(media_dir, tmp_path):
    """A span shorter than a frame, starting on a keyframe: a clip of one picture
    (its duration up to the span's end), and it does not stop the other clips."""
    wd = new_work(tmp_path / "work", make_plan(media_dir, {"basic.mp4": [(0.0, 0.02), (1.0, 2.0)]}))
    result = cut_plan(wd, tmp_path / "out")
    assert result.ok and result.written == 2, result.sources
    clips = {c.start: c for c in load_plan(wd).clips}
    one = decode_clip(tmp_path / "out" / clips[0.0].file)
    assert len(one["times"]) == 1
    assert len(decode_clip(tmp_path / "out" / clips[1.0].file)["times"]) > 1
