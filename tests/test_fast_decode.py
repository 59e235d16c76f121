"""--fast-decode: each level really changes what FFmpeg does, on a real H.264 file
with B-frames; the default, ref-frames, samples and cuts exactly what a full
decode does, shots starting on skipped B-frames included; a work folder never
mixes levels that see other pixels. (Its speed is measured in bench:
``facecut bench --stages decode-options``.)"""

from __future__ import annotations

import hashlib
import os

import av
import numpy as np
import pytest

from facecut.config import FAST_DECODE, AnalyzeConfig
from facecut.coordinator import analyze
from facecut.decode import apply_fast_decode
from facecut.errors import ConfigError
from facecut.workdir import WorkDir


PICT = {1: "I", 2: "P", 3: "B"}  # AVPictureType


def decoded(path, level: str) -> list[tuple[int, str, np.ndarray]]:
    """(pts, picture type, Y plane) of every frame decoded at ``level``."""
    out = []
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        apply_fast_decode(s.codec_context, level)
        for f in c.decode(s):
            out.append((f.pts, PICT.get(int(f.pict_type), "?"), f.to_ndarray(format="gray").copy()))
    return out


@pytest.fixture(scope="module")
def frames(media_dir) -> dict[str, list]:
    return {level: decoded(media_dir / "basic.mp4", level) for level in FAST_DECODE}


def test_the_file_has_b_frames(frames):
    types = {t for _, t, _ in frames["off"]}
    assert {"I", "P", "B"} <= types


def test_deblock_noref_changes_only_frames_nothing_references(frames):
    off = {pts: (t, y) for pts, t, y in frames["off"]}
    got = {pts: (t, y) for pts, t, y in frames["deblock-noref"]}
    assert got.keys() == off.keys()
    changed = {pts for pts in off if not np.array_equal(off[pts][1], got[pts][1])}
    assert changed, "skipping deblocking changed no picture: the option did not reach the decoder"
    assert all(off[pts][0] == "B" for pts in changed)  # I and P frames are references: untouched


def test_deblock_all_changes_reference_frames_too(frames):
    off = {pts: (t, y) for pts, t, y in frames["off"]}
    got = {pts: y for pts, _, y in frames["deblock-all"]}
    changed_types = {off[pts][0] for pts in off if not np.array_equal(off[pts][1], got[pts])}
    assert "P" in changed_types


def test_ref_frames_skips_pictures_and_keeps_the_others_exact(frames):
    off = {pts: y for pts, _, y in frames["off"]}
    got = frames["ref-frames"]
    assert 0 < len(got) < len(off)
    assert all(np.array_equal(y, off[pts]) for pts, _, y in got)  # the decoded ones are exact


def test_unknown_level_is_refused():
    cc = av.CodecContext.create("h264", "r")
    with pytest.raises(ValueError, match="unknown fast-decode level"):
        apply_fast_decode(cc, "turbo")


def test_a_work_folder_never_mixes_levels(media_dir, tmp_path):
    """Logs made with one level are not resumed or extended with another: the
    analysis saw other pixels. ``off`` adds nothing to the logged parameters, so
    work folders from before the option still match."""
    from facecut.scan import scan

    cfg = dict(provider="cpu", decoders=1, infer_procs=1, batch=4, min_face=60.0)
    off = AnalyzeConfig(**cfg)
    assert "fast_decode" not in off.model_params() and "fast_decode" not in off.detector_params()
    wd = WorkDir(tmp_path / "w")
    one = tmp_path / "in"
    one.mkdir()
    (one / "basic.mp4").write_bytes((media_dir / "basic.mp4").read_bytes())
    wd.save_scan(scan(one))
    assert analyze(wd, AnalyzeConfig(**cfg, fast_decode="deblock-noref")).exit_code == 0
    with pytest.raises(ConfigError, match="fast_decode"):
        analyze(wd, off)


def test_a_profile_level_is_used_but_yields_to_the_work_folders_logs(media_dir, tmp_path, monkeypatch, caplog):
    """`bench --sweep --save-profile` may keep a level: `analyze` then uses it for
    a new work folder, while a work folder analysed before with another level is
    resumed with its own (the profile must not stop a resume). Given on the
    command line, the level is the user's: a mix is refused as before."""
    import json

    from click.testing import CliRunner

    from facecut.cli import main
    from facecut.logio import read_first
    from facecut.profile import profile_path, save_profile
    from facecut.records import LogRecord

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    assert str(profile_path("cpu")).startswith(str(tmp_path / "config"))
    src = tmp_path / "in"
    src.mkdir()
    (src / "basic.mp4").write_bytes((media_dir / "basic.mp4").read_bytes())
    args = ["--provider", "cpu", "--decoders", "1", "--infer-procs", "1", "--min-face", "60", "--no-dashboard"]

    def level(work):
        (log,) = WorkDir(work).analysis_dir.glob("*.fclog")
        return json.loads(read_first(log, LogRecord).model_params).get("fast_decode", "off")

    old = tmp_path / "old"
    assert CliRunner().invoke(main, ["scan", str(src), "-w", str(old)]).exit_code == 0
    assert CliRunner().invoke(main, ["analyze", "-w", str(old), *args]).exit_code == 0
    save_profile("cpu", {"fast_decode": "deblock-noref"}, {})
    new = tmp_path / "new"
    assert CliRunner().invoke(main, ["scan", str(src), "-w", str(new)]).exit_code == 0
    res = CliRunner().invoke(main, ["analyze", "-w", str(new), *args])
    assert res.exit_code == 0, res.output
    assert level(new) == "deblock-noref" and level(old) == "off"  # the default's results are a full decode's
    with caplog.at_level("INFO"):
        res = CliRunner().invoke(main, ["analyze", "-w", str(old), *args])
    assert res.exit_code == 0, res.output
    assert "--fast-decode off, as the logs in" in caplog.text
    res = CliRunner().invoke(main, ["analyze", "-w", str(old), *args, "--fast-decode", "deblock-noref"])
    assert res.exit_code == 2 and "fast_decode" in res.output
    # ref-frames and off give the same samples and cuts: a folder made with one goes on with the other.
    res = CliRunner().invoke(main, ["analyze", "-w", str(old), *args, "--fast-decode", "off"])
    assert res.exit_code == 0, res.output


# --------------------------------------------------------------------------- --hwaccel


def _working_devices() -> list[str]:
    from facecut.media import hwaccel_check, hwaccel_devices

    return [d for d in hwaccel_devices() if hwaccel_check(d) is None]


def test_a_device_that_cannot_open_falls_back_to_software_with_the_same_logs(media_dir, tmp_path, caplog):
    from facecut.media import hwaccel_check, hwaccel_devices
    from facecut.scan import scan

    broken = [d for d in hwaccel_devices() if hwaccel_check(d) is not None]
    if not broken:
        pytest.skip("every hardware decoder of this FFmpeg build works here")
    src = tmp_path / "in"
    src.mkdir()
    (src / "basic.mp4").write_bytes((media_dir / "basic.mp4").read_bytes())
    cfg = dict(provider="cpu", decoders=1, infer_procs=1, batch=4, min_face=60.0)
    logs = {}
    for hw in ("none", broken[0]):
        wd = WorkDir(tmp_path / hw)
        wd.save_scan(scan(src))
        with caplog.at_level("WARNING"):
            assert analyze(wd, AnalyzeConfig(**cfg, hwaccel=hw)).exit_code == 0
        logs[hw] = [p.read_bytes() for p in sorted(wd.analysis_dir.glob("*.fclog"))]
    assert logs["none"] == logs[broken[0]]


def test_a_device_type_the_build_lacks_is_a_clear_error():
    from facecut.config import HWACCELS
    from facecut.media import hwaccel_devices, hwaccel_for

    missing = [h for h in HWACCELS if h not in ("none", "auto") and h not in hwaccel_devices()]
    if not missing:
        pytest.skip("this FFmpeg build has every device type")
    with pytest.raises(ConfigError, match=f"--hwaccel {missing[0]}: this FFmpeg build has no"):
        hwaccel_for(missing[0])
    assert hwaccel_for("none") == (None, "")


@pytest.mark.skipif(not _working_devices(), reason="no hardware video decoder works on this machine")
def test_hardware_decode_gives_every_frame(media_dir):
    from facecut.media import open_decoding

    device = _working_devices()[0]
    container, how, _ = open_decoding(media_dir / "basic.mp4", device)
    with container:
        frames = sum(1 for _ in container.decode(video=0))
        assert how == device and container.streams.video[0].codec_context.is_hwaccel
    assert frames == len(decoded(media_dir / "basic.mp4", "off"))


# ------------------------------------------------------------ ref-frames is exact


class _Collect:
    """A decode pass's samples (grid index, pts, time, hash of the picture) and cuts."""

    def __init__(self) -> None:
        self.samples: list = []
        self.cuts: list[float] = []
        self.marks: list[tuple[int, float]] = []

    def start(self, t0) -> None:
        pass

    def sample(self, k, frame, pts, t, cuts) -> None:
        pixels = frame.to_ndarray(format="gray").tobytes()
        self.samples.append((k, pts, round(t, 6), hashlib.sha1(pixels).hexdigest()))
        self.cuts += [round(c[1], 6) for c in cuts]
        self.marks += [(c[0], round(c[1], 6)) for c in cuts]  # (pts, time)

    def progress(self, frames, samples, position) -> None:
        pass


def decode_pass(path, level: str) -> tuple[_Collect, int]:
    """The decoder's real pass over ``path`` at ``level``: what it sampled and cut, and frames decoded."""
    from facecut.decode import decode_video
    from facecut.protocol import DecodeJob

    job = DecodeJob(job_id=0, path=os.fsencode(path), rel=path.name, stream_index=0, fps=2.0, max_side=1280,
                    detector="adaptive", threads=1, fast=level)
    got = _Collect()
    r = decode_video(job, got)
    got.cuts += [round(c[1], 6) for c in r.cuts]
    return got, r.frames


@pytest.fixture(scope="module")
def fixed_gop(tmp_path_factory) -> list:
    """Broadcast-style files: fixed GOP, no keyframe at scene changes, shots that
    start between sampling times (2.92 s, 4.96 s at 25 fps): on B-frames."""
    from facecut.tools.make_media import _matrix_shots, make_format_video

    d = tmp_path_factory.mktemp("fixed_gop")
    shots = _matrix_shots(5, (2.92, 2.04, 2.0))
    make_format_video(d / "fixed_gop.ts", shots, klass="fixed_gop", codec="mpeg2video", gop=12, bframes=2,
                      quality=8, acodec=None, fixed_gop=True)
    make_format_video(d / "fixed_gop.mp4", shots, klass="fixed_gop", acodec=None, fixed_gop=True)
    return [d / "fixed_gop.ts", d / "fixed_gop.mp4"]


def test_ref_frames_samples_and_cuts_what_a_full_decode_does(media_dir, fixed_gop):
    """Every sample is the same picture at the same time, every cut on the same
    frame, with fewer pictures decoded: on H.264 with B-frames, VFR, rotation and
    on fixed-GOP MPEG-2 and H.264 whose shots start on skipped B-frames."""
    for path in [media_dir / "basic.mp4", media_dir / "vfr.mp4", media_dir / "rotated.mp4", *fixed_gop]:
        off, n_off = decode_pass(path, "off")
        ref, n_ref = decode_pass(path, "ref-frames")
        assert off.samples and ref.samples == off.samples, path.name
        assert off.cuts and ref.cuts == off.cuts, path.name
        assert n_ref < n_off, path.name


def test_short_shots_keep_their_cuts_when_pictures_are_skipped(tmp_path):
    """--min-scene-len counts frames of the stream, not decoded pictures: shots of
    20 and 22 frames (more than the 15 asked) keep both their cuts with ref-frames
    (were lost: a third of the pictures skipped made them look shorter than 15)."""
    from facecut.tools.make_media import Shot, load_truth, make_video

    path = tmp_path / "short_shots.mp4"
    make_video(path, [Shot("face", 3.0, "astronaut", face_px=120), Shot("noface", 0.8, "coffee"),
                      Shot("face", 3.0, "hanks", face_px=120, background="rocket"), Shot("noface", 0.88, "chelsea"),
                      Shot("face", 3.0, "t1_mid", face_px=120)], audio=False, seed=12)
    off, n_off = decode_pass(path, "off")
    ref, n_ref = decode_pass(path, "ref-frames")
    starts = [round(s.start, 6) for s in load_truth(path).shots[1:]]
    assert sorted(off.cuts) == starts  # the full decode finds every shot
    assert sorted(ref.cuts) == starts and ref.samples == off.samples and n_ref < n_off


def test_a_shot_starting_on_a_skipped_picture_is_cut_on_its_own_frame(fixed_gop):
    """The refinement is what makes it exact: shots of these files start on
    B-frames (a decoder of reference pictures only sees them a frame or two late),
    and the cuts are on the truth's frames."""
    from facecut.tools.make_media import load_truth

    for path in fixed_gop:
        truth = load_truth(path)
        starts = [s.start for s in truth.shots[1:]]
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            types = {round(float(f.time) - float(s.start_time * s.time_base), 4): PICT.get(int(f.pict_type))
                     for f in c.decode(s)}
        assert any(types[round(t, 4)] == "B" for t in starts), (path.name, types)
        ref, _ = decode_pass(path, "ref-frames")
        assert len(ref.cuts) == len(starts)
        assert all(abs(c - t) < 0.5 / truth.fps for c, t in zip(sorted(ref.cuts), starts)), (ref.cuts, starts)


def test_a_file_with_tags_that_are_not_utf8_is_refined_too(fixed_gop, tmp_path):
    """The refinement opens the file as the decoder does: an MKV whose title is
    Latin-1 (not UTF-8) gets its cuts on their own frames (PyAV's default open
    raised UnicodeDecodeError there and the cuts stayed a picture or two late)."""
    src = fixed_gop[1]
    path = tmp_path / "latin1_title.mkv"
    with av.open(str(src)) as i, av.open(str(path), "w", format="matroska") as o:
        o.metadata["title"] = "Zürich"
        m = {s.index: o.add_stream_from_template(s) for s in i.streams}
        for pkt in i.demux():
            if pkt.dts is not None:
                pkt.stream = m[pkt.stream.index]
                o.mux(pkt)
    data = path.read_bytes()
    assert data.count("Zürich".encode()) == 1
    path.write_bytes(data.replace("Zürich".encode(), b"Z\xfc rich"))  # Latin-1, same length
    with pytest.raises(UnicodeDecodeError):
        av.open(str(path)).close()
    off, _ = decode_pass(path, "off")
    ref, _ = decode_pass(path, "ref-frames")
    assert off.cuts and ref.cuts == off.cuts


def test_a_stream_that_cannot_seek_resumes_from_its_start(tmp_path):
    """A raw H.264 stream (no timestamps: the decoder makes them up, so the log
    looks seekable) cannot seek: the resume decodes from the start and gives the
    samples and cuts the uninterrupted pass gave after the log's last ones (was:
    PermissionError out of the decoder, the video failed on every resume)."""
    import msgspec

    from facecut.decode import decode_video
    from facecut.protocol import DecodeJob
    from facecut.tools.make_media import Shot, make_video

    make_video(tmp_path / "src.mp4", [Shot("face", 3.0, "astronaut", face_px=120), Shot("noface", 2.0, "coffee"),
                                      Shot("face", 3.0, "hanks", face_px=120, background="rocket")],
               audio=False, seed=3)
    raw = tmp_path / "raw.h264"
    with av.open(str(tmp_path / "src.mp4")) as i, av.open(str(raw), "w", format="h264") as o:
        out = o.add_stream_from_template(i.streams.video[0])
        for pkt in i.demux(i.streams.video[0]):
            if pkt.dts is not None:
                pkt.stream = out
                o.mux(pkt)
    job = DecodeJob(job_id=0, path=os.fsencode(raw), rel=raw.name, stream_index=0, fps=2.0, max_side=1280,
                    detector="adaptive", threads=1)
    full = _Collect()
    decode_video(job, full)
    cut_pts, cut_t = next((p, t) for k, p, t, _ in full.samples if t == full.cuts[0])  # the first cut's sample
    done = [x for x in full.samples if x[2] < cut_t]  # what a killed run had logged
    again = _Collect()
    r = decode_video(msgspec.structs.replace(job, start_k=done[-1][0] + 1, t0=0.0, resume_cut_pts=cut_pts,
                                             resume_cut_time=cut_t, last_sample_pts=done[-1][1]), again)
    assert r.status == "ok", r.reason
    assert again.samples == full.samples[len(done):] and again.samples
    assert again.cuts == [c for c in full.cuts if c > cut_t] and again.cuts


@pytest.mark.parametrize("level", ["off", "ref-frames"])
def test_a_resume_at_each_cut_gives_what_the_uninterrupted_pass_gave(fixed_gop, level):
    """MPEG-TS seeks land on the keyframe *after* a timestamp: the resume checks
    where it landed and aims earlier, so no sample after the log's last cut is lost
    (was: the samples up to the next keyframe, and a cut there, were never decoded)."""
    import msgspec

    from facecut.decode import decode_video
    from facecut.protocol import DecodeJob

    for path in fixed_gop:
        job = DecodeJob(job_id=0, path=os.fsencode(path), rel=path.name, stream_index=0, fps=2.0, max_side=1280,
                        detector="adaptive", threads=1, fast=level)
        full = _Collect()
        t0 = decode_video(job, full).t0
        cuts = full.marks
        assert len(cuts) == 2, path.name
        for cut_pts, cut_t in cuts:  # a killed run had logged everything before this cut
            done = [x for x in full.samples if x[2] < cut_t]
            again = _Collect()
            r = decode_video(msgspec.structs.replace(job, start_k=done[-1][0] + 1, t0=t0, resume_cut_pts=cut_pts,
                                                     resume_cut_time=cut_t, last_sample_pts=done[-1][1]), again)
            assert r.status == "ok"
            assert again.samples == full.samples[len(done):], (path.name, cut_t)
            assert again.cuts == [c for c in full.cuts if c > cut_t], (path.name, cut_t)


def test_logs_of_the_earlier_ref_frames_are_resumed_and_other_levels_refused(media_dir, tmp_path):
    """Logs written by ref-frames before it became exact name the level in their
    parameters; they go on with the exact levels (their samples lie within two
    frames of these) instead of stopping the user's resume. Levels that change
    pixels are still refused."""
    import json

    import msgspec

    from facecut.errors import ConfigError
    from facecut.resume import check_params
    from facecut.scan import scan
    from facecut.videolog import log_header

    info = scan(media_dir).videos[0]
    wd = WorkDir(tmp_path / "w")
    for level in ("ref-frames", "off"):
        cfg = AnalyzeConfig(provider="cpu", fast_decode=level)
        h = log_header(cfg, info, 0.0)

        def naming(lv, h=h):
            return msgspec.structs.replace(h, **{
                k: json.dumps({**json.loads(getattr(h, k)), "fast_decode": lv}, sort_keys=True)
                for k in ("model_params", "detector_params")})

        check_params(wd, cfg, info, h)
        check_params(wd, cfg, info, naming("ref-frames"))
        with pytest.raises(ConfigError, match="fast_decode"):
            check_params(wd, cfg, info, naming("deblock-noref"))


def test_skipping_is_decided_from_packet_times_and_stops_when_pictures_are_retimed():
    """RefFramesOnly on real packets and a real H.264 decoder context: an
    unreferenced picture is skippable only when no sampling time falls between
    its time and a later picture already sent; a picture whose pts is no
    packet's turns skipping off for the rest of the stream."""
    from fractions import Fraction

    from facecut.refframes import RefFramesOnly

    cc = av.CodecContext.create("h264", "r")
    tb = Fraction(1, 30)  # one tick per frame at 30 fps
    rf = RefFramesOnly(cc, tb, fps=2.0, jump=30)

    def send(pts: int) -> str:
        p = av.Packet(b"")
        p.pts = pts
        rf.before(p)
        return cc.skip_frame

    assert send(0) == "DEFAULT"  # nothing settled yet
    rf.decoded(0)
    rf.settled(0, 0.0)
    assert send(3) == "DEFAULT"  # the latest picture sent: nothing later bounds it
    assert send(1) == "NONREF" and send(2) == "NONREF"  # shown 1/30..3/30 s: no sampling time (0, 0.5 s)
    assert send(15) == "DEFAULT"
    assert send(13) == "NONREF" and send(14) == "NONREF"  # at 0.5 s picture 15 is shown, not 14
    assert send(33) == "DEFAULT"
    assert send(29) == "DEFAULT"  # shown from 29/30 s, past 1.0 s: the sample at 1.0 s needs it
    assert send(31) == "NONREF"
    assert rf.gap(0, 3) and rf.gap(15, 33) and not rf.gap(3, 13)
    rf.decoded(7)  # a picture no packet carried: its times cannot be trusted
    assert send(36) == "DEFAULT" and send(34) == "DEFAULT"
