"""One video's analysis log: what an existing log says, and writing it in order.

A video's log (WORK/analysis/<key>.log, facecut.logio) is a committed prefix:
a ``LogHeader``, then the samples in grid order, each preceded by the shot
cuts found before it, then a ``Done`` record. Samples come back from the
inference processes in any order; :class:`VideoRun` holds them until every
earlier one is in, so the log of a run is the same whatever the process counts,
and a log cut short anywhere is a valid prefix to resume after.

When a video is finished, its shot list (``<key>.shots.json``) and completion
marker (``<key>.done``) are derived from the log; a killed run that left the
``Done`` record but not the markers gets them on the next start (facecut.resume).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING


from facecut.config import AnalyzeConfig
from facecut.fsio import write_json
from facecut.workdir import WorkDir
from facecut.logio import LogWriter, read_first, read_records
from facecut.protocol import CutMark, DecodeJob, DecodeResult, Progress
from facecut.records import SCHEMA, Cut, Done, LogHeader, LogRecord, Sample, Shot, VideoDone, VideoInfo

if TYPE_CHECKING:
    from facecut.procs import Worker

# --------------------------------------------------------------------------- reading


@dataclass
class LogState:
    """What an existing log says about a video (and, while a run writes it, what it
    would say if read now)."""

    header: LogHeader | None = None
    samples: int = 0
    last_k: int = -1
    last_pts: int | None = None
    last_cut: Cut | None = None
    cuts: list[Cut] = field(default_factory=list)
    done: Done | None = None
    monotonic: bool = True  # sample pts increase with time (seek-resume is safe)
    records: list | None = None  # every record, when read with keep=True

    def took_sample(self, k: int, pts: int) -> None:
        self.samples += 1
        self.last_k = k
        if self.last_pts is not None and pts <= self.last_pts:
            self.monotonic = False
        self.last_pts = pts

    def took_cut(self, cut: Cut) -> None:
        self.cuts.append(cut)
        self.last_cut = cut


def read_log_state(path: Path, keep: bool = False) -> LogState:
    """The state of the log at ``path`` (empty when there is none); ``keep``: with
    its records. Raises LogCorruption for damage other than a torn tail."""
    st = LogState()
    if not path.exists():
        return st
    records = read_records(path, LogRecord)
    for rec in records:
        if isinstance(rec, Sample):
            st.took_sample(rec.k, rec.pts)
        elif isinstance(rec, Cut):
            st.took_cut(rec)
        elif isinstance(rec, LogHeader):
            st.header = rec
        elif isinstance(rec, Done):
            st.done = rec
    if keep:
        st.records = records
    return st


def finished_state(work: WorkDir, key: str) -> LogState | None:
    """A finished video's state from its completion marker and the log's first
    frame, without reading its records (a batch of thousands of finished videos
    resumes in moments); None when there is no marker (read the log)."""
    marker = work.load_done(key)
    if marker is None:
        return None
    header = read_first(work.log_path(key), LogRecord)
    if not isinstance(header, LogHeader):
        return None
    done = Done(status=marker.status, reason=marker.reason, samples=marker.samples, duration=marker.duration)
    return LogState(header=header, samples=marker.samples, done=done)


def log_header(cfg: AnalyzeConfig, info: VideoInfo, t0: float) -> LogHeader:
    """The header a run with ``cfg`` writes (and a resume must find)."""
    return LogHeader(
        schema=SCHEMA, video=info.path, fingerprint=info.fingerprint, fps=cfg.fps, t0=t0,
        max_side=cfg.max_side, model=cfg.model, model_params=cfg.model_params(),
        detector=cfg.detector, detector_params=cfg.detector_params(),
    )


def shots_from_cuts(cut_times, duration: float) -> list[Shot]:
    """Shots between the cuts (seconds); cuts outside (0, duration) are ignored."""
    inner = sorted({float(t) for t in cut_times if 0.0 < t < duration})
    bounds = [0.0, *inner, max(float(duration), 0.0)]
    return [Shot(index=i, start=a, end=b) for i, (a, b) in enumerate(zip(bounds, bounds[1:]))]


def write_markers(work: WorkDir, info: VideoInfo, key: str, cuts: list[Cut], done: Done) -> None:
    """The shot list and the completion marker, both derived from the log."""
    write_json(work.shots_path(key), shots_from_cuts([c.time for c in cuts], done.duration))
    write_json(
        work.done_path(key),
        VideoDone(video=info.path, key=key, status=done.status, reason=done.reason, samples=done.samples,
                  duration=done.duration, finished=time.time()),
    )


# --------------------------------------------------------------------------- writing in order


@dataclass(slots=True)
class Pending:
    """A sample the decoder delivered, waiting for its result and its turn."""

    cuts: list[CutMark]
    k: int
    pts: int
    payload: bytes | None = None  # the encoded Sample, once inference returned it
    n_faces: int = 0


@dataclass(eq=False)
class VideoRun:
    """One video during a run: its log, the job decoding it, samples in flight."""

    info: VideoInfo
    key: str
    log_path: Path
    state: LogState
    writer: LogWriter | None = None
    job: DecodeJob | None = None
    decoder: Worker | None = None
    next_n: int = 0  # next sample number (of the current job) to write
    pending: dict[int, Pending] = field(default_factory=dict)
    decoded: DecodeResult | None = None  # how the current job's decode ended
    t0: float | None = None
    status: str = "pending"  # pending | running | ok | partial | failed | skipped
    reason: str = ""
    frames: int = 0
    errors: int = 0
    position: float = 0.0
    last_stat: Progress | None = None
    infer_deaths: int = 0  # inference processes that died with this video's samples in hand

    def open_log(self, cfg: AnalyzeConfig, t0: float | None) -> None:
        """Start a fresh log (its first sample arrived, or it ended before any)."""
        self.writer = LogWriter(self.log_path)
        self.t0 = t0 or 0.0
        header = log_header(cfg, self.info, self.t0)
        self.writer.append(header)
        self.state.header = header

    def reopen_log(self) -> None:
        """Continue an existing log (resume)."""
        self.writer = LogWriter(self.log_path)
        self.t0 = self.state.header.t0

    def write_ready(self) -> tuple[int, int]:
        """Append every sample that is next in order and has its result; returns
        (samples, faces) committed. The log state follows every committed sample,
        as read_log_state would find it: a restart resumes right after it."""
        samples = faces = 0
        while (p := self.pending.get(self.next_n)) is not None and p.payload is not None:
            del self.pending[self.next_n]
            self.write_cuts(p.cuts)
            self.writer.append_raw(p.payload)
            self.state.took_sample(p.k, p.pts)
            samples += 1
            faces += p.n_faces
            self.next_n += 1
        return samples, faces

    @property
    def complete(self) -> bool:
        """The decoder is done and everything it sent is written."""
        return self.decoded is not None and self.next_n >= self.decoded.samples

    def write_cuts(self, cuts: list[CutMark]) -> None:
        for pts, t in cuts:
            c = Cut(pts=pts, time=t)
            self.writer.append(c)
            self.state.took_cut(c)

    def finish(self, cfg: AnalyzeConfig, work: WorkDir, result: DecodeResult) -> Done:
        """Close the log with its Done record and write the markers."""
        if self.writer is None:
            self.open_log(cfg, result.t0)
        self.write_cuts(result.cuts)
        # (No frame count here: a resumed job decodes from a seek point, and the
        # log must be identical to an uninterrupted run's.)
        done = Done(status=result.status, reason=result.reason, samples=self.state.samples, errors=result.errors,
                    duration=result.end_time)
        self.writer.append(done)
        self.writer.close()
        self.state.done = done
        self.status, self.reason = result.status, result.reason
        self.pending.clear()
        write_markers(work, self.info, self.key, self.state.cuts, done)
        return done

    def failed_result(self, reason: str) -> DecodeResult:
        """How a video ends whose decoding or analysis stopped: the committed prefix is kept."""
        end = max(self.position, self.state.cuts[-1].time if self.state.cuts else 0.0)
        return DecodeResult("failed", reason, 0, self.frames, self.errors, end, self.t0, [])

    def close(self) -> None:
        if self.writer is not None and not self.writer.closed:
            try:
                self.writer.close()
            except OSError:
                pass
        self.writer = None
