"""The coordinator: owns one analysis run.

It creates the frame ring (and alone unlinks it), spawns decoder and inference
processes, moves slot ids between them, writes every video's log (one writer
per file, records in deterministic order), supervises the workers and
publishes stats snapshots. Only small tuples cross the pipes; pixels stay in
shared memory.

Slot life cycle::

    free pool --("slot")--> decoder --("ready")--> ready queue --("batch")--> inference
        ^                                                                        |
        +----------------------------("release")---------------------------------+

Resume: a video's log is a committed prefix (header, samples in grid order,
cuts before the sample that carried them). A new job continues after the last
committed sample: one seek to the keyframe before the last logged cut (the
shot detector restarts at that cut, exactly as it was right after detecting
it), no further seeks.
"""

from __future__ import annotations

import json
import logging
import multiprocessing.connection
import os
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import msgspec

from facecut.config import AnalyzeConfig
from facecut.decode import capped_size, decoder_main
from facecut.errors import (
    EXIT_OK,
    EXIT_SOME_FAILED,
    ConfigError,
    FacecutError,
    LogCorruption,
    ModelError,
)
from facecut.fsio import WorkDir, read_json, replace_with_retry, video_key, write_json
from facecut.infer import infer_main
from facecut.logio import LogWriter, read_first, read_records
from facecut.procs import Worker, cpu_count, start_worker, stop_workers
from facecut.records import (
    SCHEMA,
    Cut,
    DecodeJob,
    Done,
    LogHeader,
    LogRecord,
    Sample,
    VideoDone,
    VideoInfo,
)
from facecut.ring import FrameRing, remove_stale_segments
from facecut.scan import load_scan, probe
from facecut.stats import DecoderStats, InferStats, RingStats, RunStats
from facecut.track import shots_from_cuts

log = logging.getLogger(__name__)

_STATS_EVERY = 0.25  # s between snapshots
_HEARTBEAT_EVERY = 2.0
_PROGRESS_EVERY = 10.0
_DECODER_CREDIT = 2  # free slots a decoder may hold
_MAX_INFER_RESTARTS = 10  # deaths in one run before it gives up (a broken model or machine)


# --------------------------------------------------------------------------- process counts


def on_gpu(provider: str) -> bool:
    """Whether inference runs on a GPU provider (then one process, and the CPU is the decoders')."""
    if provider in ("dml", "cuda"):
        return True
    if provider == "auto":
        try:
            import onnxruntime as ort

            avail = ort.get_available_providers()
            return "DmlExecutionProvider" in avail or "CUDAExecutionProvider" in avail
        except ImportError:
            return False
    return False


def infer_processes(cfg: AnalyzeConfig) -> int:
    """Inference processes of a run: as configured, else 1 on a GPU (DirectML must not
    run sessions concurrently) and one single-thread model per core on CPU, below the
    decoders' priority (measured on 2 cores: 1 decoder + 2 models 14.1 s, + 1 model 17.9 s)."""
    if cfg.infer_procs:
        return cfg.infer_procs
    return 1 if on_gpu(cfg.provider) else cpu_count()


# --------------------------------------------------------------------------- log state


@dataclass
class LogState:
    """What an existing log says about a video."""

    header: LogHeader | None = None
    samples: int = 0
    last_k: int = -1
    last_pts: int | None = None
    last_cut: Cut | None = None
    cuts: list[Cut] = field(default_factory=list)
    done: Done | None = None
    monotonic: bool = True  # sample pts increase with time (seek-resume is safe)


def read_log_state(path: Path) -> LogState:
    st = LogState()
    if not path.exists():
        return st
    prev_pts = None
    for rec in read_records(path, LogRecord):
        if isinstance(rec, Sample):
            st.samples += 1
            st.last_k = rec.k
            if prev_pts is not None and rec.pts <= prev_pts:
                st.monotonic = False
            prev_pts = st.last_pts = rec.pts
        elif isinstance(rec, Cut):
            st.cuts.append(rec)
            st.last_cut = rec
        elif isinstance(rec, LogHeader):
            st.header = rec
        elif isinstance(rec, Done):
            st.done = rec
    return st


def finished_state(work: WorkDir, key: str) -> LogState | None:
    """A finished video's state from its completion marker and the log's first
    frame, without reading its records (a batch of thousands of finished videos
    resumes in moments); None when there is no marker (read the log)."""
    done_path = work.done_path(key)
    if not done_path.exists():
        return None
    try:
        marker = read_json(done_path, VideoDone)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None
    header = read_first(work.log_path(key), LogRecord)
    if not isinstance(header, LogHeader):
        return None
    done = Done(status=marker.status, reason=marker.reason, samples=marker.samples, duration=marker.duration)
    return LogState(header=header, samples=marker.samples, done=done)


# --------------------------------------------------------------------------- per-video run state


@dataclass(eq=False)
class VideoRun:
    info: VideoInfo
    key: str
    log_path: Path
    state: LogState
    writer: LogWriter | None = None
    job: DecodeJob | None = None
    decoder: Worker | None = None
    next_n: int = 0  # next sample number (of the current job) to write
    pending: dict = field(default_factory=dict)  # n -> [cuts, payload | None, n_faces, k, pts]
    decoded: tuple | None = None  # the decoder's "done" message for the current job
    t0: float | None = None
    status: str = "pending"  # pending | running | ok | partial | failed | skipped
    reason: str = ""
    frames: int = 0
    errors: int = 0
    position: float = 0.0
    last_stat: tuple = ()
    infer_deaths: int = 0  # inference processes that died with this video's samples in hand


@dataclass
class AnalyzeResult:
    videos: list[VideoRun]
    elapsed: float
    stats: RunStats | None

    @property
    def failed(self) -> list[VideoRun]:
        return [v for v in self.videos if v.status == "failed"]

    @property
    def exit_code(self) -> int:
        return EXIT_SOME_FAILED if any(v.status in ("failed", "partial") for v in self.videos) else EXIT_OK


# --------------------------------------------------------------------------- the run


class Coordinator:
    def __init__(
        self,
        work: WorkDir,
        cfg: AnalyzeConfig,
        on_stats: Callable[[RunStats], None] | None = None,
        on_video_done: Callable[[VideoInfo], None] | None = None,
        *,
        only: list[str] | None = None,
        bookkeeping: bool = True,
    ):
        self.work = work.ensure()
        self.cfg = cfg
        self.on_stats = on_stats
        self.on_video_done = on_video_done
        # only: analyse just these relative paths (a cluster task is one video);
        # bookkeeping: write the heartbeat and progress history (off inside a
        # cluster task: the client that owns the batch writes them).
        self.only = set(only) if only is not None else None
        self.bookkeeping = bookkeeping
        self.scan = load_scan(work)
        self.input_dir = Path(self.scan.input_dir)
        self.videos: list[VideoRun] = []
        self.queue: deque[VideoRun] = deque()
        self.decoders: list[Worker] = []
        self.infers: list[Worker] = []
        self.ring: FrameRing | None = None
        self.free: deque[int] = deque()
        self.ready: deque[tuple] = deque()  # (slot, seq, job_id, n, k, pts, t, scale, t_ready)
        self.jobs: dict[int, VideoRun] = {}
        self.next_job_id = 1
        self.warnings: deque[str] = deque(maxlen=8)
        self.model_info: tuple | None = None
        self.infer_restarts = 0
        self.t_start = time.perf_counter()
        self.samples_written = 0
        self.faces_found = 0
        self.done_seconds_before = 0.0
        self._last_stats = 0.0
        self._last_heartbeat = 0.0
        self._last_progress = 0.0
        self.snapshot: RunStats | None = None

    # ------------------------------------------------------------------ setup

    def plan(self) -> None:
        """Decide, per scanned video, whether it is done, resumes, or starts."""
        cfg = self.cfg
        for info in self.scan.videos:
            if info.status != "ok" or (self.only is not None and info.path not in self.only):
                continue
            key = video_key(info.path)
            path = self.work.log_path(key)
            try:
                state = finished_state(self.work, key) or read_log_state(path)
            except LogCorruption as ex:
                raise LogCorruption(f"{ex} (move the file away to re-analyse {info.path})") from ex
            vr = VideoRun(info=info, key=key, log_path=path, state=state)
            self.videos.append(vr)
            h = state.header
            if h is not None:
                if h.fingerprint != info.fingerprint:
                    self._warn(f"{info.path}: file changed since it was analysed; starting it again")
                    self._set_aside(path, "changed")
                    vr.state = LogState()
                else:
                    self._check_params(info, h)
            if vr.state.done is not None:
                if not self.work.done_path(key).exists():  # killed between the Done record and the marker
                    self._write_markers(vr, vr.state.done)
                if vr.state.done.status == "failed" and cfg.retry_failed:
                    self._set_aside(path, "failed")
                    vr.state = LogState()
                else:
                    vr.status = vr.state.done.status
                    vr.reason = vr.state.done.reason
                    self.done_seconds_before += info.duration
                    continue
            self.queue.append(vr)

    def _check_params(self, info: VideoInfo, h: LogHeader) -> None:
        cfg = self.cfg
        want = {
            "fps": cfg.fps,
            "max_side": cfg.max_side,
            "model": cfg.model,
            "model_params": cfg.model_params(),
            "detector": cfg.detector,
            "detector_params": cfg.detector_params(),
        }
        got = {k: getattr(h, k) for k in want}
        diff = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
        if diff:
            lines = "; ".join(f"{k}: logged {a!r}, asked {b!r}" for k, (a, b) in diff.items())
            raise ConfigError(
                f"{info.path} was analysed in {self.work.root} with other settings ({lines}). "
                "Use the same options, or a new work folder."
            )

    def _set_aside(self, path: Path, why: str) -> None:
        if path.exists():
            replace_with_retry(path, path.with_name(f"{path.name}.{why}-{int(time.time())}"))
        done = path.with_suffix(".done")
        if done.exists():
            done.unlink()

    def _warn(self, text: str) -> None:
        log.warning("%s", text)
        self.warnings.append(text)

    def _on_gpu(self) -> bool:
        return on_gpu(self.cfg.provider)

    def _n_infer(self) -> int:
        return infer_processes(self.cfg)

    def start(self) -> None:
        cfg = self.cfg
        remove_stale_segments()
        n_infer = self.n_infer = self._n_infer()
        n_dec = self.n_dec = min(cfg.decoders, max(1, len(self.queue)))
        slot_bytes = 3 * max(
            (lambda s: s[0] * s[1])(capped_size(*vr.info.display_size, cfg.max_side)) for vr in self.queue
        )
        slots = cfg.ring_slots or (_DECODER_CREDIT * n_dec + 2 * cfg.batch * n_infer + 4)
        self.ring = FrameRing.create(slots, slot_bytes)
        self.free.extend(range(slots))
        # Decoder threads: the cores not taken by CPU inference, split between decoders.
        busy = n_dec + (0 if self._on_gpu() else n_infer * cfg.infer_threads)
        self.decoder_threads = cfg.decoder_threads or max(1, cpu_count() // busy)
        for i in range(n_infer):
            self.infers.append(self._start_infer(i))
        for i in range(n_dec):
            self.decoders.append(self._start_decoder(i))
        log.info(
            "analyze: %d video(s), %d decoder(s) x %d thread(s), %d inference process(es), "
            "ring %d x %.1f MiB", len(self.queue), n_dec, self.decoder_threads, n_infer, slots,
            slot_bytes / 2**20,
        )

    def _start_decoder(self, i: int) -> Worker:
        w = start_worker(f"decoder-{i}", "decoder", decoder_main, (self.ring.spec,), fault_dir=self.work.logs_dir)
        w.state.update(held=set(), job=None, blocked=0.0)
        return w

    def _start_infer(self, i: int) -> Worker:
        cfg = self.cfg
        opts = dict(
            name=cfg.model,
            model_dir=Path(cfg.model_dir) if cfg.model_dir else None,
            provider=cfg.provider,
            threads=cfg.infer_threads,
            min_face=cfg.min_face,
            batch=cfg.batch,
        )
        lower = not self._on_gpu() and self.n_infer * cfg.infer_threads + self.n_dec > cpu_count()
        w = start_worker(
            f"infer-{i}", "infer", infer_main, (self.ring.spec, opts, cfg.thumb_side, lower),
            fault_dir=self.work.logs_dir,
        )
        w.state.update(
            wants=0, out=[], unreleased=set(), loaded=False, frames=0, faces=0, batches=0, busy=0.0, starved=0.0, first=None
        )
        return w

    # ------------------------------------------------------------------ main loop

    def run(self) -> AnalyzeResult:
        self.plan()
        if not self.queue:
            return AnalyzeResult(self.videos, 0.0, None)
        self.start()
        try:
            self._loop()
            self._publish(time.perf_counter())  # the final state, for the summary
        finally:
            self.shutdown()
        return AnalyzeResult(self.videos, time.perf_counter() - self.t_start, self.snapshot)

    def _loop(self) -> None:
        while self.queue or self.jobs:
            self._dispatch()
            conns = {w.conn: w for w in self.decoders + self.infers}
            sentinels = {w.sentinel: w for w in self.decoders + self.infers}
            timeout = min(_STATS_EVERY, self.cfg.batch_timeout) if self.ready else _STATS_EVERY
            ready = multiprocessing.connection.wait(list(conns) + list(sentinels), timeout)
            for obj in ready:
                if obj in conns:
                    self._drain(conns[obj])
            for obj in ready:
                if obj in sentinels:
                    w = sentinels[obj]
                    if w in self.decoders or w in self.infers:
                        self._drain(w)
                        self._worker_died(w)
            self._flush()
            now = time.perf_counter()
            if now - self._last_stats >= _STATS_EVERY:
                self._publish(now)

    def _drain(self, w: Worker) -> None:
        try:
            while w.conn.poll():
                self._handle(w, w.conn.recv())
        except (EOFError, OSError):
            pass

    # ------------------------------------------------------------------ messages

    def _handle(self, w: Worker, msg: tuple) -> None:
        kind = msg[0]
        if kind == "ready":
            _, slot, seq, job_id, n, k, pts, t, scale, h, wd, cuts = msg
            w.state["held"].discard(slot)
            vr = self.jobs.get(job_id)
            if vr is None:
                self.free.append(slot)
                return
            vr.pending[n] = [cuts, None, 0, k, pts]
            self.ready.append((slot, seq, job_id, n, k, pts, t, scale, time.perf_counter()))
        elif kind == "start":
            vr = self.jobs.get(msg[1])
            if vr is not None and vr.writer is None:
                self._open_log(vr, msg[2])
        elif kind == "stat":
            _, job_id, frames, samples, pos, blocked, elapsed = msg
            w.state["blocked"] = blocked
            vr = self.jobs.get(job_id)
            if vr is not None:
                vr.frames, vr.position = frames, pos
                vr.last_stat = (frames, samples, elapsed)
        elif kind == "done":
            _, job_id, status, reason, n_total, frames, errors, duration, t0, cuts = msg
            w.state["job"] = None
            vr = self.jobs.get(job_id)
            if vr is not None:
                vr.decoded = (status, reason, n_total, frames, errors, duration, t0, cuts)
                vr.frames, vr.errors = frames, errors
                vr.decoder = None
                if vr.writer is None:
                    self._open_log(vr, t0)
                self._write_ready(vr)
        elif kind == "cancelled":
            w.state["job"] = None
        elif kind == "results":
            _, out, busy, starved = msg
            st = w.state
            st["batches"] += 1
            st["busy"] += busy
            st["starved"] += starved
            if st["first"] is None:
                st["first"] = time.perf_counter() - busy
            got = set()
            failed = {}
            for job_id, n, payload, n_faces, error in out:
                got.add((job_id, n))
                st["frames"] += 1
                vr = self.jobs.get(job_id)
                if vr is None or n not in vr.pending:
                    continue
                if error:  # the model failed on this frame alone: the video fails, the batch goes on
                    failed.setdefault(job_id, (vr, f"inference failed on the sample at {vr.pending[n][3] / self.cfg.fps:.1f} s: {error}"))
                    continue
                st["faces"] += n_faces
                vr.pending[n][1] = payload
                vr.pending[n][2] = n_faces
            st["out"] = [it for it in st["out"] if (it[2], it[3]) not in got]
            for vr, why in failed.values():
                self._write_ready(vr)  # what came before the bad frame is kept
                self._give_up(vr, why)
            for vr in {id(v): v for v in (self.jobs.get(j) for j, _ in got) if v is not None}.values():
                self._write_ready(vr)
        elif kind == "warn":
            self._warn(f"{w.name}: {msg[1]}")
        elif kind == "release":
            self.free.extend(msg[1])
            w.state["unreleased"].difference_update(msg[1])
        elif kind == "want":
            w.state["wants"] += 1
        elif kind == "model":
            w.state["loaded"] = True
            w.state["model"] = msg[1:]
            self.model_info = msg[1:]
        elif kind == "model_error":
            raise ModelError(msg[1])
        elif kind == "fatal":
            w.state["fatal"] = msg[1]
            log.error("%s failed:\n%s", w.name, msg[1])

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self) -> None:
        # jobs to idle decoders
        for w in self.decoders:
            while w.state["job"] is None and self.queue:
                vr = self.queue.popleft()
                if self.unchanged_or_reprobed(vr):
                    self._start_job(vr, w)
        # free slots to decoders that are working and short of slots
        busy = [w for w in self.decoders if w.state["job"] is not None]
        progress = True
        while self.free and progress:
            progress = False
            for w in busy:
                if self.free and len(w.state["held"]) < _DECODER_CREDIT:
                    slot = self.free.popleft()
                    if w.send(("slot", slot)):
                        w.state["held"].add(slot)
                        progress = True
                    else:
                        self.free.append(slot)
        # ready frames to inference processes that asked
        self._drop_stale_ready()
        if not self.ready:
            return
        now = time.perf_counter()
        producing = any(w.state["job"] is not None and w.state["held"] for w in self.decoders)
        for w in self.infers:
            if not self.ready:
                break
            if w.state["wants"] <= 0 or not w.state["loaded"]:
                continue
            full = len(self.ready) >= self.cfg.batch
            waited = now - self.ready[0][8] >= self.cfg.batch_timeout
            if full or waited or not producing:
                items = []
                while self.ready and len(items) < self.cfg.batch:
                    slot, seq, job_id, n, k, pts, t, scale, _ = self.ready.popleft()
                    vr = self.jobs.get(job_id)
                    if vr is None:
                        self.free.append(slot)
                        continue
                    items.append((slot, seq, job_id, n, k, pts, t, scale, self._thumb_path(vr, k)))
                if items and w.send(("batch", items)):
                    w.state["wants"] -= 1
                    w.state["out"].extend(items)
                    w.state["unreleased"].update(it[0] for it in items)

    def _drop_stale_ready(self) -> None:
        if any(it[2] not in self.jobs for it in self.ready):
            keep = deque()
            for it in self.ready:
                if it[2] in self.jobs:
                    keep.append(it)
                else:
                    self.free.append(it[0])
            self.ready = keep

    def _thumb_path(self, vr: VideoRun, k: int) -> str | None:
        every = self.cfg.thumb_every
        if every <= 0:
            return None
        stride = max(1, round(every * self.cfg.fps))
        if k % stride:
            return None
        return str(self.work.thumbs_dir / vr.key / f"{k:07d}.jpg")

    def unchanged_or_reprobed(self, vr: VideoRun) -> bool:
        """Is the file still the one scanned (size + mtime), or, when it changed
        (replaced, rewritten) since the scan, probed again? An analysis of its
        old content is set aside. False: it cannot be analysed now (reported)."""
        info = vr.info
        path = info.fs_path(self.input_dir)
        try:
            st = path.stat()
        except OSError as ex:
            vr.status, vr.reason = "failed", f"gone since the scan ({ex.strerror or ex})"
            self._warn(f"{info.path}: {vr.reason}")
            return False
        if st.st_size == info.size and st.st_mtime_ns == info.mtime_ns:
            return True
        new = probe(path, info.path)
        if new.status != "ok":
            vr.status, vr.reason = "failed", f"changed since the scan and no longer readable: {new.reason}"
            self._warn(f"{info.path}: {vr.reason}")
            return False
        if new.fingerprint != info.fingerprint:
            self._warn(f"{info.path}: the file changed since the scan: probed again"
                       + ("; its earlier analysis is set aside" if vr.state.header is not None else ""))
            if vr.state.header is not None:
                if vr.writer is not None:
                    vr.writer.close()
                    vr.writer = None
                self._set_aside(vr.log_path, "changed")
                vr.state = LogState()
        vr.info = msgspec.structs.replace(new, raw_path=info.raw_path)  # probe() knows the shown name only
        return True

    def _start_job(self, vr: VideoRun, w: Worker) -> None:
        st = vr.state
        resume = st.header is not None
        job_id = self.next_job_id
        self.next_job_id += 1
        cut = st.last_cut if resume else None
        seek = resume and st.monotonic
        if resume and not st.monotonic:
            # Timestamps not monotonic: a seek would land anywhere. Decode from the
            # start; the decoder drops the cuts and samples already committed.
            self._warn(f"{vr.info.path}: timestamps not monotonic, resuming by decoding from the start")
        job = DecodeJob(
            job_id=job_id,
            path=str(vr.info.fs_path(self.input_dir)),
            rel=vr.info.path,
            stream_index=vr.info.stream_index,
            fps=self.cfg.fps,
            max_side=self.cfg.max_side,
            start_k=st.last_k + 1,
            t0=st.header.t0 if resume else None,
            resume_cut_pts=cut.pts if (cut and seek) else None,
            resume_cut_time=cut.time if cut else None,
            last_sample_pts=st.last_pts if seek else None,
            detector=self.cfg.detector,
            threshold=self.cfg.threshold,
            min_scene_len=self.cfg.min_scene_len,
            shot_width=self.cfg.shot_width,
            error_budget=self.cfg.error_budget,
            threads=self.decoder_threads,
            fast=self.cfg.fast_decode,
            hwaccel=self.cfg.hwaccel,
        )
        vr.job, vr.decoder, vr.next_n, vr.pending, vr.decoded = job, w, 0, {}, None
        vr.status = "running"
        if resume and vr.writer is None:
            vr.writer = LogWriter(vr.log_path)
            vr.t0 = st.header.t0
        self.jobs[job_id] = vr
        w.state["job"] = job_id
        w.send(("job", job))

    # ------------------------------------------------------------------ writing

    def _open_log(self, vr: VideoRun, t0: float | None) -> None:
        vr.writer = LogWriter(vr.log_path)
        vr.t0 = t0 or 0.0
        cfg = self.cfg
        header = LogHeader(
            schema=SCHEMA,
            video=vr.info.path,
            fingerprint=vr.info.fingerprint,
            fps=cfg.fps,
            t0=vr.t0,
            max_side=cfg.max_side,
            model=cfg.model,
            model_params=cfg.model_params(),
            detector=cfg.detector,
            detector_params=cfg.detector_params(),
        )
        vr.writer.append(header)
        vr.state.header = header

    def _write_ready(self, vr: VideoRun) -> None:
        """Append every sample that is next in order and has its result; finish
        the video once the decoder is done and everything it sent is written."""
        st = vr.state
        while vr.next_n in vr.pending and vr.pending[vr.next_n][1] is not None:
            cuts, payload, n_faces, k, pts = vr.pending.pop(vr.next_n)
            self._write_cuts(vr, cuts)
            vr.writer.append_raw(payload)
            # The log state follows every committed sample, as read_log_state would
            # find it: a restart (an inference process died) resumes right after it.
            st.samples += 1
            st.last_k = k
            if st.last_pts is not None and pts <= st.last_pts:
                st.monotonic = False
            st.last_pts = pts
            self.samples_written += 1
            self.faces_found += n_faces
            vr.next_n += 1
        if vr.decoded is not None and vr.next_n >= vr.decoded[2]:
            self._finish(vr, vr.decoded)

    def _write_cuts(self, vr: VideoRun, cuts) -> None:
        for pts, t in cuts:
            c = Cut(pts=pts, time=t)
            vr.writer.append(c)
            vr.state.cuts.append(c)
            vr.state.last_cut = c

    def _finish(self, vr: VideoRun, decoded: tuple) -> None:
        status, reason, _n_total, frames, errors, duration, t0, cuts = decoded
        self.jobs.pop(vr.job.job_id, None)
        if vr.writer is None:
            self._open_log(vr, t0)
        st = vr.state
        self._write_cuts(vr, cuts)
        # (No frame count here: a resumed job decodes from a seek point, and the
        # log must be identical to an uninterrupted run's.)
        done = Done(status=status, reason=reason, samples=st.samples, errors=errors, duration=duration)
        vr.writer.append(done)
        vr.writer.close()
        st.done = done
        vr.status, vr.reason = status, reason
        vr.pending.clear()
        self._write_markers(vr, done)
        if self.on_video_done is not None and status != "failed":
            self.on_video_done(vr.info)
        if status != "ok":
            self._warn(f"{vr.info.path}: {status}: {reason}")

    def _write_markers(self, vr: VideoRun, done: Done) -> None:
        """The shot list and the completion marker, both derived from the log."""
        write_json(
            self.work.analysis_dir / f"{vr.key}.shots.json",
            shots_from_cuts([c.time for c in vr.state.cuts], done.duration),
        )
        write_json(
            self.work.done_path(vr.key),
            VideoDone(
                video=vr.info.path, key=vr.key, status=done.status, reason=done.reason, samples=done.samples,
                duration=done.duration, finished=time.time(),
            ),
        )

    def _give_up(self, vr: VideoRun, reason: str) -> None:
        """Stop analysing ``vr`` (its decoder may still run): committed prefix kept, failed."""
        job_id = vr.job.job_id if vr.job is not None else None
        if job_id is None or self.jobs.get(job_id) is not vr:
            return
        if vr.decoder is not None and vr.decoder.state.get("job") == job_id:
            vr.decoder.send(("cancel", job_id))
        self._fail(vr, reason)

    def _fail(self, vr: VideoRun, reason: str) -> None:
        """A video whose decoder died: keep the committed prefix, mark it failed."""
        end = max(vr.position, vr.state.cuts[-1].time if vr.state.cuts else 0.0)
        self._finish(vr, ("failed", reason, 0, vr.frames, vr.errors, end, vr.t0, []))

    def _flush(self) -> None:
        for vr in self.jobs.values():
            if vr.writer is not None and vr.writer.pending_bytes:
                vr.writer.flush()

    # ------------------------------------------------------------------ supervision

    def _worker_died(self, w: Worker) -> None:
        reason = w.death_reason()
        fatal = w.state.get("fatal")
        if fatal:
            reason += f": {fatal.strip().splitlines()[-1]}"
        if w.kind == "decoder":
            self.decoders.remove(w)
            self.free.extend(w.state["held"])  # handed out, never filled
            job_id = w.state.get("job")
            vr = self.jobs.get(job_id) if job_id is not None else None
            self._warn(f"{w.name} died ({reason})" + (f" while decoding {vr.info.path}" if vr else ""))
            if vr is not None:
                self._fail(vr, f"decoder process died ({reason})")
            if self.queue or self.jobs:
                self.decoders.append(self._start_decoder(int(w.name.split("-")[1])))
        else:
            self.infers.remove(w)
            self.free.extend(w.state["unreleased"])  # sent to it, never released
            self._warn(f"{w.name} died ({reason})")
            if not w.state["loaded"]:
                raise ModelError(f"inference process failed before loading the model ({reason})")
            self.infer_restarts += 1
            if self.infer_restarts > _MAX_INFER_RESTARTS:
                raise FacecutError(f"inference processes keep dying ({reason}); giving up")
            # Its batch is lost: restart the affected videos from their last
            # committed sample (nothing is lost, nothing is written twice); a video
            # that was in hand at two deaths is the likely cause: it fails, the batch goes on.
            lost = {it[2] for it in w.state["out"]}
            for job_id in lost:
                vr = self.jobs.get(job_id)
                if vr is None:
                    continue
                vr.infer_deaths += 1
                if vr.infer_deaths >= 2:
                    self._give_up(vr, f"inference process died twice while analysing it ({reason})")
                else:
                    self._restart(vr)
            self.infers.append(self._start_infer(int(w.name.split("-")[1])))

    def _restart(self, vr: VideoRun) -> None:
        old = vr.job.job_id
        self.jobs.pop(old, None)
        if vr.decoder is not None and vr.decoder.state.get("job") == old:
            vr.decoder.send(("cancel", old))
        vr.pending.clear()
        vr.decoded = None
        vr.status = "pending"
        self.queue.appendleft(vr)

    def shutdown(self) -> None:
        stop_workers(self.decoders + self.infers)
        for vr in self.videos:
            if vr.writer is not None and not vr.writer.closed:
                try:
                    vr.writer.close()
                except OSError:
                    pass
        if self.ring is not None:
            self.ring.close()
            self.ring.unlink()
            self.ring = None
        if self.bookkeeping:
            try:
                self.work.heartbeat.unlink()
            except FileNotFoundError:
                pass

    # ------------------------------------------------------------------ stats

    def _publish(self, now: float) -> None:
        self._last_stats = now
        elapsed = now - self.t_start
        decs = []
        for w in self.decoders:
            vr = self.jobs.get(w.state["job"]) if w.state["job"] is not None else None
            ds = DecoderStats(name=w.name, blocked_s=w.state["blocked"])
            if vr is not None:
                frames, samples, el = vr.last_stat or (0, 0, 0.0)
                ds.video, ds.position, ds.duration = vr.info.path, vr.position, vr.info.duration
                ds.frames, ds.samples = frames, samples
                ds.decode_fps = frames / el if el > 0 else 0.0
                ds.sample_fps = samples / el if el > 0 else 0.0
            decs.append(ds)
        infs = []
        for w in self.infers:
            s = w.state
            span = (now - s["first"]) if s["first"] else 0.0
            model = s.get("model") or ("", "", False)
            infs.append(
                InferStats(
                    name=w.name, model=model[0], provider=model[1], frames=s["frames"], faces=s["faces"],
                    batches=s["batches"], fps=s["frames"] / span if span > 0 else 0.0,
                    faces_per_s=s["faces"] / span if span > 0 else 0.0,
                    batch_fill=(s["frames"] / s["batches"] / self.cfg.batch) if s["batches"] else 0.0,
                    busy_s=s["busy"], starved_s=s["starved"],
                )
            )
        held = sum(len(w.state["held"]) for w in self.decoders)
        at_infer = sum(len(w.state["out"]) for w in self.infers)
        ring = RingStats(
            slots=self.ring.slots if self.ring else 0, free=len(self.free), at_decoders=held,
            ready=len(self.ready), at_infer=at_infer,
            slot_mib=(self.ring.slot_bytes / 2**20) if self.ring else 0.0,
        )
        total = sum(v.info.duration for v in self.videos)
        finished = [v for v in self.videos if v.status in ("ok", "partial", "failed")]
        done_s = sum(v.info.duration for v in finished)
        running_s = sum(min(v.position, v.info.duration) for v in self.jobs.values())
        this_run = done_s - self.done_seconds_before + running_s
        speed = this_run / elapsed if elapsed > 0 else 0.0
        left = max(0.0, total - done_s - running_s)
        snap = RunStats(
            time=time.time(), elapsed=elapsed, decoders=decs, infer=infs, ring=ring,
            bottleneck=self._bottleneck(decs, infs, elapsed),
            videos_total=len(self.videos),
            videos_done=sum(v.status == "ok" for v in self.videos),
            videos_partial=sum(v.status == "partial" for v in self.videos),
            videos_failed=sum(v.status == "failed" for v in self.videos),
            video_seconds_total=total, video_seconds_done=done_s + running_s,
            video_seconds_this_run=this_run, speed=speed,
            eta_s=(left / speed) if speed > 0 else None,
            samples_written=self.samples_written, faces_found=self.faces_found,
            warnings=list(self.warnings),
        )
        self.snapshot = snap
        if self.on_stats is not None:
            self.on_stats(snap)
        if self.bookkeeping and now - self._last_progress >= _PROGRESS_EVERY:
            # History for `facecut status` (rates over the last minutes), a line per 10 s.
            self._last_progress = now
            line = {"time": snap.time, "video_seconds": snap.video_seconds_done, "samples": self.samples_written}
            with open(self.work.logs_dir / "progress.jsonl", "a") as f:
                f.write(json.dumps(line) + "\n")
        if self.bookkeeping and now - self._last_heartbeat >= _HEARTBEAT_EVERY:
            self._last_heartbeat = now
            write_json(
                self.work.heartbeat,
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "time": time.time(),
                    "stage": "analyze",
                    "workers": {w.name: w.process.pid for w in self.decoders + self.infers},
                    "running": {w.name: self.jobs[w.state["job"]].info.path for w in self.decoders
                                if w.state["job"] in self.jobs},
                },
            )

    @staticmethod
    def _bottleneck(decs: list[DecoderStats], infs: list[InferStats], elapsed: float) -> str:
        if elapsed < 2 or not decs or not infs:
            return "starting"
        blocked = sum(d.blocked_s for d in decs) / len(decs)
        starved = sum(i.starved_s for i in infs) / len(infs)
        if blocked > starved and blocked > 0.2 * elapsed:
            return "inference-bound (decoders wait for free ring slots)"
        if starved > blocked and starved > 0.2 * elapsed:
            return "decode-bound (inference waits for frames)"
        return "balanced"


def analyze(
    work: WorkDir,
    cfg: AnalyzeConfig,
    on_stats: Callable[[RunStats], None] | None = None,
    on_video_done: Callable[[VideoInfo], None] | None = None,
) -> AnalyzeResult:
    """Run (or resume) the analysis of every scanned video in ``work``.

    ``on_video_done(info)`` is called (in this process) for every video whose
    log gets its completion record in this run, so later stages can stream.
    """
    return Coordinator(work, cfg, on_stats, on_video_done).run()
