"""The client side: connect, check every worker, submit one task per pending video,
merge the tasks' progress into the run's snapshots, heartbeat and history.
(See facecut.cluster for the design.)
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from facecut import __version__
from facecut.cluster.paths import PATH_MAP_ENV, PROBE, check_worker
from facecut.cluster.task import _cluster_workers, analyze_video
from facecut.config import AnalyzeConfig
from facecut.coordinator import AnalyzeResult
from facecut.errors import ConfigError, EnvironmentProblem
from facecut.fsio import write_json
from facecut.records import VideoInfo
from facecut.resume import ResumePlan, plan_run
from facecut.stats import DecoderStats, RingStats, RunStats
from facecut.telemetry import STATS_EVERY, Bookkeeping, ProgressLine, batch_progress, make_heartbeat
from facecut.workdir import WorkDir

log = logging.getLogger(__name__)

LOCAL_CONFIG = {
    # facecut's engine starts its own processes: a daemonic worker process may not.
    "distributed.worker.daemon": False,
    # A video whose worker dies twice is failed (Dask's default allows 3 deaths).
    "distributed.scheduler.allowed-failures": 1,
    # Hand a worker its next video only when it is free: a worker that dies then
    # holds just its in-flight video (queued ones would be charged a failure too).
    "distributed.scheduler.worker-saturation": 1.0,
    # The statistical profiler samples the coordinator's thread every 10 ms (~5 % measured).
    "distributed.worker.profile.enabled": False,
}


class ClusterError(EnvironmentProblem):
    """Dask missing, scheduler unreachable, or no workers."""


@contextmanager
def local_cluster(n: int, **kw) -> Iterator:
    """A ``LocalCluster`` of ``n`` single-threaded worker processes configured for
    facecut (non-daemonic workers, allowed-failures=1, no memory limit: the engine
    bounds its own memory); the config stays set while it lives (the nanny reads
    it again when it restarts a dead worker)."""
    import dask
    from distributed import LocalCluster

    with dask.config.set(LOCAL_CONFIG):
        # Scheduler, workers and dashboard listen on this machine only: a local
        # cluster is nobody else's business (the dashboard shows paths and logs).
        opts = {"n_workers": n, "threads_per_worker": 1, "processes": True, "memory_limit": 0,
                "host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"}
        with LocalCluster(**{**opts, **kw}) as cluster:
            yield cluster


@contextmanager
def connect(address: str, timeout: float = 60.0) -> Iterator:
    """A ``distributed.Client`` for ``ADDRESS`` or ``local:N``, with at least one worker."""
    try:
        from distributed import Client
    except ImportError as ex:
        raise ClusterError(f"--cluster needs Dask: pip install 'facecut[dask]' ({ex})") from ex
    if address.startswith("local:"):
        try:
            n = int(address[6:])
            assert n >= 1
        except (ValueError, AssertionError):
            raise ConfigError(f"--cluster local:N needs a worker count N >= 1, got {address!r}") from None
        with local_cluster(n) as cluster, Client(cluster) as client:
            yield client
        return
    try:
        client = Client(address, timeout=timeout)
    except (OSError, TimeoutError) as ex:
        raise ClusterError(f"cannot reach the Dask scheduler at {address}: {ex}") from ex
    with client:
        try:
            client.wait_for_workers(1, timeout=timeout)
        except TimeoutError:
            raise ClusterError(f"no Dask workers connected to {address} within {timeout:.0f}s") from None
        yield client


@dataclass
class ClusterResult(AnalyzeResult):
    """:class:`AnalyzeResult` plus what the cluster did: task summaries by video, workers."""

    tasks: dict[str, dict] = field(default_factory=dict)
    workers: dict[str, dict] = field(default_factory=dict)


def _failure(ex: BaseException) -> str:
    name = type(ex).__name__
    if name == "KilledWorker":
        last = getattr(ex, "last_worker", None)
        where = f" (last {getattr(last, 'address', last)})" if last is not None else ""
        return f"the worker process running it died twice{where}"
    return f"failed twice on the cluster: {ex}"


def _label(addr: str, host: str) -> str:
    return f"{host}:{addr.rsplit(':', 1)[-1]}"


def analyze_on_cluster(
    work: WorkDir | str | os.PathLike,
    cfg: AnalyzeConfig,
    address: str,
    *,
    pinned: Iterable[str] | None = None,
    on_stats: Callable[[RunStats], None] | None = None,
    on_video_done: Callable[[VideoInfo], None] | None = None,
    timeout: float = 60.0,
) -> ClusterResult:
    """Analyse every pending scanned video in ``work`` on the Dask cluster at
    ``address`` (``tcp://host:8786`` or ``local:N``), one task per video.

    Same skip/resume rules and result as :func:`facecut.coordinator.analyze`;
    ``on_video_done(info)`` and ``on_stats(snapshot)`` are called in this thread.
    ``pinned``: names of the counts (``decoders``, ``infer_procs``, ``batch``,
    ``infer_threads``, ``ring_slots``) the user set; the others come from each
    worker machine's bench profile. None: ``cfg`` as given everywhere.
    Raises ConfigError (naming worker and path) before anything is submitted
    when a worker cannot run the batch.
    """
    wd = work if isinstance(work, WorkDir) else WorkDir(Path(work))
    t0 = time.perf_counter()
    planner = plan_run(wd, cfg)  # exactly a local run's decisions (and its settings check)
    # A file changed since the scan is probed again here, as a local run does just
    # before its analysis, so the workers check the size the client now sees.
    todo = [vr for vr in planner.queue if planner.unchanged_or_reprobed(vr)]
    if not todo:
        return ClusterResult(planner.videos, 0.0, None)
    with connect(address, timeout) as client:
        batch = _Batch(client, wd, cfg, sorted(pinned) if pinned is not None else None, planner, todo,
                       on_stats, on_video_done, t0)
        try:
            batch.preflight()
            return batch.run()
        finally:
            batch.probe.unlink(missing_ok=True)


class _Batch:
    """The client side of one cluster analysis."""

    def __init__(self, client, wd: WorkDir, cfg: AnalyzeConfig, pinned, planner: ResumePlan, todo, on_stats,
                 on_video_done, t0: float) -> None:
        self.client, self.wd, self.cfg, self.pinned = client, wd, cfg, pinned
        self.planner, self.todo, self.on_stats, self.on_video_done, self.t0 = planner, todo, on_stats, on_video_done, t0
        self.token = uuid.uuid4().hex
        self.topic = f"facecut-{self.token[:12]}"
        self.probe = wd.logs_dir / PROBE.format(self.token[:12])
        self.input_dir = str(planner.input_dir)
        self.workers: dict[str, dict] = {}
        self.tasks: dict[str, dict] = {}
        self.live: dict[str, dict] = {}  # task key -> last event
        self.finished_keys: set[str] = set()
        self.by_key: dict = {}
        self.durations = {v.info.path: v.info.duration for v in planner.videos}
        self.warnings = planner.warnings
        self.samples = self.faces = 0
        self.snapshot: RunStats | None = None
        self.bookkeeping = Bookkeeping(wd)
        self._last_members = 0.0
        self.members: dict[str, str] = {}  # worker address -> host, refreshed every few seconds
        self.hosts: dict[str, str] = {}  # worker address -> its host name (from its own reports)

    def preflight(self) -> None:
        write_json(self.probe, {"token": self.token, "host": socket.gethostname(), "time": time.time()})
        files = [(v.info.path, v.info.size, v.info.raw_path) for v in self.todo]
        try:
            got = self.client.run(check_worker, str(self.wd.root), self.input_dir, self.token, files, self.cfg,
                                  self.pinned, on_error="return")
        except Exception as ex:  # a Dask/comm failure, reported as such
            raise ClusterError(f"could not check the workers: {ex}") from ex
        problems = []
        for addr, r in sorted(got.items()):
            if isinstance(r, BaseException):
                problems.append(f"worker {addr}: cannot run facecut's check ({type(r).__name__}: {r}); "
                                f"install facecut {__version__} with the [dask] extra on that machine")
                continue
            self.workers[addr] = r
            self.hosts[addr] = r["host"]
            if r["version"] != __version__:
                problems.append(f"worker {addr} ({r['host']}): facecut {r['version']}, this client {__version__}")
            problems += [f"worker {addr} ({r['host']}) {p}" for p in r["problems"]]
            log.info("worker %s (%s): %s", addr, r["host"], ", ".join(f"{k}={v}" for k, v in r["config"].items()))
        if problems:
            raise ConfigError(
                "the cluster cannot run this batch (nothing was submitted):\n  " + "\n  ".join(problems)
                + "\nEvery worker must see the input and work folders at the same paths, or map them with "
                f"{PATH_MAP_ENV} on the worker (README: More than one machine)."
            )

    def run(self) -> ClusterResult:
        done_q: queue.Queue = queue.Queue()
        self.client.subscribe_topic(self.topic, self._on_event)
        futures = []
        try:
            for i, vr in enumerate(self.todo):
                fut = self.client.submit(
                    analyze_video, str(self.wd.root), self.input_dir, vr.info.path, vr.info.size, self.cfg,
                    self.pinned, self.token, self.topic, vr.info.raw_path,
                    key=f"facecut-analyze-{vr.key}-{self.token[:8]}",
                    retries=1, pure=False, priority=len(self.todo) - i,
                )
                self.by_key[fut.key] = vr
                futures.append(fut)
                fut.add_done_callback(done_q.put)
            left = len(futures)
            while left:
                try:
                    fut = done_q.get(timeout=STATS_EVERY)
                except queue.Empty:
                    fut = None
                if fut is not None:
                    left -= 1
                    self._finished(fut)
                self._publish()
            self._publish(final=True)
        finally:
            pending = [f for f in futures if not f.done()]
            if pending:  # Ctrl-C or an error here: running tasks see the cancel and stop cleanly
                self.client.cancel(pending)
            try:
                self.client.unsubscribe_topic(self.topic)
            except Exception as ex:  # noqa: BLE001 - the scheduler may be gone already
                log.debug("unsubscribe %s: %s", self.topic, ex)
            self.bookkeeping.close()
        return ClusterResult(self.planner.videos, time.perf_counter() - self.t0, self.snapshot,
                             tasks=self.tasks, workers=self.workers)

    def _on_event(self, event) -> None:  # on the client's event loop thread
        msg = event[1]
        if isinstance(msg, dict) and msg.get("key") not in self.finished_keys:
            self.live[msg["key"]] = msg

    def _finished(self, fut) -> None:
        vr = self.by_key[fut.key]
        self.finished_keys.add(fut.key)
        self.live.pop(fut.key, None)
        if fut.status == "finished":
            s = fut.result()
            self.tasks[vr.info.path] = s
            vr.status, vr.reason, vr.state.samples = s["status"], s["reason"], s["samples"]
            self.samples += s["samples_written"]
            self.faces += s["faces"]
            if s["took_over"]:
                self.warnings.append(f"{vr.info.path}: resumed on {s['worker']} after {s['took_over']}")
            if vr.status != "failed" and self.on_video_done is not None:
                self.on_video_done(vr.info)
            if vr.status != "ok":
                self._warn(f"{vr.info.path}: {vr.status}: {vr.reason}")
        else:
            try:
                ex = fut.exception() if fut.status == "error" else None
            except Exception as got:  # noqa: BLE001 - a lost future raises its own error
                ex = got
            vr.status = "failed"
            vr.reason = _failure(ex) if ex is not None else "cancelled"
            self.tasks[vr.info.path] = {"video": vr.info.path, "status": "failed", "reason": vr.reason}
            self._warn(f"{vr.info.path}: {vr.reason} (left pending: run again to retry)")

    def _warn(self, text: str) -> None:
        log.warning("%s", text)
        self.warnings.append(text)

    def _publish(self, final: bool = False) -> None:
        now = time.perf_counter()
        elapsed = now - self.t0
        decs, infs, ring, running, bottlenecks = [], [], RingStats(), {}, []
        live_samples = live_faces = 0
        busy = set()
        for key, msg in list(self.live.items()):
            if key in self.finished_keys:
                continue
            label = _label(msg["worker"], msg["host"])
            busy.add(msg["worker"])
            self.hosts[msg["worker"]] = msg["host"]
            if msg["snap"] is None:  # the task started; its coordinator is starting up
                decs.append(DecoderStats(name=f"{label} (starting)", video=msg["video"],
                                         duration=self.durations.get(msg["video"], 0.0)))
                continue
            snap = msgspec.convert(msg["snap"], RunStats)
            for d in snap.decoders:
                decs.append(msgspec.structs.replace(d, name=f"{label} {d.name}"))
                if d.video:
                    running[d.video] = min(d.position, d.duration)
            infs += [msgspec.structs.replace(i, name=f"{label} {i.name}") for i in snap.infer]
            for f in ("slots", "free", "at_decoders", "ready", "at_infer"):  # the rings of all workers
                setattr(ring, f, getattr(ring, f) + getattr(snap.ring, f))
            ring.slot_mib = max(ring.slot_mib, snap.ring.slot_mib)
            live_samples += snap.samples_written
            live_faces += snap.faces_found
            bottlenecks.append(f"{label}: {snap.bottleneck}")
            self.warnings.extend(f"{label}: {w}" for w in snap.warnings if f"{label}: {w}" not in self.warnings)
        if now - self._last_members >= 5.0:  # workers come and go (a dead one is restarted elsewhere)
            self._last_members = now
            try:
                self.members = {a: self.hosts.get(a) or w.get("host", "?")
                                for a, w in _cluster_workers(self.client).items()}
            except Exception as ex:  # noqa: BLE001 - cosmetic: keep the last list
                log.debug("scheduler_info: %s", ex)
        for addr, host in sorted(self.members.items()):
            if addr not in busy:
                decs.append(DecoderStats(name=f"{_label(addr, host)} (idle)"))
        videos = self.planner.videos
        for vr in videos:
            if vr.status == "pending" and vr.info.path in running:
                vr.status = "running"
        snap = RunStats(
            time=time.time(), elapsed=elapsed, decoders=decs, infer=infs, ring=ring,
            bottleneck="; ".join(bottlenecks) or ("finished" if final else "waiting for workers"),
            **batch_progress(videos, self.planner.done_seconds_before, sum(running.values()), elapsed),
            samples_written=self.samples + live_samples, faces_found=self.faces + live_faces,
            warnings=list(self.warnings)[-8:],
        )
        self.snapshot = snap
        if self.on_stats is not None:
            self.on_stats(snap)
        line = ProgressLine(time=snap.time, video_seconds=snap.video_seconds_done, samples=snap.samples_written)
        self.bookkeeping.tick(now, line, None if final else lambda: make_heartbeat(
            {a: w["pid"] for a, w in self.workers.items()},
            {f"{m['worker']} {k}": m["video"] for k, m in list(self.live.items()) if k not in self.finished_keys},
            cluster=str(getattr(self.client.scheduler, "address", "")),
        ))
