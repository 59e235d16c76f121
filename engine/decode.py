"""Decoder process: decode each video once, sequentially, no seek per sample.

For every decoded frame:
  * a small copy (``shot_width`` pixels wide) goes to PySceneDetect's detector
    through its frame API, so shot cuts come out frame-accurate from the same pass;
  * the sampling grid (``k / fps`` seconds after the first frame) picks the frame
    *displayed* at each grid time, judged by ``frame.time`` (exact with variable
    frame rate), which is converted to BGR, capped to ``max_side``, turned
    upright (display rotation) and written straight into a free ring slot.

Talks to the coordinator in the messages of facecut.protocol (Job, Slot,
Cancel, Stop in; Started, Ready, Progress, JobDone, Cancelled out).

Never imports onnxruntime.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque

import av
import msgspec
import numpy as np
from av.video.reformatter import VideoReformatter
from scenedetect import FrameTimecode

from facecut import protocol
from facecut.media import open_decoding
from facecut.procs import CoordinatorGone, cap_opencv_threads, recv_or_parent_death
from facecut.protocol import DecodeJob, DecodeResult
from facecut.ring import FrameRing
from facecut.refframes import RefFramesOnly
from facecut.shotdetect import ShotFrames, make_detector
from facecut.timeline import SAME_INSTANT, FrameClock, frame_rate, time_base

log = logging.getLogger(__name__)

_EPS = SAME_INSTANT
_STAT_EVERY = 0.5  # seconds between progress messages


class _Cancelled(Exception):
    pass


class _Stop(Exception):
    pass


def capped_size(w: int, h: int, max_side: int) -> tuple[int, int, float]:
    """(width, height, scale) after capping the long side to ``max_side`` (0 = no cap)."""
    if max_side and max(w, h) > max_side:
        s = max_side / max(w, h)
        return max(2, round(w * s)), max(2, round(h * s)), s
    return w, h, 1.0


class _Decoder:
    """State of one decoder process between jobs: ring, slots in hand, pipe."""

    def __init__(self, conn, ring: FrameRing) -> None:
        self.conn = conn
        self.ring = ring
        self.slots: deque[int] = deque()
        self.seq = 0
        self.cancelled: set[int] = set()
        self.stopping = False
        self.blocked = 0.0

    # -------------------------------------------------------------- messages

    def _handle(self, msg: protocol.Message, job_id: int | None) -> None:
        if isinstance(msg, protocol.Slot):
            self.slots.append(msg.slot)
        elif isinstance(msg, protocol.Cancel):
            self.cancelled.add(msg.job_id)
        elif isinstance(msg, protocol.Stop):
            self.stopping = True
        elif isinstance(msg, protocol.Job):
            raise RuntimeError("decoder got a job while busy")
        if job_id is not None and (self.stopping or job_id in self.cancelled):
            raise _Stop() if self.stopping else _Cancelled()

    def poll(self, job_id: int) -> None:
        """Drain pending messages without blocking."""
        while self.conn.poll():
            self._handle(protocol.recv(self.conn), job_id)

    def take_slot(self, job_id: int) -> int:
        """A free slot; blocks (back-pressure from a full ring) until the coordinator gives one."""
        self.poll(job_id)
        if not self.slots:
            t = time.perf_counter()
            while not self.slots:
                msg = recv_or_parent_death(self.conn, timeout=1.0)
                if msg is not None:
                    self._handle(msg, job_id)
            self.blocked += time.perf_counter() - t
        return self.slots.popleft()

    def send(self, msg: protocol.Message) -> None:
        protocol.send(self.conn, msg)


def decoder_main(conn, ring_spec) -> None:
    """Entry point of a decoder process (see procs.start_worker)."""
    cap_opencv_threads(1)  # the shot detector's frames are small
    ring = FrameRing.attach(ring_spec)
    dec = _Decoder(conn, ring)
    try:
        while not dec.stopping:
            msg = recv_or_parent_death(conn, timeout=None)
            if isinstance(msg, protocol.Job):
                try:
                    run_job(dec, msg.job)
                except _Cancelled:
                    dec.send(protocol.Cancelled(msg.job.job_id))
                except _Stop:
                    break
            else:
                dec._handle(msg, None)
    except CoordinatorGone:
        pass
    finally:
        ring.close()


# ------------------------------------------------------------------ one video


class _Sampler:
    """Picks, on the grid k / fps, the frame displayed at each grid time."""

    def __init__(self, fps: float, start_k: int, used_upto_pts: int | None = None) -> None:
        self.fps = fps
        self.k = start_k
        self.prev = None  # (frame, pts, t)
        self.prev_used = False
        # Resume: a frame already sampled in the earlier run is not sampled again
        # (matters when the video's frame rate is below the sampling rate).
        self.used_upto_pts = used_upto_pts

    def target(self) -> float:
        return self.k / self.fps

    def feed(self, frame, pts: int, t: float):
        """Yield (k, frame, pts, t) for every grid time the stream has passed."""
        if self.prev is not None and t > self.target() + _EPS:
            if not self.prev_used and self.prev[2] <= self.target() + _EPS:
                yield (self.k, *self.prev)
                self.prev_used = True
            # The grid steps the stream has passed, skipped at once (a forward
            # timestamp gap of any size costs nothing; no samples are invented).
            first = self.k + 1
            self.k = max(first, math.ceil((t - _EPS) * self.fps))
            while self.k > first and t <= (self.k - 1) / self.fps + _EPS:
                self.k -= 1  # float rounding: the same k the step-by-step walk gives
            while t > self.target() + _EPS:
                self.k += 1
        self.prev = (frame, pts, t)
        self.prev_used = self.used_upto_pts is not None and pts <= self.used_upto_pts
        if not self.prev_used and abs(t - self.target()) <= _EPS:
            yield (self.k, frame, pts, t)
            self.prev_used = True
            self.k += 1

    def finish(self, end_time: float):
        """At end of stream the last frame is displayed until ``end_time``."""
        if self.prev is not None and not self.prev_used:
            if self.prev[2] <= self.target() + _EPS and self.target() < end_time - _EPS:
                yield (self.k, *self.prev)
                self.k += 1


class Sink:
    """Where a decode pass delivers its results (the ring in a decoder process;
    a collector in the benchmark). Frames are PyAV frames in coded orientation."""

    def start(self, t0: float) -> None:
        """First frame of a fresh video: times below are relative to ``t0``."""

    def sample(self, k: int, frame, pts: int, t: float, cuts: list[tuple[int, float]]) -> None:
        """The frame displayed at grid time ``k / fps``, and the cuts found since the last sample."""

    def progress(self, frames: int, samples: int, position: float) -> None:
        """Called about every ``_STAT_EVERY`` seconds."""


def frame_to_bgr(frame, max_side: int, reformatter: VideoReformatter | None = None,
                 max_pixels: int = 0) -> tuple[np.ndarray, float]:
    """Upright BGR pixels of a frame with the long side capped, and the scale used.

    One swscale pass converts and downscales; the display rotation is applied
    with a numpy view (``np.rot90``), copied once when written to the ring.
    Pass a long-lived ``reformatter``: ``frame.reformat`` builds a new swscale
    context per frame, measured 6x slower than reusing one.
    ``max_pixels`` (0 = no limit): a frame larger than the ring slot (the
    resolution grew mid-stream) is scaled down further to fit; its own scale is
    returned, so boxes map back to that frame's size.
    """
    w, h, scale = capped_size(frame.width, frame.height, max_side)
    if max_pixels and w * h > max_pixels:
        scale *= math.sqrt(max_pixels / (w * h))
        w = max(2, min(w, math.floor(frame.width * scale)))
        h = max(2, min(h, math.floor(frame.height * scale)))
        while w * h > max_pixels:  # float rounding
            w, h = w - 1, h - 1
        scale = min(w / frame.width, h / frame.height)
    if reformatter is None:
        img = frame.to_ndarray(format="bgr24", width=w, height=h, interpolation="AREA")
    else:
        img = reformatter.reformat(frame, width=w, height=h, format="bgr24", interpolation="AREA").to_ndarray()
    rotation = int(frame.rotation or 0) % 360
    if rotation:
        img = np.rot90(img, k=rotation // 90)
    return img, scale


class _RingSink(Sink):
    def __init__(self, dec: _Decoder, job: DecodeJob) -> None:
        self.dec, self.job = dec, job
        self.reformatter = VideoReformatter()
        self.n = 0
        self.t_start = time.perf_counter()

    def start(self, t0: float) -> None:
        self.dec.send(protocol.Started(self.job.job_id, t0))

    def sample(self, k, frame, pts, t, cuts) -> None:
        dec = self.dec
        img, scale = frame_to_bgr(frame, self.job.max_side, self.reformatter, self.dec.ring.slot_bytes // 3)
        slot = dec.take_slot(self.job.job_id)
        dec.seq += 1
        h, w = img.shape[:2]
        dec.ring.write(slot, dec.seq, img)
        dec.send(protocol.Ready(slot, dec.seq, self.job.job_id, self.n, k, pts, t, scale, h, w, cuts))
        self.n += 1

    def progress(self, frames, samples, position) -> None:
        self.dec.poll(self.job.job_id)
        elapsed = time.perf_counter() - self.t_start
        self.dec.send(protocol.Progress(self.job.job_id, frames, samples, position, self.dec.blocked, elapsed,
                                          time.process_time()))


def run_job(dec: _Decoder, job: DecodeJob) -> None:
    sink = _RingSink(dec, job)
    r = decode_video(job, sink)
    sink.progress(r.frames, r.samples, max(0.0, r.end_time))
    dec.send(protocol.JobDone(job.job_id, r))


_SAID: set[str] = set()  # hardware-decode fallbacks already reported by this process


def apply_fast_decode(cc, fast: str) -> None:
    """Set what ``--fast-decode`` lets FFmpeg skip (facecut.config.FAST_DECODE) on a
    codec context not yet opened (PyAV opens it at the first decode). ``ref-frames``
    here skips every non-reference picture; the decoder's own pass instead decides
    packet by packet (:class:`facecut.refframes.RefFramesOnly`) so that no sample moves."""
    if fast in ("deblock-noref", "deblock-all"):
        cc.options = {**cc.options, "skip_loop_filter": fast.split("-")[1]}
    elif fast == "ref-frames":
        cc.skip_frame = "NONREF"
    elif fast != "off":
        raise ValueError(f"unknown fast-decode level {fast!r}")


def decode_video(job: DecodeJob, sink: Sink) -> DecodeResult:
    """Decode one video once, sequentially: shot cuts and samples go to ``sink``."""
    try:
        container, device, fallback = open_decoding(job.file, job.hwaccel)
    except (av.FFmpegError, OSError) as ex:
        return DecodeResult("failed", f"cannot open: {ex}", 0, 0, 0, 0.0, None, [])
    if fallback and fallback not in _SAID:
        _SAID.add(fallback)
        log.warning("%s: decoding in software (%s)", job.rel, fallback)
    try:
        with container:
            return _decode_in(job, container, device, sink)
    except _CannotSeek as ex:
        # Resume the other way (facecut.resume): decode from the start, skipping what
        # the log holds. A failed seek may leave the demuxer anywhere: open it again.
        log.info("%s: cannot seek (%s): resumed by decoding from the start", job.rel, ex)
        job = msgspec.structs.replace(job, resume_cut_pts=None, last_sample_pts=None)
        try:
            container, device, _ = open_decoding(job.file, job.hwaccel)
        except (av.FFmpegError, OSError) as ex2:
            return DecodeResult("failed", f"cannot open: {ex2}", 0, 0, 0, 0.0, None, [])
        with container:
            return _decode_in(job, container, device, sink)


def _decode_in(job: DecodeJob, container, device: str, sink: Sink) -> DecodeResult:
    r = _decode(job, container, sink)
    if device and not container.streams[job.stream_index].codec_context.is_hwaccel:
        log.info("%s: %s cannot decode this stream: decoded in software", job.rel, device)
    return r


class _CannotSeek(Exception):
    """The resume seek failed (facecut.decode.decode_video resumes from the start)."""


_SEEK_BACK = (0.0, 2.0, 8.0, 30.0)  # seconds before the target tried in turn


def _seek_at_or_before(container, stream, target: int, tb) -> None:
    """Seek so that the first picture decoded is at or before pts ``target``.
    Demuxers differ: MP4 lands on the keyframe before a timestamp, MPEG-TS on the
    one after it (even on a keyframe's own pts), which would lose the pictures in
    between; so the landing is checked by decoding one picture, and the seek
    aimed earlier until it lands in time. Raises _CannotSeek when the stream does
    not seek at all or never lands in time (the resume then decodes from the start)."""
    for back in _SEEK_BACK:
        at = target - int(back / tb)
        try:
            container.seek(at, stream=stream, backward=True, any_frame=False)
            first = _first_pts(container, stream)
            if first is None or first <= target:
                container.seek(at, stream=stream, backward=True, any_frame=False)  # from there again
                return
        except (av.FFmpegError, OSError) as ex:  # a stream that cannot seek (raw .h264, no timestamps)
            raise _CannotSeek(str(ex)) from ex
    raise _CannotSeek(f"no seek lands at or before pts {target}")


def _first_pts(container, stream, packets: int = 600) -> int | None:
    """The pts of the first picture decoded from where the demuxer is (None: none
    within ``packets`` packets, or pictures without pts)."""
    for n, packet in enumerate(container.demux(stream)):
        try:
            for frame in packet.decode():
                return frame.pts
        except (av.FFmpegError, ValueError):
            pass
        if n >= packets:
            return None
    return None


def _decode(job: DecodeJob, container, sink: Sink) -> DecodeResult:
    stream = container.streams[job.stream_index]
    stream.thread_type = "AUTO" if job.threads > 1 else "SLICE"
    stream.codec_context.thread_count = job.threads
    tb = time_base(stream)
    rate = frame_rate(stream)
    frame_dur = float(1 / rate)
    clock = FrameClock(tb, rate)
    skipper = None
    if job.fast == "ref-frames":
        skipper = RefFramesOnly(stream.codec_context, tb, job.fps, clock.unwrap.jump)
    else:
        apply_fast_decode(stream.codec_context, job.fast)

    t0 = job.t0
    if job.resume_cut_pts is not None and t0 is not None:
        # Resume: one seek to the keyframe at/before the last logged cut; the
        # detector restarts exactly at that cut (its state right after a cut is
        # the same as in an uninterrupted run).
        _seek_at_or_before(container, stream, job.resume_cut_pts, tb)
    detector = make_detector(job.detector, job.threshold, job.min_scene_len)
    sampler = _Sampler(job.fps, job.start_k, job.last_sample_pts)
    feed_from_pts = job.resume_cut_pts  # detector starts at this frame (None: first frame)

    # (detector frame no., pts, t) of the last frames: a detector reports a cut up to
    # --min-scene-len frames after it (merged cuts), so they stay findable
    recent: deque[tuple[int, int, float]] = deque(maxlen=2 * job.min_scene_len + 128)
    det_no = 0
    pending_cuts: list[tuple[int, float]] = []
    cut_times: set[float] = set()  # cuts reported by this job (a discontinuity may be found twice)
    n = frames = errors = 0
    last_err = ""
    last_t = -math.inf
    last_stat = time.perf_counter()
    shot_frame = ShotFrames(job.shot_width)

    def emit(k, frame, pts, t):
        nonlocal n
        sink.sample(k, frame, pts, t, pending_cuts[:])
        pending_cuts.clear()
        n += 1

    def not_logged(pts: int, t: float) -> bool:
        """A cut an earlier run of this video has not logged yet."""
        if job.resume_cut_pts is not None:  # seek-resume: pts are monotonic
            return pts > job.resume_cut_pts
        if job.resume_cut_time is not None:  # decoded from the start: unwrapped times
            return t > job.resume_cut_time + _EPS
        return True

    def add_cut(pts: int, t: float) -> None:
        key = round(t, 6)
        if key not in cut_times and not_logged(pts, t):
            cut_times.add(key)
            pending_cuts.append((pts, t))

    def found(cut_timecodes):
        for tc in cut_timecodes:
            at = next((i for i, r in enumerate(recent) if r[0] == tc.frame_num), None)
            if at is None:
                continue
            _, pts, t = recent[at]
            if skipper is not None and at > 0 and skipper.gap(recent[at - 1][1], pts):
                pts, t = skipper.refine_cut(job, job.shot_width, recent[at - 1][1], pts) or (pts, t)
            add_cut(pts, t)

    def detect(frame, pts, t):
        nonlocal det_no
        small = shot_frame(frame)
        if skipper is not None:
            # Pictures are skipped: number frames by their place in the stream, so
            # --min-scene-len (frames) means what it means in a full decode (was:
            # counted in decoded pictures, ~1.5x longer, and short shots lost their cut).
            det_no = max(det_no, round(t * float(rate)))
        recent.append((det_no, pts, t))
        found(detector.process_frame(FrameTimecode(det_no, fps=rate), small))
        det_no += 1

    def place(timed) -> None:
        """A frame with its settled time (facecut.timeline): to the detector and the sampler."""
        nonlocal t0, last_t, feed_from_pts
        frame, pts, u, event = timed
        if t0 is None:
            t0 = u
            sink.start(t0)
        t = u - t0
        if skipper is not None:
            skipper.settled(pts, t)
        if event == "discontinuity" and last_t > -math.inf:
            add_cut(pts, t)  # another recording starts here: never one clip across it
        last_t = t
        if detector is not None and (feed_from_pts is None or pts >= feed_from_pts):
            feed_from_pts = None
            detect(frame, pts, t)
        for k, f, p, tt in sampler.feed(frame, pts, t):
            emit(k, f, p, tt)

    def handle(frame):
        nonlocal frames
        frames += 1
        if skipper is not None:
            skipper.decoded(frame.pts)
        for timed in clock.push(frame):
            place(timed)

    status, reason = "ok", ""
    try:
        for packet in container.demux(stream):
            if skipper is not None:
                skipper.before(packet)
            try:
                decoded = packet.decode()
            except (av.FFmpegError, ValueError) as ex:  # a corrupt packet: skip it, within budget
                errors += 1
                last_err = str(ex).split(":")[0]
                if errors > job.error_budget:
                    status, reason = "failed", f"too many decode errors ({errors}; last: {last_err})"
                    break
                continue
            for frame in decoded:
                handle(frame)
            now = time.perf_counter()
            if now - last_stat > _STAT_EVERY:
                last_stat = now
                sink.progress(frames, n, max(0.0, last_t))
    except (av.FFmpegError, OSError) as ex:  # the demuxer gave up (truncated file, I/O error)
        errors += 1
        last_err = str(ex)
        status, reason = "partial", f"stopped reading at {max(0.0, last_t):.1f}s: {ex}"

    if status != "failed":
        for timed in clock.flush():
            place(timed)
    end_time = (last_t + frame_dur) if last_t > -math.inf else 0.0
    if status != "failed":
        for k, f, p, tt in sampler.finish(end_time):
            emit(k, f, p, tt)
        if detector is not None and last_t > -math.inf:
            found(detector.post_process(FrameTimecode(det_no, fps=rate)))
    if status == "ok" and errors:
        status, reason = "partial", f"{errors} corrupt packet(s) skipped (last: {last_err})"
    if status == "ok" and frames == 0 and job.start_k == 0:
        status, reason = "failed", "no frame could be decoded"
    return DecodeResult(status, reason, n, frames, errors, end_time, t0, pending_cuts[:])
