"""The worker side: one Dask task analyses one video with facecut's own engine.
(See facecut.cluster for the design.)
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from pathlib import Path

import msgspec

from facecut.cluster.lease import Lease, fence
from facecut.cluster.paths import PathNotVisible, _see_inputs, _see_work, local_path
from facecut.config import AnalyzeConfig
from facecut.coordinator import Coordinator
from facecut.errors import FacecutError
from facecut.fsio import video_key
from facecut.profile import COUNTS, machine_config
from facecut.stats import RunStats
from facecut.workdir import WorkDir

log = logging.getLogger(__name__)

_EVENT_EVERY = 1.0  # s between a task's progress events


class TaskCancelled(FacecutError):
    """The client cancelled the task (Ctrl-C, or the client went away)."""


class _TaskReporter:
    """The coordinator's ``on_stats`` inside a task: keeps the lease, notices
    cancellation, forwards a snapshot to the client about once a second."""

    def __init__(self, worker, key: str, topic: str, lease: Lease) -> None:
        self.worker, self.key, self.topic, self.lease = worker, key, topic, lease
        self.last_event = self.last_check = self.last_refresh = 0.0

    def __call__(self, snap: RunStats) -> None:
        now = time.monotonic()
        if now - self.last_check >= 1.0:
            self.last_check = now
            refresh = now - self.last_refresh >= 5.0
            self.lease.check(refresh)
            if refresh:
                self.last_refresh = now
            ts = self.worker.state.tasks.get(self.key)
            if ts is None or ts.state in ("cancelled", "released", "forgotten"):
                raise TaskCancelled(f"{self.lease.me['video']}: task cancelled")
        if now - self.last_event >= _EVENT_EVERY:
            self.last_event = now
            self.worker.log_event(self.topic, {"key": self.key, "worker": self.worker.address,
                                               "host": socket.gethostname(), "video": self.lease.me["video"],
                                               "snap": msgspec.to_builtins(snap)})


class _TaskWorkDir(WorkDir):
    """The work folder as one task's coordinator sees it: its workers' crash traces
    (``<name>.fault``) go to ``logs/<host>-<pid>/``, so two coordinators sharing the
    folder never open, truncate or remove each other's trace files."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.logs_dir = self.root / "logs" / f"{socket.gethostname()}-{os.getpid()}"


def _cluster_workers(client) -> dict[str, dict]:
    """Every worker the scheduler lists now: address -> its identity (host, ...)."""
    try:
        return client.scheduler_info(n_workers=-1)["workers"]  # every worker, not a first few
    except TypeError:  # a Dask without n_workers lists them all
        return client.scheduler_info()["workers"]


def _registered(holder: dict) -> bool:
    """Whether the scheduler still lists the holder's worker, running the holder's process."""
    from distributed import get_client

    try:
        client = get_client()
        if holder.get("worker") not in _cluster_workers(client):
            return False
        pids = client.run(os.getpid, workers=[holder["worker"]], on_error="return")
        pid = pids.get(holder["worker"])
        return not isinstance(pid, int) or pid == holder.get("pid")  # unreachable: assume alive
    except Exception:  # noqa: BLE001 - unknown: assume alive (the lease's age still decides)
        return True


def analyze_video(work: str, input_dir: str, rel: str, size: int, cfg: AnalyzeConfig,
                  pinned: list[str] | None, token: str, topic: str, raw: str = "") -> dict:
    """One Dask task: analyse ``rel`` with facecut's own engine on this worker
    (``raw``: its ``VideoInfo.raw_path``, the real name when ``rel`` is not it).

    Paths are as the client sees them (mapped through ``FACECUT_PATH_MAP`` here).
    Returns a small summary; raises when the worker cannot do it (Dask retries).
    """
    import psutil
    from distributed import get_worker

    t0 = time.perf_counter()
    worker = get_worker()
    # The nanny sets MALLOC_TRIM_THRESHOLD_ for its worker (fine for Dask's own data);
    # inherited by the engine's decoder and inference processes it turns every large
    # frame buffer into an mmap/munmap pair: two videos on 2 cores took 15 s instead
    # of 11.5 s. Those children get glibc's defaults, as in a local run.
    os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    wdir, why = _see_work(work, token)
    inp, why_in = _see_inputs(input_dir, [(rel, size, raw)])
    if why or why_in:
        raise PathNotVisible(f"worker {worker.address} ({socket.gethostname()}) "
                             + "; ".join(w for w in (why, why_in) if w))
    wd = _TaskWorkDir(wdir)
    cfg_here = machine_config(cfg, pinned)
    if cfg.model_dir:  # the model folder as this worker sees it (checked before any task: paths.preflight)
        cfg_here = msgspec.structs.replace(cfg_here, model_dir=str(local_path(cfg.model_dir)))
    key = video_key(rel)
    me = {"video": rel, "host": socket.gethostname(), "pid": os.getpid(), "created": psutil.Process().create_time(),
          "worker": worker.address, "token": uuid.uuid4().hex}
    lease = Lease(wd.analysis_dir / f"{key}.lease", me)
    lease.acquire(_registered)
    took = lease.took_over
    key_ = worker.get_current_task()
    # Tell the client right away (the coordinator's first snapshot comes after its start).
    worker.log_event(topic, {"key": key_, "worker": worker.address, "host": me["host"], "video": rel, "snap": None})
    try:
        if took is not None and took.get("host") != me["host"]:
            fence(wd.log_path(key))
        coord = Coordinator(wd, cfg_here, _TaskReporter(worker, key_, topic, lease),
                            only=[rel], bookkeeping=False)
        coord.input_dir = inp
        res = coord.run()
    finally:
        lease.release()
        try:
            wd.logs_dir.rmdir()  # only when no crash trace was left
        except OSError:
            pass
    vr = res.videos[0] if res.videos else None
    return {
        "video": rel, "status": vr.status if vr else "failed",
        "reason": vr.reason if vr else "not in the scan of the work folder",
        "samples": vr.state.samples if vr else 0, "samples_written": coord.samples_written,
        "faces": coord.faces_found, "worker": worker.address, "host": me["host"], "pid": me["pid"],
        "seconds": time.perf_counter() - t0,
        "took_over": None if took is None else f"pid {took.get('pid')} on {took.get('host')} ({took.get('worker')})",
        "config": {k: getattr(cfg_here, k) for k in (*COUNTS, "provider")},
    }
