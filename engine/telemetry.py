"""Run telemetry: the batch's progress numbers, and the two files that let
``facecut status`` follow a run from another terminal.

* ``WORK/heartbeat.json`` (:class:`Heartbeat`): who runs the batch (pid, host,
  worker processes, what each decodes), rewritten every ``HEARTBEAT_EVERY``
  seconds and removed at the end; older than ``HEARTBEAT_STALE`` means dead.
* ``WORK/logs/progress.jsonl`` (:class:`ProgressLine`): a line every
  ``PROGRESS_EVERY`` seconds, the history ``status`` computes its rates from.

A local run (facecut.coordinator) and the cluster client (facecut.cluster) write
both through :class:`Bookkeeping`, and compute speed and ETA with
:func:`batch_progress`; ``status`` reads them with :func:`read_heartbeat` and
:func:`read_rates`.
"""

from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING, Callable, Iterable

import msgspec

from facecut.fsio import write_json
from facecut.workdir import WorkDir
from facecut.procs import pid_alive
from facecut.stats import DecoderStats, InferStats, RingStats

if TYPE_CHECKING:
    from facecut.procs import Worker

STATS_EVERY = 0.25  # s between snapshots of a run
HEARTBEAT_EVERY = 2.0  # s between heartbeat rewrites
PROGRESS_EVERY = 10.0  # s between progress lines
HEARTBEAT_STALE = 30.0  # s without a heartbeat: the run is not alive
RATE_WINDOW = 300.0  # s of progress history the rates are computed over


class Heartbeat(msgspec.Struct, kw_only=True):
    pid: int
    host: str
    time: float  # unix time of this beat
    stage: str = "analyze"
    workers: dict[str, int] = {}  # worker name (or cluster address) -> pid
    running: dict[str, str] = {}  # worker name -> the video it works on
    cluster: str = ""  # the scheduler's address when the batch runs on a cluster


class ProgressLine(msgspec.Struct, kw_only=True):
    time: float  # unix time
    video_seconds: float  # video seconds analysed so far (finished plus running)
    samples: int  # samples written in this run


def make_heartbeat(workers: dict[str, int], running: dict[str, str], cluster: str = "") -> Heartbeat:
    return Heartbeat(pid=os.getpid(), host=socket.gethostname(), time=time.time(), workers=workers,
                     running=running, cluster=cluster)


class Bookkeeping:
    """Writes a run's heartbeat and progress history at their own pace."""

    def __init__(self, work: WorkDir) -> None:
        self.work = work
        self._last_heartbeat = self._last_progress = 0.0
        self._enc = msgspec.json.Encoder()

    def tick(self, now: float, line: ProgressLine, heartbeat: Callable[[], Heartbeat] | None) -> None:
        """``now``: perf_counter; ``heartbeat`` is only called when one is due (None: no beat)."""
        if now - self._last_progress >= PROGRESS_EVERY:
            self._last_progress = now
            with open(self.work.logs_dir / "progress.jsonl", "ab") as f:
                f.write(self._enc.encode(line) + b"\n")
        if heartbeat is not None and now - self._last_heartbeat >= HEARTBEAT_EVERY:
            self._last_heartbeat = now
            write_json(self.work.heartbeat, heartbeat())

    def close(self) -> None:
        self.work.heartbeat.unlink(missing_ok=True)


def read_heartbeat(work: WorkDir) -> tuple[bool, Heartbeat | None, float | None]:
    """(alive, heartbeat, age in seconds); a heartbeat of a process that is gone
    from this host is not alive, however young."""
    try:
        hb = msgspec.json.decode(work.heartbeat.read_bytes(), type=Heartbeat)
    except (FileNotFoundError, msgspec.DecodeError, msgspec.ValidationError):
        return False, None, None
    age = time.time() - hb.time
    alive = age < HEARTBEAT_STALE
    if alive and hb.host == socket.gethostname() and hb.pid:
        alive = pid_alive(hb.pid)
    return alive, hb, age


def read_rates(work: WorkDir) -> tuple[float | None, float | None]:
    """(video seconds per second, samples per second) over the last ``RATE_WINDOW``
    seconds of the progress history; None where there is too little of it."""
    path = work.logs_dir / "progress.jsonl"
    try:
        lines = path.read_bytes().splitlines()[-200:]
    except FileNotFoundError:
        return None, None
    pts = []
    dec = msgspec.json.Decoder(ProgressLine)
    for ln in lines:
        try:
            p = dec.decode(ln)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue  # a torn last line of a killed run
        pts.append((p.time, p.video_seconds, p.samples))
    if len(pts) < 2:
        return None, None
    end = pts[-1]
    start = next((p for p in pts if end[0] - p[0] <= RATE_WINDOW), pts[0])
    dt = end[0] - start[0]
    if dt <= 0:
        return None, None
    return (end[1] - start[1]) / dt, (end[2] - start[2]) / dt


def batch_progress(videos: Iterable, done_seconds_before: float, running_s: float, elapsed: float) -> dict:
    """RunStats' batch fields from the videos of a run (``.status``, ``.info.duration``):
    ``running_s`` video seconds analysed of the running ones, ``done_seconds_before``
    those finished by earlier runs (not this run's speed)."""
    videos = list(videos)
    total = sum(v.info.duration for v in videos)
    done_s = sum(v.info.duration for v in videos if v.status in ("ok", "partial", "failed"))
    this_run = done_s - done_seconds_before + running_s
    speed = this_run / elapsed if elapsed > 0 else 0.0
    left = max(0.0, total - done_s - running_s)
    return dict(
        videos_total=len(videos),
        videos_done=sum(v.status == "ok" for v in videos),
        videos_partial=sum(v.status == "partial" for v in videos),
        videos_failed=sum(v.status == "failed" for v in videos),
        video_seconds_total=total, video_seconds_done=done_s + running_s, video_seconds_this_run=this_run,
        speed=speed, eta_s=(left / speed) if speed > 0 else None,
    )


def bottleneck(decs: list[DecoderStats], infs: list[InferStats], elapsed: float) -> str:
    """Which side of the ring waits for the other, in plain words."""
    if elapsed < 2 or not decs or not infs:
        return "starting"
    blocked = sum(d.blocked_s for d in decs) / len(decs)
    starved = sum(i.starved_s for i in infs) / len(infs)
    if blocked > starved and blocked > 0.2 * elapsed:
        return "inference-bound (decoders wait for free ring slots)"
    if starved > blocked and starved > 0.2 * elapsed:
        return "decode-bound (inference waits for frames)"
    return "balanced"


def decoder_stats(w: Worker, jobs: dict) -> DecoderStats:
    """A decoder's line of a snapshot (``w.state``: protocol.DecoderState; ``jobs``: job id -> VideoRun)."""
    ds = DecoderStats(name=w.name, blocked_s=w.state.blocked, cpu_s=w.state.cpu)
    vr = jobs.get(w.state.job) if w.state.job is not None else None
    if vr is not None:
        ds.video, ds.position, ds.duration = vr.info.path, vr.position, vr.info.duration
        p = vr.last_stat
        if p is not None and p.job_id == vr.job.job_id:
            ds.frames, ds.samples = p.frames, p.samples
            ds.decode_fps = p.frames / p.elapsed if p.elapsed > 0 else 0.0
            ds.sample_fps = p.samples / p.elapsed if p.elapsed > 0 else 0.0
    return ds


def infer_stats(w: Worker, now: float, batch: int) -> InferStats:
    """An inference process's line of a snapshot (``w.state``: protocol.InferState)."""
    s = w.state
    span = (now - s.first) if s.first else 0.0
    m = s.model
    return InferStats(
        name=w.name, model=m.name if m else "", provider=m.provider if m else "", frames=s.frames,
        faces=s.faces, batches=s.batches, fps=s.frames / span if span > 0 else 0.0,
        faces_per_s=s.faces / span if span > 0 else 0.0,
        batch_fill=(s.frames / s.batches / batch) if s.batches else 0.0,
        busy_s=s.busy, starved_s=s.starved, cpu_s=s.cpu,
    )


def ring_stats(ring, free: int, ready: int, decoders: list[Worker], infers: list[Worker]) -> RingStats:
    """Where the frame ring's slots are (``ring``: the FrameRing, None before it exists)."""
    return RingStats(
        slots=ring.slots if ring else 0, free=free, at_decoders=sum(len(w.state.held) for w in decoders),
        ready=ready, at_infer=sum(len(w.state.out) for w in infers),
        slot_mib=(ring.slot_bytes / 2**20) if ring else 0.0,
    )
