"""Scale-out over Dask (facecut.cluster) on generated media: the real engine in real
Dask worker processes. Same logs and plan as a local run, a SIGKILLed worker's
video retried to the same plan, unusable workers refused before any task."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgspec
import pytest

distributed = pytest.importorskip("distributed")

from facecut.cluster import (
    LEASE_TTL,
    ClusterError,
    Lease,
    LeaseHeld,
    LeaseLost,
    analyze_on_cluster,
    fence,
    local_cluster,
    local_path,
    path_map,
)
from facecut.config import AnalyzeConfig
from facecut.profile import machine_config
from facecut.coordinator import analyze
from facecut.videolog import read_log_state
from facecut.errors import ConfigError
from facecut.fsio import video_key
from facecut.workdir import WorkDir
from facecut.scan import scan
from facecut.plan import plan_from_work
from facecut.tools.make_media import Shot, make_video

CFG = AnalyzeConfig(provider="cpu", decoders=1, infer_procs=1, batch=4, min_face=60.0)
VIDEOS = ["basic.mp4", "long.mp4", "rotated.mp4", "sub/nofaces.mkv", "vfr.mp4"]


def fresh_work(media: Path, work: Path) -> WorkDir:
    wd = WorkDir(work)
    wd.save_scan(scan(media))
    return wd


def log_bytes(wd: WorkDir) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(wd.analysis_dir.glob("*.fclog"))}


def spans(wd: WorkDir) -> list[tuple]:
    return sorted((c.id, c.source, c.start, c.end) for c in plan_from_work(wd).clips)


@pytest.fixture(scope="module")
def batch(media_dir, tmp_path_factory) -> Path:
    """The standard test batch plus one 40 s video (long enough to kill a worker mid-video)."""
    d = tmp_path_factory.mktemp("cluster_media")
    shutil.copytree(media_dir, d, dirs_exist_ok=True)
    shots = [Shot("face", 5.0, "astronaut", face_px=130), Shot("noface", 3.0, "coffee"),
             Shot("face", 5.0, "t1_mid", face_px=140), Shot("noface", 3.0, "rocket"),
             Shot("face", 4.0, "hanks", face_px=130, background="chelsea")] * 2
    make_video(d / "long.mp4", shots, seed=44)
    return d


@pytest.fixture(scope="module")
def reference(batch, tmp_path_factory) -> tuple[WorkDir, float]:
    """A plain local analysis of the batch and its wall time."""
    wd = fresh_work(batch, tmp_path_factory.mktemp("cluster_ref"))
    t = time.perf_counter()
    result = analyze(wd, CFG)
    seconds = time.perf_counter() - t
    assert result.exit_code == 0
    return wd, seconds


# --------------------------------------------------------------------------- end to end


def test_local2_gives_the_same_logs_and_plan_as_a_local_run(batch, reference, tmp_path):
    ref, ref_seconds = reference
    wd = fresh_work(batch, tmp_path / "w")
    snaps, done = [], []
    t = time.perf_counter()
    res = analyze_on_cluster(wd, CFG, "local:2", on_stats=snaps.append, on_video_done=lambda i: done.append(i.path))
    seconds = time.perf_counter() - t
    video_s = sum(v.duration for v in wd.load_scan().videos)
    print(f"\nwall time on the same batch ({video_s:.0f} s of video, {os.cpu_count()} cores): "
          f"local analyze {ref_seconds:.2f} s, analyze_on_cluster local:2 {seconds:.2f} s (cluster start included)")

    assert res.exit_code == 0
    assert {v.info.path: v.status for v in res.videos} == dict.fromkeys(VIDEOS, "ok")
    assert sorted(done) == VIDEOS  # streamed to the caller as they finished
    assert log_bytes(wd) == log_bytes(ref)  # byte for byte what a local run writes
    assert spans(wd) == spans(ref) and spans(wd)
    assert len({t["worker"] for t in res.tasks.values()}) == 2  # both workers took videos
    # the dashboard saw per-worker rows, named by worker, and the final counts
    rows = {d.name for s in snaps for d in s.decoders}
    assert any(n.endswith(" decoder-0") for n in rows) and len({n.split()[0] for n in rows}) == 2
    last = snaps[-1]
    assert last.videos_done == len(VIDEOS) and last.video_seconds_done == pytest.approx(video_s)
    assert last.samples_written == sum(t["samples"] for t in res.tasks.values())
    assert not wd.heartbeat.exists() and not list(wd.analysis_dir.glob("*.lease*"))
    assert not list(wd.logs_dir.glob("*/"))  # no crash traces left by the tasks

    # A re-run skips finished videos as a local run does: nothing submitted, no cluster needed.
    again = analyze_on_cluster(wd, CFG, "tcp://127.0.0.1:9")
    assert again.exit_code == 0 and again.tasks == {} and log_bytes(wd) == log_bytes(ref)


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_killed_worker_loses_only_its_video_which_is_retried(batch, reference, tmp_path):
    from distributed import Client

    ref, _ = reference
    wd = fresh_work(batch, tmp_path / "w")
    log = wd.log_path(video_key("long.mp4"))
    box: dict = {}

    def client_side(address: str) -> None:
        try:
            box["result"] = analyze_on_cluster(wd, CFG, address)
        except BaseException as ex:  # noqa: BLE001 - re-raised in the test thread
            box["error"] = ex

    with local_cluster(2) as cluster, Client(cluster) as c:
        # local:N listens on this machine only: scheduler, workers and dashboard
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        assert all(a.startswith("tcp://127.0.0.1:") for a in c.scheduler_info()["workers"])
        assert "127.0.0.1" in cluster.dashboard_link
        th = threading.Thread(target=client_side, args=(cluster.scheduler_address,))
        th.start()
        deadline = time.time() + 60
        while not (log.exists() and read_log_state(log).samples >= 8):
            assert th.is_alive(), box
            if time.time() > deadline:  # a hang guard, not a speed check
                pytest.fail(f"the run never got under way: {box}")
            time.sleep(0.01)
        busy = {a: ks for a, ks in c.processing().items() if any(video_key("long.mp4") in str(k) for k in ks)}
        (addr,) = busy
        pid = c.run(os.getpid, workers=[addr])[addr]
        os.kill(pid, signal.SIGKILL)
        at_kill = read_log_state(log)
        th.join(120)
    assert not th.is_alive()
    if "error" in box:
        raise box["error"]
    res = box["result"]

    assert at_kill.done is None and at_kill.samples >= 8  # killed mid-video
    assert res.exit_code == 0
    assert {v.info.path: v.status for v in res.videos} == dict.fromkeys(VIDEOS, "ok")
    long = res.tasks["long.mp4"]
    assert long["took_over"] and f"pid {pid} " in long["took_over"]  # resumed the dead worker's log
    assert log_bytes(wd) == log_bytes(ref)
    assert spans(wd) == spans(ref)
    assert not list(wd.analysis_dir.glob("*.lease*"))


# --------------------------------------------------------------------------- refused before any work


def test_a_path_workers_cannot_see_fails_before_any_work(batch, tmp_path):
    from distributed import Client

    wd = fresh_work(batch, tmp_path / "w")
    input_dir = wd.load_scan().input_dir
    other = tmp_path / "other"  # the worker has a folder at its mapped path, but not the shared one
    other.mkdir()
    # This worker mounts the shares elsewhere: its FACECUT_PATH_MAP sends the client's
    # work folder to `other` and the input folder to a path that does not exist there.
    env = {"FACECUT_PATH_MAP": f"{wd.root}={other};{input_dir}={tmp_path / 'not-mounted'}"}
    with local_cluster(1, env=env) as cluster, Client(cluster) as c:
        (addr,) = c.scheduler_info()["workers"]
        with pytest.raises(ConfigError) as ei:
            analyze_on_cluster(wd, CFG, cluster.scheduler_address)
        assert c.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)) == 0  # nothing submitted
    msg = str(ei.value)
    assert "nothing was submitted" in msg and f"worker {addr}" in msg
    assert f"another folder at {wd.root} (here {other})" in msg and "not the shared folder" in msg
    assert f"cannot see the input folder {input_dir} (here {tmp_path / 'not-mounted'})" in msg
    assert not list(wd.analysis_dir.iterdir())


def test_a_worker_loads_the_model_folder_as_it_sees_it(media_dir, tmp_path):
    """--model-dir is a client path: each worker maps it (FACECUT_PATH_MAP) to load
    the model and to record which files made the logs; the client, which does not
    see the folder, does not compare them (was: the task loaded the unmapped path)."""
    import json as _json

    from facecut.logio import read_first
    from facecut.models.base import model_files_identity
    from facecut.models.mtcnn import package_files
    from facecut.records import LogRecord

    media = tmp_path / "media"
    media.mkdir()
    shutil.copy(media_dir / "basic.mp4", media)
    models = tmp_path / "models"  # the worker's copy, with weights of its own
    models.mkdir()
    for p in package_files()[0].values():
        shutil.copy(p, models)
    data = bytearray((models / "onet.onnx").read_bytes())
    data[len(data) // 2] ^= 1
    (models / "onet.onnx").write_bytes(bytes(data))
    seen_by_client = tmp_path / "share" / "models"  # not mounted here
    cfg = msgspec.structs.replace(CFG, model_dir=str(seen_by_client))
    wd = fresh_work(media, tmp_path / "w")
    with local_cluster(1, env={"FACECUT_PATH_MAP": f"{seen_by_client}={models}"}) as cluster:
        res = analyze_on_cluster(wd, cfg, cluster.scheduler_address)
        assert res.exit_code == 0, res
        header = read_first(wd.log_path(video_key("basic.mp4")), LogRecord)
        assert _json.loads(header.model_params)["model_files"] == model_files_identity("mtcnn", models)
        for p in wd.analysis_dir.glob("*.done"):
            p.unlink()  # unfinished: a second run would continue it
        assert analyze_on_cluster(wd, cfg, cluster.scheduler_address).exit_code == 0


def test_daemonic_workers_and_unreachable_schedulers_are_refused(batch, tmp_path):
    from distributed import LocalCluster

    wd = fresh_work(batch, tmp_path / "w")
    # Dask's default worker processes are daemonic: they could not start the engine's processes.
    with (LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
          pytest.raises(ConfigError, match="daemonic.*DASK_DISTRIBUTED__WORKER__DAEMON=False")):
        analyze_on_cluster(wd, CFG, cluster.scheduler_address)
    with pytest.raises(ClusterError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        analyze_on_cluster(wd, CFG, "tcp://127.0.0.1:9", timeout=2)
    with pytest.raises(ConfigError, match="local:N"):
        analyze_on_cluster(wd, CFG, "local:0")
    assert not list(wd.analysis_dir.iterdir())


def test_a_worker_seeing_another_size_is_refused_and_its_task_says_why(batch, tmp_path):
    """A worker whose input share holds another version of a file (a stale copy,
    a sync in progress): the check before any task names the file with both
    sizes; a task given a size its worker does not see fails with
    PathNotVisible, not with an analysis of the wrong bytes."""
    from distributed import Client

    from facecut.cluster import PROBE, PathNotVisible, analyze_video

    wd = fresh_work(batch, tmp_path / "w")
    input_dir = wd.load_scan().input_dir
    stale = tmp_path / "stale"
    shutil.copytree(batch, stale)
    data = (stale / "vfr.mp4").read_bytes()
    (stale / "vfr.mp4").write_bytes(data[: len(data) // 2])
    env = {"FACECUT_PATH_MAP": f"{input_dir}={stale}"}
    with local_cluster(1, env=env) as cluster, Client(cluster) as c:
        (addr,) = c.scheduler_info()["workers"]
        with pytest.raises(ConfigError) as ei:
            analyze_on_cluster(wd, CFG, cluster.scheduler_address)
        msg = str(ei.value)
        assert "nothing was submitted" in msg and f"worker {addr}" in msg
        assert f"vfr.mp4 ({len(data) // 2} bytes, scanned {len(data)})" in msg
        assert c.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)) == 0
        # The same check inside the task (the file changed after the check):
        token = "t" * 32
        (wd.logs_dir / PROBE.format(token[:12])).write_text(json.dumps({"token": token}))
        fut = c.submit(analyze_video, str(wd.root), input_dir, "vfr.mp4", len(data), CFG, None, token, "topic",
                       pure=False)
        ex = fut.exception(timeout=60)
    assert isinstance(ex, PathNotVisible), ex
    assert f"vfr.mp4 ({len(data) // 2} bytes, scanned {len(data)})" in str(ex)
    assert not list(wd.analysis_dir.glob("*.fclog"))


def test_a_file_changed_since_the_scan_is_probed_again_before_the_workers_check(batch, tmp_path, caplog):
    """As in a local run: a file replaced after the scan is probed again by the
    client (and said), so the workers check and analyse the new content."""
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(batch / "basic.mp4", src / "a.mp4")
    wd = fresh_work(src, tmp_path / "w")
    shutil.copy(batch / "vfr.mp4", src / "a.mp4")
    with caplog.at_level("WARNING"):
        result = analyze_on_cluster(wd, CFG, "local:1")
    assert result.exit_code == 0 and [v.status for v in result.videos] == ["ok"]
    assert "a.mp4: the file changed since the scan" in caplog.text
    header = read_log_state(wd.log_path(video_key("a.mp4"))).header
    from facecut.fsio import fingerprint

    assert header.fingerprint == fingerprint(src / "a.mp4")


def test_no_worker_within_the_timeout_is_a_clear_error(batch, tmp_path):
    wd = fresh_work(batch, tmp_path / "w")
    with (local_cluster(0) as cluster,
          pytest.raises(ClusterError, match=r"no Dask workers connected to tcp://127\.0\.0\.1:\d+ within 2s")):
        analyze_on_cluster(wd, CFG, cluster.scheduler_address, timeout=2)
    assert not list(wd.analysis_dir.glob("*.fclog"))


# --------------------------------------------------------------------------- pieces


def test_path_map_translates_client_paths_for_this_worker():
    m = [("Z:\\media", "/mnt/media"), ("/srv/work", "/data/work")]
    assert local_path("Z:\\media\\a\\b.mp4", m) == Path("/mnt/media/a/b.mp4")
    assert local_path("z:/Media/a", m) == Path("/mnt/media/a")  # drive paths compare case-insensitively
    assert local_path("/srv/work", m) == Path("/data/work")
    assert local_path("/srv/work/analysis", m) == Path("/data/work/analysis")
    assert local_path("/srv/workshop", m) == Path("/srv/workshop")  # whole components only
    unc = [("\\\\nas\\media", "/mnt/media"), ("Z:\\", "/mnt/z")]  # as typed: '\\nas\media=/mnt/media;Z:\=/mnt/z'
    assert local_path("\\\\NAS\\media\\v\\a.mp4", unc) == Path("/mnt/media/v/a.mp4")
    assert local_path("Z:\\videos\\a.mp4", unc) == Path("/mnt/z/videos/a.mp4")
    assert path_map("\\\\nas\\media=/mnt/media;Z:\\=/mnt/z") == unc
    assert local_path("/SRV/work", m) == Path("/SRV/work")  # POSIX prefixes are case-sensitive
    with pytest.raises(ConfigError, match="CLIENT_PREFIX=WORKER_PREFIX"):
        path_map("/a:/b")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="profile folder via XDG_CONFIG_HOME")
def test_unpinned_counts_come_from_the_worker_machines_profile(tmp_path, monkeypatch):
    from facecut.profile import save_profile

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    save_profile("cpu", {"decoders": 3, "infer_procs": 2, "batch": 16}, {})
    assert machine_config(CFG, None) == CFG  # a library caller's config is used as given
    here = machine_config(CFG, {"decoders"})
    assert (here.decoders, here.infer_procs, here.batch, here.infer_threads) == (1, 2, 16, 1)
    assert here.min_face == CFG.min_face and here.provider == "cpu"


def _me(**kw) -> dict:
    import psutil

    return {"video": "v.mp4", "host": socket.gethostname(), "pid": os.getpid(),
            "created": psutil.Process().create_time(), "worker": "tcp://10.0.0.9:1", "token": os.urandom(4).hex(), **kw}


def test_lease_refuses_a_live_holder_and_takes_over_from_a_gone_one(tmp_path):
    path = tmp_path / "v.lease"
    first = Lease(path, _me())
    first.acquire()
    with pytest.raises(LeaseHeld, match=f"pid {os.getpid()} on .* is alive"):
        Lease(path, _me()).acquire()  # the holder (this process) is alive
    first.check(refresh=True)

    # A holder on this machine whose process has exited.
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    path.write_text(json.dumps(_me(pid=int(done.stdout), token="dead")))
    second = Lease(path, _me())
    second.acquire()
    assert second.took_over["token"] == "dead"
    with pytest.raises(LeaseLost):
        first.check(refresh=False)  # the first holder notices and stops writing

    # A holder on another machine: live while the scheduler lists it and it refreshes.
    path.write_text(json.dumps(_me(host="elsewhere", token="remote")))
    with pytest.raises(LeaseHeld, match="still in the cluster"):
        Lease(path, _me()).acquire(registered=lambda h: True)
    Lease(path, _me()).acquire(registered=lambda h: False)  # the scheduler dropped that worker
    path.write_text(json.dumps(_me(host="elsewhere", token="remote")))
    old = time.time() - LEASE_TTL - 5
    os.utime(path, (old, old))
    third = Lease(path, _me())
    third.acquire(registered=lambda h: True)  # listed, but silent for longer than the TTL
    third.release()
    assert not path.exists()


@pytest.mark.skipif(os.name == "nt", reason="Windows refuses to rename over an open file (the fence then refuses)")
def test_fence_leaves_a_zombie_writing_into_an_orphaned_file(tmp_path):
    log = tmp_path / "v.fclog"
    log.write_bytes(b"committed")
    with open(log, "ab") as zombie:
        fence(log)
        zombie.write(b"late")
        zombie.flush()
    assert log.read_bytes() == b"committed"


def test_a_video_failing_twice_is_reported_and_left_pending(batch, tmp_path):
    """A task that fails twice is this worker machine's problem (here: the model
    files are missing there), not the video's: failed for this run, with its reason,
    and left pending on disk so the next run retries it."""
    wd = WorkDir(tmp_path / "w")
    wd.save_scan(scan(batch, skip_pattern="^(?!basic)"))
    models = tmp_path / "models"  # visible to the workers, but empty
    models.mkdir()
    cfg = AnalyzeConfig(provider="cpu", decoders=1, infer_procs=1, model="buffalo_l", model_dir=str(models))
    res = analyze_on_cluster(wd, cfg, "local:1")
    (v,) = res.videos
    assert res.exit_code == 3 and v.status == "failed"
    assert "failed twice on the cluster" in v.reason and "buffalo_l" in v.reason
    assert not wd.done_path(v.key).exists() and not list(wd.analysis_dir.glob("*.lease*"))
    assert read_log_state(wd.log_path(v.key)).done is None  # pending: a re-run retries it
    assert {s.path: s.status for s in plan_from_work(wd).sources} == {"basic.mp4": "pending"}
