"""The analysis engine end to end on generated media with truth: real decode,
real ring, real MTCNN, real logs; then resume, kills and supervision."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from facecut.config import AnalyzeConfig
from facecut.coordinator import analyze
from facecut.videolog import read_log_state
from facecut.fsio import fingerprint, video_key
from facecut.workdir import WorkDir
from facecut.logio import iter_frames, read_records
from facecut.records import Cut, Done, LogHeader, LogRecord, Sample
from facecut.scan import scan
from facecut.tools.make_media import Shot, load_truth, make_video

CFG = dict(provider="cpu", decoders=1, infer_procs=1, batch=4, min_face=60.0)
LINUX = sys.platform.startswith("linux")


def run_analysis(media: Path, work: Path, **kw) -> object:
    wd = WorkDir(work)
    wd.save_scan(scan(media))
    return analyze(wd, AnalyzeConfig(**{**CFG, **kw}))


def records(work: Path, rel: str):
    return read_records(WorkDir(work).log_path(video_key(rel)), LogRecord)


def log_bytes(work: Path) -> dict[str, bytes]:
    d = WorkDir(work).analysis_dir
    return {p.name: p.read_bytes() for p in sorted(d.glob("*.fclog"))}


def _frames_bytes(path: Path) -> list[bytes]:
    """The log's magic and every intact frame, as bytes on disk (a torn tail left out)."""
    from facecut.logio import MAGIC, LogView

    view = LogView.read(path)
    data = view.data
    out = [bytes(data[: len(MAGIC)])]
    for pos, payload in view:
        out.append(bytes(data[pos : pos + 8 + len(payload)]))
    return out


def shm_segments() -> list[str]:
    """facecut ring segments whose creating process is gone (left over). Segments
    of live processes belong to runs going on right now and do not count."""
    from facecut.procs import pid_alive
    from facecut.ring import segment_pid

    if not LINUX:
        return []
    return sorted(p.name for p in Path("/dev/shm").glob("facecut_*")
                  if (pid := segment_pid(p.name)) is not None and not pid_alive(pid))


@pytest.fixture(scope="session")
def analyzed(media_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("work")
    result = run_analysis(media_dir, work)
    return work, result


def test_every_video_finishes_ok(analyzed):
    work, result = analyzed
    assert result.exit_code == 0
    assert {v.info.path: v.status for v in result.videos} == {
        "basic.mp4": "ok", "rotated.mp4": "ok", "vfr.mp4": "ok", "sub/nofaces.mkv": "ok",
    }
    for v in result.videos:
        recs = records(work, v.info.path)
        assert isinstance(recs[0], LogHeader) and isinstance(recs[-1], Done)
        assert recs[-1].samples == sum(isinstance(r, Sample) for r in recs)
        assert (WorkDir(work).done_path(v.key)).exists()


def test_samples_follow_the_requested_grid(analyzed, media_dir):
    work, _ = analyzed
    for rel in ["basic.mp4", "vfr.mp4", "rotated.mp4"]:
        truth = load_truth(media_dir / rel)
        times = truth.frame_times or [i / truth.fps for i in range(truth.frames)]
        samples = [r for r in records(work, rel) if isinstance(r, Sample)]
        assert [s.k for s in samples] == list(range(len(samples)))
        assert len(samples) == int(truth.duration * 2 - 1e-9) + 1
        for s in samples:
            target = s.k / 2.0
            # the frame displayed at the grid time: the last frame starting at or before it
            shown = max(t for t in times if t <= target + 1e-6)
            assert s.time == pytest.approx(shown, abs=1e-4), (rel, s.k)


def test_faces_found_in_face_shots_only(analyzed, media_dir):
    work, _ = analyzed
    for rel in ["basic.mp4", "vfr.mp4", "rotated.mp4", "sub/nofaces.mkv"]:
        truth = load_truth(media_dir / rel)
        for s in (r for r in records(work, rel) if isinstance(r, Sample)):
            shot = next(sh for sh in truth.shots if sh.start <= s.time < sh.end)
            if shot.kind in ("face", "small") or (shot.kind == "enter" and s.time >= shot.face_from + 0.3):
                assert len(s.faces) == 1, (rel, s.time, shot.kind)
                assert s.faces[0].short == pytest.approx(shot.face_short, rel=0.35)
            elif shot.kind == "noface" or (shot.kind == "enter" and s.time < shot.face_from - 0.6):
                # (an entering face slides in over 0.6 s and may be found while partly in)
                assert s.faces == (), (rel, s.time, shot.kind)


def test_boxes_are_in_displayed_source_pixels(analyzed, media_dir):
    work, _ = analyzed
    truth = load_truth(media_dir / "rotated.mp4")
    for s in (r for r in records(work, "rotated.mp4") if isinstance(r, Sample)):
        for f in s.faces:
            x1, y1, x2, y2 = f.box
            assert -5 <= x1 < x2 <= truth.width + 5 and -5 <= y1 < y2 <= truth.height + 5
            assert y2 - y1 > 0.8 * (x2 - x1)  # upright face: taller than wide, not lying on its side


def test_shot_cuts_match_truth_within_one_frame(analyzed, media_dir):
    work, _ = analyzed
    for rel in ["basic.mp4", "vfr.mp4", "rotated.mp4", "sub/nofaces.mkv"]:
        truth = load_truth(media_dir / rel)
        cuts = [r.time for r in records(work, rel) if isinstance(r, Cut)]
        assert len(cuts) == len(truth.cut_times), rel
        for got, want in zip(cuts, truth.cut_times):
            assert abs(got - want) <= 1.0 / truth.fps + 1e-6, (rel, got, want)
        shots = json.loads((WorkDir(work).analysis_dir / f"{video_key(rel)}.shots.json").read_text())
        assert len(shots) == len(truth.shots)


@pytest.mark.parametrize("kind", ["adaptive", "content"])
def test_fast_frame_score_is_pyscenedetects_bit_for_bit(media_dir, kind):
    """The decoder's detector computes ContentDetector's score its own (faster)
    way; every frame's score and every cut must be the stock detector's."""
    import av
    from scenedetect import FrameTimecode

    from facecut.shotdetect import ShotFrames, make_detector

    for rel in ["basic.mp4", "vfr.mp4"]:
        fast = make_detector(kind, None, 15)
        stock = make_detector(kind, None, 15, stock=True)
        assert type(fast) is not type(stock)
        shot_frame = ShotFrames(256)
        cuts = {"fast": [], "stock": []}
        with av.open(str(media_dir / rel)) as c:
            for i, frame in enumerate(c.decode(video=0)):
                small = shot_frame(frame)
                tc = FrameTimecode(i, fps=30.0)
                cuts["fast"] += fast.process_frame(tc, small)
                cuts["stock"] += stock.process_frame(tc, small)
                assert fast._frame_score == stock._frame_score, (rel, i)
        end = FrameTimecode(i + 1, fps=30.0)
        cuts["fast"] += fast.post_process(end)
        cuts["stock"] += stock.post_process(end)
        assert [t.frame_num for t in cuts["fast"]] == [t.frame_num for t in cuts["stock"]]
        assert len(cuts["stock"]) == len(load_truth(media_dir / rel).cut_times), rel


def test_shot_frames_sample_planes_like_swscale(media_dir):
    """The 4:2:0 fast path (planes sampled in place) and the swscale path for other
    formats give the same picture, up to rounding and the chroma sampling."""
    import av
    import numpy as np

    from facecut.shotdetect import ShotFrames

    with av.open(str(media_dir / "basic.mp4")) as c:
        frames = [f for i, f in enumerate(c.decode(video=0)) if i % 20 == 0][:6]
    fast = ShotFrames(256)
    other = ShotFrames(256)
    for f in frames:
        assert f.format.name == "yuv420p"
        a = fast(f)
        b = other(f.reformat(format="yuv444p"))  # not 4:2:0: swscale path
        assert a.shape == b.shape == (144, 256, 3) and a.dtype == np.uint8
        assert a.std() > 10  # a real picture, not a blank buffer
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 4.0
    shifted = fast(frames[-1])  # the reused buffer holds the newest frame only
    assert not np.array_equal(shifted, fast(frames[0]))


def test_shot_frames_of_nv12_equal_those_of_yuv420p(media_dir):
    """NV12 (what hardware decoders hand back): the same pixels interleaved, so the
    shot detector sees exactly the same small frames, through the planes path."""
    import av
    import numpy as np

    from facecut.shotdetect import ShotFrames

    planar, semi = ShotFrames(256), ShotFrames(256)
    with av.open(str(media_dir / "rotated.mp4")) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i % 7 == 0:
                assert np.array_equal(planar(f), semi(f.reformat(format="nv12")))
    assert semi.planes_ok  # never fell back to swscale


def test_thumbnails_from_analysed_frames(analyzed):
    work, _ = analyzed
    thumbs = list((WorkDir(work).thumbs_dir / video_key("basic.mp4")).glob("*.jpg"))
    assert thumbs, "frames with faces get thumbnails"
    assert not (WorkDir(work).thumbs_dir / video_key("sub/nofaces.mkv")).exists()


def test_rerun_skips_finished_videos(analyzed):
    work, _ = analyzed
    before = log_bytes(work)
    result = analyze(WorkDir(work), AnalyzeConfig(**CFG))
    assert result.exit_code == 0 and all(v.status == "ok" for v in result.videos)
    assert log_bytes(work) == before


def test_other_settings_refuse_to_mix(analyzed):
    from facecut.errors import ConfigError

    work, _ = analyzed
    # a fresh analysis with other settings would silently mix two runs in one log
    dst = work.parent / "mixed"
    shutil.copytree(work, dst)
    for p in (WorkDir(dst).analysis_dir).glob("*.done"):
        p.unlink()
    st = read_log_state(WorkDir(dst).log_path(video_key("basic.mp4")))
    assert st.done is not None
    # a log without its Done record (unfinished) and another fps
    path = WorkDir(dst).log_path(video_key("basic.mp4"))
    frames = list(iter_frames(path))[:-1]
    from facecut.logio import LogWriter

    path.unlink()
    with LogWriter(path) as w:
        for f in frames:
            w.append_raw(f)
    with pytest.raises(ConfigError, match="fps"):
        analyze(WorkDir(dst), AnalyzeConfig(**{**CFG, "fps": 3.0}))


def test_model_options_reach_the_model_and_bind_the_logs(media_dir, tmp_path):
    """--model-opt goes to the backend in the inference process as it is, is recorded
    with the log, and a log made with other options is not continued."""
    from facecut.errors import ConfigError

    media = tmp_path / "media"
    media.mkdir()
    shutil.copy(media_dir / "basic.mp4", media)
    opts = {"min_size_ratio": 0.9, "thresholds": [0.6, 0.7, 0.75]}
    result = run_analysis(media, tmp_path / "w", model_options=opts)
    assert result.exit_code == 0 and [v.status for v in result.videos] == ["ok"]
    header = read_records(WorkDir(tmp_path / "w").log_path(video_key("basic.mp4")), LogRecord)[0]
    assert json.loads(header.model_params)["model_options"] == opts
    assert "model_options" not in json.loads(AnalyzeConfig(**CFG).model_params())  # older logs match
    for p in WorkDir(tmp_path / "w").analysis_dir.glob("*.done"):
        p.unlink()  # unfinished: the next run would continue it
    with pytest.raises(ConfigError, match="model_params"):
        analyze(WorkDir(tmp_path / "w"), AnalyzeConfig(**{**CFG, "model_options": {"min_size_ratio": 0.7}}))
    # an option the backend does not have fails in the inference process, with its name
    from facecut.errors import ModelError

    with pytest.raises(ModelError, match="no_such_option"):
        run_analysis(media, tmp_path / "w2", model_options={"no_such_option": 1})


def test_logs_name_their_model_files_and_other_weights_do_not_continue_them(media_dir, tmp_path):
    """Each log records which model files made it (name, size, digest); a run whose
    model folder holds other weights is refused before anything starts, with the
    files named; a log from before this record is continued."""
    import msgspec

    from facecut.errors import ConfigError
    from facecut.models.mtcnn import package_files
    from facecut.resume import bind_model_files, check_params

    models = tmp_path / "models"
    models.mkdir()
    for p in package_files()[0].values():
        shutil.copy(p, models)
    media = tmp_path / "media"
    media.mkdir()
    shutil.copy(media_dir / "basic.mp4", media)
    result = run_analysis(media, tmp_path / "w", model_dir=str(models))
    assert result.exit_code == 0 and [v.status for v in result.videos] == ["ok"]
    header = records(tmp_path / "w", "basic.mp4")[0]
    files = json.loads(header.model_params)["model_files"]
    assert sorted(files) == ["onet", "pnet", "rnet"]
    assert files["onet"].startswith(f"onet.onnx {(models / 'onet.onnx').stat().st_size} ")
    # the embedded files are the same weights under the same names: the same record
    assert bind_model_files(AnalyzeConfig(**CFG)).model_files == files
    wd = WorkDir(tmp_path / "w")
    for p in wd.analysis_dir.glob("*.done"):
        p.unlink()  # unfinished: the next run would continue it
    cfg = AnalyzeConfig(**{**CFG, "model_dir": str(models)})
    data = bytearray((models / "onet.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF  # other weights, same size and name
    (models / "onet.onnx").write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="model folder holds other files") as ex:
        analyze(wd, cfg)
    assert "onet.onnx" in str(ex.value) and "pnet.onnx" not in str(ex.value)
    # a log made before logs named their files goes on
    info = wd.load_scan().videos[0]
    old = json.loads(header.model_params)
    del old["model_files"]
    check_params(wd, bind_model_files(cfg), info,
                 msgspec.structs.replace(header, model_params=json.dumps(old, sort_keys=True)))
    with pytest.raises(ConfigError):
        check_params(wd, bind_model_files(cfg), info, header)
    # other settings as well: the message says so, not only that the files differ
    with pytest.raises(ConfigError) as ex:
        check_params(wd, bind_model_files(msgspec.structs.replace(cfg, min_face=70.0)), info, header)
    assert "min_face" in str(ex.value) and "onet.onnx" in str(ex.value)
    assert "model folder holds" not in str(ex.value) and "Use the same options" in str(ex.value)
    # a machine that cannot tell which files it would load (a cluster client
    # without the model folder) does not refuse the log for it
    check_params(wd, msgspec.structs.replace(cfg, model_files={}), info, header)


def test_decoder_count_does_not_change_the_logs(analyzed, media_dir, tmp_path):
    work, _ = analyzed
    result = run_analysis(media_dir, tmp_path / "w3", decoders=3, infer_procs=2)
    assert result.exit_code == 0
    assert log_bytes(tmp_path / "w3") == log_bytes(work)


# --------------------------------------------------------------------------- kills and resume


@pytest.fixture(scope="session")
def long_media(tmp_path_factory) -> Path:
    """One longer video (so a run can be interrupted mid-video) and a short one."""
    d = tmp_path_factory.mktemp("long")
    shots = [
        Shot("face", 4.0, "astronaut", face_px=130),
        Shot("noface", 3.0, "coffee"),
        Shot("face", 5.0, "t1_mid", face_px=140),
        Shot("noface", 3.0, "rocket"),
        Shot("face", 5.0, "hanks", face_px=130, background="chelsea"),
        Shot("small", 3.0, "astronaut", face_px=34, background="coffee"),
        Shot("face", 5.0, "astronaut", face_px=150),
    ] * 2
    make_video(d / "a_long.mp4", shots, seed=42)
    make_video(d / "b_short.mp4", [Shot("face", 2.0, "t1_mid", face_px=130), Shot("noface", 2.0, "coffee")], seed=43)
    return d


@pytest.fixture(scope="session")
def long_reference(long_media, tmp_path_factory):
    work = tmp_path_factory.mktemp("longref")
    result = run_analysis(long_media, work, batch=1)
    assert result.exit_code == 0
    return work


ANALYZE = [sys.executable, "-m", "facecut", "analyze", "--provider", "cpu", "--decoders", "1", "--infer-procs", "1",
           "--min-face", "60", "--batch", "1"]


def start_analyze(work: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        ANALYZE + ["-w", str(work), *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True, cwd=Path(__file__).resolve().parents[1],
    )


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[bytes, bytes]:
    """The run's output once it ends by itself (killed with its group on a hang)."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise


def wait_for_samples(path: Path, n: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        if path.exists() and read_log_state(path).samples >= n:
            return
        time.sleep(0.02)
    raise AssertionError(f"no {n} samples in {path} within {timeout}s")


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
@pytest.mark.parametrize("moment", [1, 23, 61])
def test_sigkill_and_resume_gives_identical_logs(long_media, long_reference, tmp_path, moment):
    work = tmp_path / "w"
    WorkDir(work).save_scan(scan(long_media))
    log = WorkDir(work).log_path(video_key("a_long.mp4"))
    proc = start_analyze(work)
    wait_for_samples(log, moment, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    time.sleep(0.5)  # let orphaned workers notice
    state = read_log_state(log)
    assert state.done is None and state.samples >= moment
    committed = b"".join(_frames_bytes(log))  # every intact frame: what the resume must keep
    inode = log.stat().st_ino
    out = subprocess.run(ANALYZE + ["-w", str(work)], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
    assert log_bytes(work) == log_bytes(long_reference)
    # Resumed, not redone: the same file, its committed prefix untouched, only the rest appended.
    assert log.stat().st_ino == inode
    assert log.read_bytes().startswith(committed)
    assert shm_segments() == []


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_between_videos_resumes_without_touching_the_finished_one(long_media, long_reference, tmp_path):
    """Killed the moment the first video's completion marker appears: that video
    is not analysed again (its log untouched, the same file) and the batch ends
    with the uninterrupted run's logs."""
    work = tmp_path / "w"
    wd = WorkDir(work)
    wd.save_scan(scan(long_media))
    proc = start_analyze(work)
    deadline = time.time() + 120
    while not (done := list(wd.analysis_dir.glob("*.done"))):
        if proc.poll() is not None or time.time() > deadline:  # a hang guard, not a speed check
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"no video finished: {proc.communicate()}")
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    time.sleep(0.5)
    finished = done[0].with_suffix(".fclog")
    before, inode = finished.read_bytes(), finished.stat().st_ino
    assert len(list(wd.analysis_dir.glob("*.done"))) < 2, "killed too late: both videos finished"
    out = subprocess.run(ANALYZE + ["-w", str(work)], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
    assert finished.read_bytes() == before and finished.stat().st_ino == inode
    assert log_bytes(work) == log_bytes(long_reference)
    assert not list(work.rglob("*.tmp")) and shm_segments() == []


def _markers(work: Path) -> dict[str, dict]:
    out = {}
    for p in sorted(WorkDir(work).analysis_dir.glob("*.done")) + sorted(WorkDir(work).analysis_dir.glob("*.shots.json")):
        data = json.loads(p.read_text())
        if isinstance(data, dict):
            data.pop("finished", None)
        out[p.name] = data
    return out


@pytest.mark.slow
def test_killed_while_writing_the_markers_resumes_to_the_same_markers(long_reference, tmp_path):
    """The states a kill leaves around a video's end: its Done record logged but
    no marker yet (b_short), or the marker half-written under its temp name
    (a_long; a thumbnail too). The next run writes the markers from the logs,
    analyses nothing again and leaves no temp file."""
    work = tmp_path / "w"
    shutil.copytree(long_reference, work)
    wd = WorkDir(work)
    a, b = video_key("a_long.mp4"), video_key("b_short.mp4")
    wd.done_path(b).unlink()
    (wd.analysis_dir / f"{b}.shots.json").unlink()
    marker = wd.done_path(a)
    torn = marker.with_name(f".{marker.name}.999999999.tmp")
    torn.write_bytes(marker.read_bytes()[:40])
    marker.unlink()
    thumb = next(work.rglob("*.jpg"))
    (thumb.parent / f".{thumb.name}.999999998.tmp").write_bytes(b"\xff\xd8 half a JPEG")
    logs = {p: (p.read_bytes(), p.stat().st_ino) for p in wd.analysis_dir.glob("*.fclog")}
    out = subprocess.run(ANALYZE + ["-w", str(work)], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
    assert {p: (p.read_bytes(), p.stat().st_ino) for p in logs} == logs  # nothing analysed again
    assert _markers(work) == _markers(long_reference)
    assert not list(work.rglob("*.tmp"))


@pytest.mark.slow
def test_a_workers_counters_cover_the_whole_run(long_media, tmp_path):
    """Per-worker figures of the progress snapshots are totals of the run: they never
    fall from one snapshot to the next (a decoder's time blocked on a full ring was
    reset at each video)."""
    work = tmp_path / "w"
    WorkDir(work).save_scan(scan(long_media))
    out, err = finish(start_analyze(work, "--json-progress", "--ring-slots", "3"))
    snaps = [json.loads(line) for line in out.splitlines()]
    assert len(snaps) >= 2, err
    seen: dict[tuple[str, str], float] = {}
    for snap in snaps:
        for kind, fields in (("decoders", ("blocked_s", "cpu_s")), ("infer", ("frames", "cpu_s"))):
            for w in snap[kind]:
                for f in fields:
                    key = (w["name"], f)
                    assert w[f] >= seen.get(key, 0.0), (key, w[f], seen.get(key))
                    seen[key] = w[f]
    assert seen[("decoder-0", "blocked_s")] > 0  # the ring was full at times: the check saw numbers


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_decoder_killed_mid_run_is_reported_and_the_batch_goes_on(long_media, tmp_path):
    work = tmp_path / "w"
    WorkDir(work).save_scan(scan(long_media))
    log = WorkDir(work).log_path(video_key("a_long.mp4"))
    proc = start_analyze(work)
    wait_for_samples(log, 5, proc)
    hb = json.loads(WorkDir(work).heartbeat.read_text())
    os.kill(hb["workers"]["decoder-0"], signal.SIGKILL)
    out, err = finish(proc)
    assert proc.returncode == 3, err
    assert b"a_long.mp4" in err and b"SIGKILL" in err
    state = read_log_state(log)
    assert state.done.status == "failed" and "decoder process died" in state.done.reason
    assert read_log_state(WorkDir(work).log_path(video_key("b_short.mp4"))).done.status == "ok"
    assert shm_segments() == []


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
@pytest.mark.parametrize("moment", [5, 40])
def test_inference_killed_mid_run_restarts_to_identical_logs(long_media, long_reference, tmp_path, moment):
    """The dead process's batch is re-analysed from the last committed sample:
    nothing written twice, nothing lost (was: samples logged twice)."""
    work = tmp_path / "w"
    WorkDir(work).save_scan(scan(long_media))
    log = WorkDir(work).log_path(video_key("a_long.mp4"))
    proc = start_analyze(work, "--json-progress")
    wait_for_samples(log, moment, proc)
    hb = json.loads(WorkDir(work).heartbeat.read_text())
    os.kill(hb["workers"]["infer-0"], signal.SIGKILL)
    out, err = finish(proc)
    assert proc.returncode == 0, err
    assert b"infer-0 died" in err
    assert log_bytes(work) == log_bytes(long_reference)
    assert shm_segments() == []
    # the restarted process's counters go on from the dead one's (were: from 0)
    last = json.loads(out.splitlines()[-1])
    (infer,) = last["infer"]
    assert infer["frames"] >= last["samples_written"] > moment
    assert infer["faces"] >= last["faces_found"] > 0


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_video_in_hand_at_two_inference_deaths_fails_and_the_batch_goes_on(long_media, tmp_path):
    work = tmp_path / "w"
    WorkDir(work).save_scan(scan(long_media))
    log = WorkDir(work).log_path(video_key("a_long.mp4"))
    proc = start_analyze(work)
    killed = []
    for n in (5, 15):
        wait_for_samples(log, n, proc)
        deadline = time.time() + 30
        while True:  # the restarted process's pid, once the heartbeat shows it
            pid = json.loads(WorkDir(work).heartbeat.read_text())["workers"]["infer-0"]
            if pid not in killed:
                break
            if time.time() > deadline:
                pytest.fail("hang guard: no new inference process in the heartbeat")
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
    out, err = finish(proc)
    assert proc.returncode == 3, err
    state = read_log_state(log)
    assert state.done.status == "failed" and "inference process died twice" in state.done.reason
    assert state.samples >= 5  # the committed prefix is kept
    assert read_log_state(WorkDir(work).log_path(video_key("b_short.mp4"))).done.status == "ok"
    assert shm_segments() == []


@pytest.mark.slow
@pytest.mark.skipif(not LINUX, reason="SIGINT to a process group")
def test_ctrl_c_stops_cleanly_and_resumes(long_media, long_reference, tmp_path):
    work = tmp_path / "w"
    WorkDir(work).save_scan(scan(long_media))
    log = WorkDir(work).log_path(video_key("a_long.mp4"))
    proc = start_analyze(work)
    wait_for_samples(log, 10, proc)
    os.killpg(proc.pid, signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert shm_segments() == []
    result = analyze(WorkDir(work), AnalyzeConfig(**{**CFG, "batch": 1}))
    assert result.exit_code == 0
    assert log_bytes(work) == log_bytes(long_reference)


@pytest.mark.skipif(not LINUX, reason="/dev/shm")
def test_stale_segments_of_dead_runs_are_removed(media_dir, tmp_path):
    from multiprocessing import shared_memory

    from facecut.ring import _scope

    # A segment named like a ring of a process of this PID namespace that no longer
    # exists, and one of another namespace (a container sharing /dev/shm) whose pid
    # means nothing here: only the first is removed.
    shm = shared_memory.SharedMemory(name=f"facecut_{_scope()}_999999_dead00", create=True, size=4096)
    shm.close()
    other = shared_memory.SharedMemory(name="facecut_0other_999999_dead01", create=True, size=4096)
    try:
        work = tmp_path / "w"
        wd = WorkDir(work)
        wd.save_scan(scan(media_dir, skip_pattern="^(?!basic)"))
        assert analyze(wd, AnalyzeConfig(**CFG)).exit_code == 0
        assert shm_segments() == []
        assert not Path(f"/dev/shm/{shm.name}").exists()
        assert Path("/dev/shm/facecut_0other_999999_dead01").exists()
    finally:
        other.close()
        other.unlink()


def test_corrupt_packets_make_a_partial_video_not_a_lost_one(long_media, tmp_path):
    import av

    src = long_media / "b_short.mp4"
    data = bytearray(src.read_bytes())
    # Break three packets in the middle for real: their NAL length prefix now points
    # far past the packet, which the H.264 decoder refuses (it cannot conceal it).
    with av.open(str(src)) as c:
        inter = [p for p in c.demux(c.streams.video[0]) if p.size and not p.is_keyframe]
    damaged = inter[len(inter) // 2 : len(inter) // 2 + 3]
    for p in damaged:
        data[p.pos : p.pos + 4] = b"\xff\xff\xff\xf0"
    media = tmp_path / "m"
    media.mkdir()
    (media / "broken.mp4").write_bytes(bytes(data))
    result = run_analysis(media, tmp_path / "w")
    v = result.videos[0]
    assert v.status == "partial", (v.status, v.reason)
    assert "3 corrupt packet(s) skipped" in v.reason and "Invalid data" in v.reason
    recs = records(tmp_path / "w", "broken.mp4")
    samples = [r for r in recs if isinstance(r, Sample)]
    assert samples and samples[-1].time > 3.0  # went on past the damage
    assert recs[-1].status == "partial" and recs[-1].errors == 3


def test_a_file_replaced_between_scan_and_analysis_is_probed_again(media_dir, tmp_path, caplog):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(media_dir / "basic.mp4", src / "a.mp4")
    wd = WorkDir(tmp_path / "w")
    wd.save_scan(scan(src))
    old = wd.load_scan().videos[0]
    shutil.copy(media_dir / "vfr.mp4", src / "a.mp4")  # another video under the same name
    os.utime(src / "a.mp4", ns=(old.mtime_ns + 10**9, old.mtime_ns + 10**9))
    with caplog.at_level("WARNING"):
        result = analyze(wd, AnalyzeConfig(**CFG))
    assert result.exit_code == 0
    assert "a.mp4: the file changed since the scan: probed again" in caplog.text
    recs = records(tmp_path / "w", "a.mp4")
    new = fingerprint(src / "a.mp4")
    assert recs[0].fingerprint == new != old.fingerprint
    assert recs[-1].duration == pytest.approx(load_truth(media_dir / "vfr.mp4").duration, abs=0.05)


def test_finished_videos_are_recognised_from_their_markers_not_their_records(analyzed, monkeypatch):
    """Resuming a batch of thousands of finished videos must not read every record
    of every log: the completion marker and the log's first frame say enough."""
    import facecut.resume as resume

    work, _ = analyzed
    before = log_bytes(work)
    read = []
    real = resume.read_log_state
    monkeypatch.setattr(resume, "read_log_state", lambda path, keep=False: read.append(path) or real(path, keep))
    result = analyze(WorkDir(work), AnalyzeConfig(**CFG))
    assert result.exit_code == 0 and read == []
    assert [v.status for v in result.videos] and all(v.status == "ok" for v in result.videos)
    assert log_bytes(work) == before


@pytest.mark.slow
@pytest.mark.skipif(not LINUX, reason="SIGKILL of one process, /dev/shm")
def test_a_coordinator_killed_alone_leaves_no_worker_and_no_shared_memory(long_media, tmp_path):
    from facecut.procs import pid_alive

    work = tmp_path / "w"
    WorkDir(work).save_scan(scan(long_media))
    log = WorkDir(work).log_path(video_key("a_long.mp4"))
    proc = start_analyze(work)
    wait_for_samples(log, 5, proc)
    workers = json.loads(WorkDir(work).heartbeat.read_text())["workers"]
    assert workers and proc.pid not in workers.values()
    os.kill(proc.pid, signal.SIGKILL)  # the coordinator only: its children see their parent die
    proc.wait(10)
    deadline = time.time() + 30
    while any(pid_alive(pid) for pid in workers.values()):
        if time.time() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"workers outlived their coordinator: {workers}")
        time.sleep(0.05)
    assert shm_segments() == []  # the ring went with it (Python's resource tracker unlinks it)
    state = read_log_state(log)
    assert state.done is None and state.samples >= 5  # resumable as after any kill
