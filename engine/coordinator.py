"""The coordinator: owns one analysis run, brokering and supervising.

It creates the frame ring (and alone unlinks it), spawns decoder and inference
processes, moves ring slots between them (the messages and the slot life cycle
are in facecut.protocol), hands each video's samples to its log writer in
order (facecut.videolog), supervises the workers (a dead one is restarted, its
videos resume from their last committed sample) and publishes stats snapshots
(facecut.telemetry). Which videos run, resume or are skipped is decided before
(facecut.resume); how many processes, by facecut.profile.
"""

from __future__ import annotations

import logging
import os
import multiprocessing.connection
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from facecut import protocol as P
from facecut.config import AnalyzeConfig
from facecut.decode import capped_size, decoder_main
from facecut.errors import EXIT_OK, EXIT_SOME_FAILED, FacecutError, ModelError
from facecut.workdir import WorkDir
from facecut.infer import InferSetup, infer_main, model_spec
from facecut.procs import Worker, start_worker, stop_workers
from facecut.profile import DECODER_CREDIT, size_run
from facecut.records import VideoInfo
from facecut.resume import ResumePlan, decode_job, plan_run
from facecut.ring import FrameRing, remove_stale_segments
from facecut.stats import RunStats
from facecut.telemetry import (
    STATS_EVERY,
    Bookkeeping,
    ProgressLine,
    batch_progress,
    bottleneck,
    decoder_stats,
    infer_stats,
    make_heartbeat,
    ring_stats,
)
from facecut.videolog import Pending, VideoRun

log = logging.getLogger(__name__)

_MAX_INFER_RESTARTS = 10  # deaths in one run before it gives up (a broken model or machine)


@dataclass
class AnalyzeResult:
    videos: list[VideoRun]
    elapsed: float
    stats: RunStats | None

    @property
    def exit_code(self) -> int:
        return EXIT_SOME_FAILED if any(v.status in ("failed", "partial") for v in self.videos) else EXIT_OK


# --------------------------------------------------------------------------- the run


class Coordinator:
    # Every message a worker sends (facecut.protocol), and the method that takes it.
    HANDLERS = {
        P.Ready: "_on_ready", P.Started: "_on_started", P.Progress: "_on_progress", P.JobDone: "_on_job_done",
        P.Cancelled: "_on_cancelled", P.Results: "_on_results", P.Warn: "_on_warn", P.Release: "_on_release",
        P.Want: "_on_want", P.ModelLoaded: "_on_model", P.ModelFailed: "_on_model_failed", P.Fatal: "_on_fatal",
    }

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
        self.bookkeeping = Bookkeeping(work) if bookkeeping else None
        self.input_dir: Path | None = None  # from the scan (a cluster task maps it to its own path)
        self.resume: ResumePlan | None = None
        self.videos: list[VideoRun] = []
        self.queue: deque[VideoRun] = deque()
        self.warnings: deque[str] = deque(maxlen=8)
        self.decoders: list[Worker] = []
        self.infers: list[Worker] = []
        self.ring: FrameRing | None = None
        self.free: deque[int] = deque()
        self.ready: deque[tuple[P.Ready, float]] = deque()  # filled slots and when they were
        self.jobs: dict[int, VideoRun] = {}
        self.next_job_id = 1
        self.infer_restarts = 0
        self.t_start = time.perf_counter()
        self.cpu_start = time.process_time()
        self.samples_written = 0
        self.faces_found = 0
        self._last_stats = 0.0
        self.snapshot: RunStats | None = None
        self._handlers = {t: getattr(self, name) for t, name in self.HANDLERS.items()}

    # ------------------------------------------------------------------ setup

    def plan(self) -> None:
        """Decide, per scanned video, whether it is done, resumes, or starts (facecut.resume)."""
        self.resume = plan_run(self.work, self.cfg, only=self.only)
        self.cfg = self.resume.cfg  # with the model files it binds the logs to
        self.videos, self.queue, self.warnings = self.resume.videos, self.resume.queue, self.resume.warnings
        if self.input_dir is None:
            self.input_dir = self.resume.input_dir
        self.resume.input_dir = self.input_dir

    def start(self) -> None:
        cfg = self.cfg
        remove_stale_segments()
        sz = self.sizing = size_run(cfg, len(self.queue))
        slot_bytes = 3 * max(
            (lambda s: s[0] * s[1])(capped_size(*vr.info.display_size, cfg.max_side)) for vr in self.queue
        )
        self.ring = FrameRing.create(sz.ring_slots, slot_bytes)
        self.free.extend(range(sz.ring_slots))
        for i in range(sz.infer_procs):
            self.infers.append(self._start_infer(i))
        for i in range(sz.decoders):
            self.decoders.append(self._start_decoder(i))
        log.info(
            "analyze: %d video(s), %d decoder(s) x %d thread(s), %d inference process(es), "
            "ring %d x %.1f MiB", len(self.queue), sz.decoders, sz.decoder_threads, sz.infer_procs, sz.ring_slots,
            slot_bytes / 2**20,
        )

    def _start_decoder(self, i: int, state: P.DecoderState | None = None) -> Worker:
        w = start_worker(f"decoder-{i}", "decoder", decoder_main, (self.ring.spec,), fault_dir=self.work.logs_dir)
        w.state = state or P.DecoderState()
        return w

    def _start_infer(self, i: int, state: P.InferState | None = None) -> Worker:
        cfg = self.cfg
        setup = InferSetup(ring=self.ring.spec, model=model_spec(cfg), thumb_side=cfg.thumb_side,
                           lower_priority=self.sizing.infer_below, sharpness=cfg.sharpness)
        w = start_worker(f"infer-{i}", "infer", infer_main, (setup,), fault_dir=self.work.logs_dir)
        w.state = state or P.InferState()
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
            timeout = min(STATS_EVERY, self.cfg.batch_timeout) if self.ready else STATS_EVERY
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
            if now - self._last_stats >= STATS_EVERY:
                self._publish(now)

    def _drain(self, w: Worker) -> None:
        try:
            while w.conn.poll():
                msg = P.recv(w.conn)
                self._handlers[type(msg)](w, msg)
        except (EOFError, OSError):
            pass

    # ------------------------------------------------------------------ messages (facecut.protocol)

    def _on_ready(self, w: Worker, msg: P.Ready) -> None:
        w.state.held.discard(msg.slot)
        vr = self.jobs.get(msg.job_id)
        if vr is None:
            self.free.append(msg.slot)
            return
        vr.pending[msg.n] = Pending(cuts=msg.cuts, k=msg.k, pts=msg.pts)
        self.ready.append((msg, time.perf_counter()))

    def _on_started(self, w: Worker, msg: P.Started) -> None:
        vr = self.jobs.get(msg.job_id)
        if vr is not None and vr.writer is None:
            vr.open_log(self.cfg, msg.t0)

    def _on_progress(self, w: Worker, msg: P.Progress) -> None:
        w.state.reported(msg)
        vr = self.jobs.get(msg.job_id)
        if vr is not None:
            vr.frames, vr.position, vr.last_stat = msg.frames, msg.position, msg

    def _on_job_done(self, w: Worker, msg: P.JobDone) -> None:
        w.state.job = None
        vr = self.jobs.get(msg.job_id)
        if vr is not None:
            r = msg.result
            vr.decoded = r
            vr.frames, vr.errors = r.frames, r.errors
            vr.decoder = None
            if vr.writer is None:
                vr.open_log(self.cfg, r.t0)
            self._write_ready(vr)

    def _on_cancelled(self, w: Worker, msg: P.Cancelled) -> None:
        w.state.job = None

    def _on_results(self, w: Worker, msg: P.Results) -> None:
        st = w.state
        st.took(msg)
        got = set()
        failed = {}
        for r in msg.out:
            got.add((r.job_id, r.n))
            st.frames += 1
            vr = self.jobs.get(r.job_id)
            p = vr.pending.get(r.n) if vr is not None else None
            if p is None:
                continue
            if r.error:  # the model failed on this frame alone: the video fails, the batch goes on
                failed.setdefault(r.job_id, (vr, f"inference failed on the sample at {p.k / self.cfg.fps:.1f} s: {r.error}"))
                continue
            st.faces += r.n_faces
            p.payload, p.n_faces = r.payload, r.n_faces
        st.out = [it for it in st.out if (it.job_id, it.n) not in got]
        for vr, why in failed.values():
            self._write_ready(vr)  # what came before the bad frame is kept
            self._give_up(vr, why)
        for vr in {id(v): v for v in (self.jobs.get(j) for j, _ in got) if v is not None}.values():
            self._write_ready(vr)

    def _on_warn(self, w: Worker, msg: P.Warn) -> None:
        self.resume.warn(f"{w.name}: {msg.text}")

    def _on_release(self, w: Worker, msg: P.Release) -> None:
        self.free.extend(msg.slots)
        w.state.unreleased.difference_update(msg.slots)

    def _on_want(self, w: Worker, msg: P.Want) -> None:
        w.state.wants += 1

    def _on_model(self, w: Worker, msg: P.ModelLoaded) -> None:
        w.state.loaded = True
        w.state.model = msg

    def _on_model_failed(self, w: Worker, msg: P.ModelFailed) -> None:
        raise ModelError(msg.message)

    def _on_fatal(self, w: Worker, msg: P.Fatal) -> None:
        w.state.fatal = msg.traceback
        log.error("%s failed:\n%s", w.name, msg.traceback)

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self) -> None:
        # jobs to idle decoders
        for w in self.decoders:
            while w.state.job is None and self.queue:
                vr = self.queue.popleft()
                if self.resume.unchanged_or_reprobed(vr):
                    self._start_job(vr, w)
        # free slots to decoders that are working and short of slots
        busy = [w for w in self.decoders if w.state.job is not None]
        progress = True
        while self.free and progress:
            progress = False
            for w in busy:
                if self.free and len(w.state.held) < DECODER_CREDIT:
                    slot = self.free.popleft()
                    if w.send(P.Slot(slot)):
                        w.state.held.add(slot)
                        progress = True
                    else:
                        self.free.append(slot)
        # ready frames to inference processes that asked
        self._drop_stale_ready()
        if not self.ready:
            return
        now = time.perf_counter()
        producing = any(w.state.job is not None and w.state.held for w in self.decoders)
        for w in self.infers:
            if not self.ready:
                break
            if w.state.wants <= 0 or not w.state.loaded:
                continue
            full = len(self.ready) >= self.cfg.batch
            waited = now - self.ready[0][1] >= self.cfg.batch_timeout
            if full or waited or not producing:
                items = []
                while self.ready and len(items) < self.cfg.batch:
                    r, _ = self.ready.popleft()
                    vr = self.jobs.get(r.job_id)
                    if vr is None:
                        self.free.append(r.slot)
                        continue
                    items.append(P.Item(r.slot, r.seq, r.job_id, r.n, r.k, r.pts, r.time, r.scale,
                                        self._thumb_path(vr, r.k)))
                if items and w.send(P.Batch(items)):
                    w.state.wants -= 1
                    w.state.out.extend(items)
                    w.state.unreleased.update(it.slot for it in items)

    def _drop_stale_ready(self) -> None:
        stale = [r.slot for r, _ in self.ready if r.job_id not in self.jobs]
        if stale:
            self.free.extend(stale)
            self.ready = deque(it for it in self.ready if it[0].job_id in self.jobs)

    def _thumb_path(self, vr: VideoRun, k: int) -> bytes | None:
        every = self.cfg.thumb_every
        if every <= 0:
            return None
        stride = max(1, round(every * self.cfg.fps))
        if k % stride:
            return None
        return os.fsencode(self.work.thumbs_dir / vr.key / f"{k:07d}.jpg")

    def _start_job(self, vr: VideoRun, w: Worker) -> None:
        st = vr.state
        resume = st.header is not None
        job_id = self.next_job_id
        self.next_job_id += 1
        if resume and not st.monotonic:
            # Timestamps not monotonic: a seek would land anywhere. Decode from the
            # start; the decoder drops the cuts and samples already committed.
            self.resume.warn(f"{vr.info.path}: timestamps not monotonic, resuming by decoding from the start")
        job = decode_job(vr, self.cfg, job_id, self.input_dir, self.sizing.decoder_threads)
        vr.job, vr.decoder, vr.next_n, vr.pending, vr.decoded = job, w, 0, {}, None
        vr.status = "running"
        if resume and vr.writer is None:
            vr.reopen_log()
        self.jobs[job_id] = vr
        w.state.job = job_id
        w.send(P.Job(job))

    # ------------------------------------------------------------------ writing (facecut.videolog)

    def _write_ready(self, vr: VideoRun) -> None:
        """Commit what is next in order; finish the video once the decoder is
        done and everything it sent is written."""
        samples, faces = vr.write_ready()
        self.samples_written += samples
        self.faces_found += faces
        if vr.complete:
            self._finish(vr, vr.decoded)

    def _finish(self, vr: VideoRun, result: P.DecodeResult) -> None:
        self.jobs.pop(vr.job.job_id, None)
        vr.finish(self.cfg, self.work, result)
        if self.on_video_done is not None and result.status != "failed":
            self.on_video_done(vr.info)
        if result.status != "ok":
            self.resume.warn(f"{vr.info.path}: {result.status}: {result.reason}")

    def _give_up(self, vr: VideoRun, reason: str) -> None:
        """Stop analysing ``vr`` (its decoder may still run): committed prefix kept, failed."""
        job_id = vr.job.job_id if vr.job is not None else None
        if job_id is None or self.jobs.get(job_id) is not vr:
            return
        if vr.decoder is not None and vr.decoder.state.job == job_id:
            vr.decoder.send(P.Cancel(job_id))
        self._finish(vr, vr.failed_result(reason))

    def _flush(self) -> None:
        for vr in self.jobs.values():
            if vr.writer is not None and vr.writer.pending_bytes:
                vr.writer.flush()

    # ------------------------------------------------------------------ supervision

    def _worker_died(self, w: Worker) -> None:
        reason = w.death_reason()
        if w.state.fatal:
            reason += f": {w.state.fatal.strip().splitlines()[-1]}"
        if w.kind == "decoder":
            self.decoders.remove(w)
            self.free.extend(w.state.held)  # handed out, never filled
            vr = self.jobs.get(w.state.job) if w.state.job is not None else None
            self.resume.warn(f"{w.name} died ({reason})" + (f" while decoding {vr.info.path}" if vr else ""))
            if vr is not None:
                self._finish(vr, vr.failed_result(f"decoder process died ({reason})"))
            if self.queue or self.jobs:
                self.decoders.append(self._start_decoder(int(w.name.split("-")[1]), w.state.successor()))
        else:
            self.infers.remove(w)
            self.free.extend(w.state.unreleased)  # sent to it, never released
            self.resume.warn(f"{w.name} died ({reason})")
            if not w.state.loaded:
                raise ModelError(f"inference process failed before loading the model ({reason})")
            self.infer_restarts += 1
            if self.infer_restarts > _MAX_INFER_RESTARTS:
                raise FacecutError(f"inference processes keep dying ({reason}); giving up")
            # Its batch is lost: restart the affected videos from their last
            # committed sample (nothing is lost, nothing is written twice); a video
            # that was in hand at two deaths is the likely cause: it fails, the batch goes on.
            for job_id in {it.job_id for it in w.state.out}:
                vr = self.jobs.get(job_id)
                if vr is None:
                    continue
                vr.infer_deaths += 1
                if vr.infer_deaths >= 2:
                    self._give_up(vr, f"inference process died twice while analysing it ({reason})")
                else:
                    self._restart(vr)
            self.infers.append(self._start_infer(int(w.name.split("-")[1]), w.state.successor()))

    def _restart(self, vr: VideoRun) -> None:
        old = vr.job.job_id
        self.jobs.pop(old, None)
        if vr.decoder is not None and vr.decoder.state.job == old:
            vr.decoder.send(P.Cancel(old))
        vr.pending.clear()
        vr.decoded = None
        vr.status = "pending"
        self.queue.appendleft(vr)

    def shutdown(self) -> None:
        stop_workers(self.decoders + self.infers)
        for vr in self.videos:
            vr.close()
        if self.ring is not None:
            self.ring.close()
            self.ring.unlink()
            self.ring = None
        if self.bookkeeping is not None:
            self.bookkeeping.close()

    # ------------------------------------------------------------------ stats (facecut.telemetry)

    def _publish(self, now: float) -> None:
        self._last_stats = now
        elapsed = now - self.t_start
        decs = [decoder_stats(w, self.jobs) for w in self.decoders]
        infs = [infer_stats(w, now, self.cfg.batch) for w in self.infers]
        ring = ring_stats(self.ring, len(self.free), len(self.ready), self.decoders, self.infers)
        running_s = sum(min(v.position, v.info.duration) for v in self.jobs.values())
        snap = RunStats(
            time=time.time(), elapsed=elapsed, decoders=decs, infer=infs, ring=ring,
            bottleneck=bottleneck(decs, infs, elapsed),
            **batch_progress(self.videos, self.resume.done_seconds_before, running_s, elapsed),
            samples_written=self.samples_written, faces_found=self.faces_found,
            warnings=list(self.warnings), coordinator_cpu_s=time.process_time() - self.cpu_start,
        )
        self.snapshot = snap
        if self.on_stats is not None:
            self.on_stats(snap)
        if self.bookkeeping is not None:
            line = ProgressLine(time=snap.time, video_seconds=snap.video_seconds_done, samples=self.samples_written)
            self.bookkeeping.tick(now, line, lambda: make_heartbeat(
                {w.name: w.process.pid for w in self.decoders + self.infers},
                {w.name: self.jobs[w.state.job].info.path for w in self.decoders if w.state.job in self.jobs},
            ))


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
