"""Scale-out over a Dask cluster: one task per video, each running facecut's own
single-machine engine on a worker (optional extra ``facecut[dask]``).

The client (``facecut run ... --cluster ADDRESS``) plans the batch exactly as a
local run does (same skip/resume rules: :meth:`Coordinator.plan`), checks on
every worker that it can run it (:func:`check_worker`: same work folder, input
files, non-daemonic process, same facecut), and only then submits one task per
pending video. A task (:func:`analyze_video`) runs
``Coordinator(work, cfg_for_this_machine, only=[rel], bookkeeping=False)``: its
own decoder processes, ring and inference processes, with the worker machine's
execution provider and saved bench profile for the counts the client did not
pin. Submission, retries and worker discovery are Dask's; facecut adds no
protocol of its own (progress rides Dask's structured events,
``Worker.log_event`` / ``Client.subscribe_topic``).

Failures. Dask retries a task that raised once (``retries=1``) and reschedules
a task whose worker died (the scheduler's ``allowed-failures``; ``local:N`` sets
it to 1, so both mean "fails twice"). Per-video problems (unreadable or corrupt
media, a decoder crash) are caught by the engine on the worker and written to
the log's Done record and marker exactly as a local run writes them. What still
fails a task twice is the machine, not the video (a worker killed or lost, a
model or provider missing there, a path it cannot see): such a video is
reported failed *for this run* with its reason (exit code 3) but deliberately
left pending on disk, so re-running the command retries it and resumes its log.
The client never writes a video's log: the only writer is the task that holds
the video's lease.

Single writer. One task per video; a task writes a video's log only while it
holds ``WORK/analysis/<key>.lease`` (created with ``O_EXCL``: host, pid, process
start time, worker address, token). A retried task takes the lease over only
from a holder that is gone: same host and the process has exited, or a worker
the scheduler no longer lists (or that now runs another process), or a lease
not refreshed for :data:`LEASE_TTL` seconds. Otherwise it fails clearly
(:class:`LeaseHeld`). Taking over from another machine first *fences* the log:
it is copied and renamed over itself, so a zombie still holding the old file
writes into an orphaned inode (POSIX, NFS), or the rename fails because the
file is still open (Windows, SMB) and the task refuses. The holder re-checks its
token every second and stops its coordinator when the lease was taken (what
it writes in between goes to the orphaned file; a completion marker it might
write by name is rewritten by the new holder, and a resume trusts the log's
Done record, never a marker alone). Resuming
a partial log is then the ordinary local resume: the writer truncates a torn
tail on open and continues after the last committed sample.

Paths. All machines must see the input and work folders, at the same paths or
through ``FACECUT_PATH_MAP`` set on the worker (``CLIENT_PREFIX=WORKER_PREFIX``
pairs separated by ``;``, e.g. ``Z:\\media=/mnt/media`` on a Linux worker of a
Windows client).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import queue
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from facecut import __version__
from facecut.config import AnalyzeConfig
from facecut.coordinator import AnalyzeResult, Coordinator
from facecut.errors import ConfigError, EnvironmentProblem, FacecutError
from facecut.fsio import replace_with_retry, video_key, write_json
from facecut.workdir import WorkDir
from facecut.profile import COUNTS, machine_config
from facecut.records import VideoInfo, os_name
from facecut.resume import ResumePlan, plan_run
from facecut.stats import DecoderStats, RingStats, RunStats
from facecut.telemetry import STATS_EVERY, Bookkeeping, ProgressLine, batch_progress, make_heartbeat

log = logging.getLogger(__name__)

LEASE_TTL = 120.0  # s without a refresh after which a lease is stale (clocks must agree within this)
PATH_MAP_ENV = "FACECUT_PATH_MAP"
PROBE = "cluster-probe-{}.json"  # in WORK/logs, per run: proves a worker sees *this* work folder
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
_EVENT_EVERY = 1.0  # s between a task's progress events


class ClusterError(EnvironmentProblem):
    """Dask missing, scheduler unreachable, or no workers."""


class PathNotVisible(ConfigError):
    """A worker cannot see a path of the batch (raised on the worker)."""


class LeaseHeld(FacecutError):
    """Another live process is analysing this video."""


class LeaseLost(FacecutError):
    """Another task took this video's lease over: stop writing."""


class TaskCancelled(FacecutError):
    """The client cancelled the task (Ctrl-C, or the client went away)."""


# --------------------------------------------------------------------------- paths


def path_map(env: str | None = None) -> list[tuple[str, str]]:
    """``FACECUT_PATH_MAP`` of this machine: ``[(client_prefix, local_prefix), ...]``."""
    text = os.environ.get(PATH_MAP_ENV, "") if env is None else env
    pairs = []
    for item in filter(None, (s.strip() for s in text.split(";"))):
        src, sep, dst = item.partition("=")
        if not sep or not src or not dst:
            raise ConfigError(
                f"{PATH_MAP_ENV}: expected CLIENT_PREFIX=WORKER_PREFIX pairs separated by ';', got {item!r}"
            )
        pairs.append((src, dst))
    return pairs


def _norm(p: str) -> str:
    p = p.replace("\\", "/")
    return p.rstrip("/") or "/"


def local_path(path: str, mapping: list[tuple[str, str]] | None = None) -> Path:
    """``path`` as the client sees it, as this machine sees it (first matching prefix
    wins; Windows-looking prefixes compare case-insensitively)."""
    a = _norm(str(path))
    for src, dst in path_map() if mapping is None else mapping:
        b = _norm(src)
        win = ":" in b[:3] or b.startswith("//")
        ca, cb = (a.casefold(), b.casefold()) if win else (a, b)
        if ca == cb or ca.startswith(cb if cb.endswith("/") else cb + "/"):
            return Path(dst).joinpath(*[x for x in a[len(b):].split("/") if x])
    return Path(path)


# --------------------------------------------------------------------------- checks (on the worker)


def _see_work(work: str, token: str) -> tuple[Path, str | None]:
    """(local work folder, problem or None): the folder must hold this run's probe."""
    w = local_path(work)
    where = work if str(w) == work else f"{work} (here {w})"
    try:
        probe = json.loads((w / "logs" / PROBE.format(token[:12])).read_text())
    except FileNotFoundError:
        if not w.is_dir():
            return w, f"cannot see the work folder {where}: no such folder"
        return w, f"sees another folder at {where}: this run's probe file is not there (not the shared folder)"
    except (OSError, ValueError) as ex:
        return w, f"cannot read the work folder {where}: {ex}"
    if probe.get("token") != token:
        return w, f"sees another folder at {where}: its probe file belongs to another run"
    return w, None


def _see_inputs(input_dir: str, files: list[tuple[str, int, str]]) -> tuple[Path, str | None]:
    """``files``: (VideoInfo.path, size, VideoInfo.raw_path) of each input."""
    inp = local_path(input_dir)
    where = input_dir if str(inp) == input_dir else f"{input_dir} (here {inp})"
    if not inp.is_dir():
        return inp, f"cannot see the input folder {where}"
    bad = []
    for rel, size, raw in files:
        try:
            got = (inp / os_name(rel, raw)).stat().st_size
        except OSError:
            got = None
        if got != size:
            bad.append(rel if got is None else f"{rel} ({got} bytes, scanned {size})")
    if bad:
        return inp, f"cannot see {len(bad)} of {len(files)} input video(s) in {where}: {', '.join(bad[:3])}"
    return inp, None


def check_worker(work: str, input_dir: str, token: str, files: list[tuple[str, int]],
                 cfg: AnalyzeConfig, pinned: list[str] | None) -> dict:
    """Run on every worker (``Client.run``) before any task: what this worker would
    use, and every reason it cannot run the batch (``problems``, empty when fine)."""
    problems = []
    if multiprocessing.current_process().daemon:
        problems.append("runs as a daemonic process and cannot start facecut's decoder and inference "
                        "processes: start it with DASK_DISTRIBUTED__WORKER__DAEMON=False")
    try:
        path_map()
        mapping_ok = True
    except ConfigError as ex:
        problems.append(str(ex))
        mapping_ok = False
    if mapping_ok:
        w, why = _see_work(work, token)
        if why:
            problems.append(why)
        else:
            probe = w / "analysis" / f".probe-{socket.gethostname()}-{os.getpid()}"
            try:
                probe.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                os.close(fd)
                probe.unlink()
            except OSError as ex:
                problems.append(f"cannot write in the work folder {w}: {ex}")
        _, why = _see_inputs(input_dir, files)
        if why:
            problems.append(why)
        if cfg.model_dir and not local_path(cfg.model_dir).is_dir():
            problems.append(f"cannot see the model folder {cfg.model_dir}")
    here = cfg
    try:
        here = machine_config(cfg, pinned)
    except FacecutError as ex:
        problems.append(f"its bench profile is unusable: {ex}")
    return {"host": socket.gethostname(), "pid": os.getpid(), "version": __version__, "problems": problems,
            "config": {k: getattr(here, k) for k in (*COUNTS, "provider")}}


# --------------------------------------------------------------------------- the lease


def _proc_created(pid: int) -> float | None:
    """Start time of process ``pid`` on this machine; None when it is gone (or a zombie)."""
    import psutil  # a dependency of distributed

    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return None
        return p.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def holder_alive(holder: dict, age: float, registered: Callable[[dict], bool] | None = None) -> str | None:
    """Why the lease ``holder`` (written ``age`` s ago) may still be writing, or None
    when it is certainly or presumably gone. ``registered(holder)``: whether the
    scheduler still lists its worker with that process (None: unknown, assume so)."""
    if age > LEASE_TTL:
        return None
    who = f"pid {holder.get('pid')} on {holder.get('host')} (worker {holder.get('worker')})"
    if holder.get("host") == socket.gethostname():
        created = _proc_created(int(holder.get("pid", 0)))
        if created is None or abs(created - float(holder.get("created", created))) > 1.0:
            return None  # exited, or the pid now belongs to another process
        return f"{who} is alive and refreshed the lease {age:.0f}s ago"
    if registered is not None and not registered(holder):
        return None
    return f"{who} is still in the cluster and refreshed the lease {age:.0f}s ago"


class Lease:
    """``WORK/analysis/<key>.lease``: who may write this video's log."""

    def __init__(self, path: Path, me: dict) -> None:
        self.path, self.me = Path(path), me
        self.held = False
        self.took_over: dict | None = None

    def _read(self) -> tuple[dict | None, float]:
        try:
            age = time.time() - self.path.stat().st_mtime
            text = self.path.read_text()
        except FileNotFoundError:
            return None, -1.0
        except OSError:
            return {}, 0.0
        try:
            return json.loads(text), age
        except ValueError:
            return {}, age  # being written (or its writer died right after creating it)

    def acquire(self, registered: Callable[[dict], bool] | None = None) -> None:
        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder, age = self._read()
                if age < 0:
                    continue  # released meanwhile
                if not holder and age < 10:
                    time.sleep(0.2)  # created, content not written yet
                    continue
                why = holder_alive(holder or {}, age, registered)
                if why:
                    raise LeaseHeld(f"{self.me['video']} is being analysed by {why}; if that process is gone, "
                                    f"wait {LEASE_TTL:.0f}s or delete {self.path}") from None
                tomb = self.path.with_name(f"{self.path.name}.stale-{self.me['token']}")
                try:
                    os.rename(self.path, tomb)  # only one contender wins the rename
                except FileNotFoundError:
                    continue
                tomb.unlink(missing_ok=True)
                self.took_over = holder or {}
                continue
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps({**self.me, "acquired": time.time()}))
                f.flush()
                os.fsync(f.fileno())
            self.held = True
            return
        raise LeaseHeld(f"could not take the lease {self.path} (contended)")

    def check(self, refresh: bool) -> None:
        """Raise :class:`LeaseLost` unless this task still holds the lease; touch it."""
        holder, _ = self._read()
        if holder is not None and holder == {}:
            return  # unreadable for a moment: check again next time
        if holder is None or holder.get("token") != self.me["token"]:
            self.held = False
            raise LeaseLost(f"{self.me['video']}: another task took the lease over; stopping this one")
        if refresh:
            os.utime(self.path)

    def release(self) -> None:
        if self.held:
            holder, _ = self._read()
            if holder and holder.get("token") == self.me["token"]:
                self.path.unlink(missing_ok=True)
            self.held = False


def fence(log_path: Path) -> None:
    """Copy the log and rename the copy over it, so a process still holding the old
    file cannot add to the one we resume (raise LeaseHeld where the OS refuses)."""
    if not log_path.exists():
        return
    tmp = log_path.with_name(f".{log_path.name}.fence-{os.getpid()}")
    shutil.copyfile(log_path, tmp)
    try:
        replace_with_retry(tmp, log_path)
    except PermissionError as ex:
        tmp.unlink(missing_ok=True)
        raise LeaseHeld(f"{log_path} is still open in another process; not taking it over") from ex


# --------------------------------------------------------------------------- the task (on a worker)


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

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs" / f"{socket.gethostname()}-{os.getpid()}"


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


# --------------------------------------------------------------------------- the client


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
