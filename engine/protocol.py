"""Every message between the coordinator and its worker processes.

This is the one written note on the protocol; decode.py, infer.py, procs.py and
coordinator.py point here. Each message is a tagged, array-like msgspec Struct,
sent as msgpack bytes over the worker's own duplex pipe (``send``/``recv``
below) and dispatched by its type. Only small numbers cross the pipes; pixels
stay in the shared-memory frame ring (facecut.ring).

Slot life cycle (a slot id is always in exactly one place)::

    free pool --Slot--> decoder --Ready--> ready queue --Batch--> inference
        ^                                                              |
        +---------------------------Release----------------------------+

Coordinator -> decoder::

    Job(job)            decode one video (a DecodeJob); only when idle
    Slot(slot)          a free ring slot the decoder may fill (at most a few in hand)
    Cancel(job_id)      stop that job (its video failed or is restarted)
    Stop()              end the process

Decoder -> coordinator::

    Started(job_id, t0)                 first frame of a fresh video: times are relative to t0
    Ready(slot, seq, job_id, n, k, pts, time, scale, height, width, cuts)
        the n-th sample of the job (grid index k) is in ``slot``; ``cuts`` are the
        shot cuts found since the previous sample, so the log order of cuts and
        samples is deterministic
    Progress(job_id, frames, samples, position, blocked, elapsed, cpu)   about every 0.5 s
    JobDone(job_id, result)             the video is decoded (result: DecodeResult)
    Cancelled(job_id)                   a Cancel took effect

Coordinator -> inference::

    Batch(items)        Items: ring slots to analyse, with where their thumbnail goes
    Stop()

Inference -> coordinator::

    ModelLoaded(name, provider, has_embeddings)    once, after loading
    ModelFailed(message, exit_code)                the model cannot load
    Want()              ready for the next batch
    Release(slots)      pixels copied out: the slots are free again
    Results(out, busy, starved, cpu)    one Result per item: a msgpack-encoded Sample
                                    record (appended to the log as it is) or an error
    Warn(text)          a per-item problem that was contained

Any worker -> coordinator::

    Fatal(traceback)    an uncaught exception, just before the process exits

An inference process copies a batch's slots out and releases them *before* the
model runs, and asks for the next batch at the same moment, so decoders never
wait on the model. The coordinator's view of each worker is typed per kind
(DecoderState, InferState), kept on ``procs.Worker.state``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Union

import msgspec
from msgspec import Struct

from facecut.errors import FacecutError


class DecodeJob(Struct, frozen=True, kw_only=True):
    """What a decoder process is asked to do with one video."""

    job_id: int  # unique per attempt; stale messages of a cancelled job are recognised by it
    path: bytes  # absolute, os.fsencode'd: a file name need not be valid text (see ``file``)
    rel: str
    stream_index: int
    fps: float  # sampling rate
    max_side: int  # long-side cap of sampled frames, 0 = none
    start_k: int = 0  # first grid index still to sample (resume)
    t0: float | None = None  # first-frame time known from an earlier run's header
    # Resume. Monotonic timestamps: seek to the keyframe before the last logged cut
    # (resume_cut_pts), restart the shot detector there, drop cuts at or before it.
    # Otherwise (resume_cut_pts None): decode from the start and drop cuts at or
    # before resume_cut_time (the decoder's unwrapped, monotonic time).
    resume_cut_pts: int | None = None
    resume_cut_time: float | None = None
    last_sample_pts: int | None = None  # seek-resume: frames up to this pts were already sampled
    detector: str = "adaptive"  # "adaptive" | "content" | "none"
    threshold: float | None = None  # detector threshold (None: the detector's default)
    min_scene_len: int = 15  # frames
    shot_width: int = 256  # width of the frames fed to the shot detector
    error_budget: int = 50  # corrupt packets tolerated before the video is failed
    threads: int = 1  # decoder threads (FFmpeg frame threading)
    fast: str = "off"  # facecut.config.FAST_DECODE: what the decoder may skip
    hwaccel: str = "none"  # facecut.media.HWACCELS: hardware decoder to try

    @property
    def file(self) -> str:
        return os.fsdecode(self.path)


CutMark = tuple[int, float]  # a shot cut: (pts of its first frame, seconds relative to t0)


class DecodeResult(Struct, array_like=True, frozen=True):
    """How a decode pass over one video ended."""

    status: str  # ok | partial | failed
    reason: str
    samples: int
    frames: int
    errors: int
    end_time: float  # seconds relative to t0: end of the last frame
    t0: float | None
    cuts: list[CutMark]  # cuts found after the last sample


class _Msg(Struct, array_like=True, frozen=True, tag=True):
    """Base of every message (tag: the class name)."""


# ----------------------------------------------------------------- to a decoder


class Job(_Msg):
    job: DecodeJob


class Slot(_Msg):
    slot: int


class Cancel(_Msg):
    job_id: int


class Stop(_Msg):
    pass


# ----------------------------------------------------------------- from a decoder


class Started(_Msg):
    job_id: int
    t0: float


class Ready(_Msg):
    slot: int
    seq: int  # the ring's sequence number of this write (facecut.ring checks it on read)
    job_id: int
    n: int  # sample number within the job (the order the log is written in)
    k: int  # grid index: the sample stands for time k / fps
    pts: int
    time: float  # seconds relative to t0
    scale: float  # sampled pixels / decoded pixels
    height: int
    width: int
    cuts: list[CutMark]


class Progress(_Msg):
    job_id: int
    frames: int
    samples: int
    position: float  # seconds of the video decoded
    blocked: float  # seconds this decoder waited for a free slot (all jobs)
    elapsed: float  # seconds since the job started
    cpu: float  # CPU seconds this process has used so far, all its threads


class JobDone(_Msg):
    job_id: int
    result: DecodeResult


class Cancelled(_Msg):
    job_id: int


# ----------------------------------------------------------------- to an inference process


class Item(Struct, array_like=True, frozen=True):
    """One sample of a batch: where its pixels are and what its record says."""

    slot: int
    seq: int
    job_id: int
    n: int
    k: int
    pts: int
    time: float
    scale: float
    thumb: bytes | None  # where its thumbnail goes, os.fsencode'd (None: no thumbnail for this sample)


class Batch(_Msg):
    items: list[Item]


# ----------------------------------------------------------------- from an inference process


class ModelLoaded(_Msg):
    name: str
    provider: str
    has_embeddings: bool


class ModelFailed(_Msg):
    message: str
    exit_code: int


class Want(_Msg):
    pass


class Release(_Msg):
    slots: list[int]


class Result(Struct, array_like=True, frozen=True):
    job_id: int
    n: int
    payload: bytes | None  # the msgpack-encoded Sample record; None when the model failed on it
    n_faces: int
    error: str  # "" or why the model failed on this frame alone


class Results(_Msg):
    out: list[Result]
    busy: float  # seconds the model ran on this batch
    starved: float  # seconds waited for this batch
    cpu: float  # CPU seconds this process has used so far, all its threads


class Warn(_Msg):
    text: str


class Fatal(_Msg):
    traceback: str


Message = Union[
    Job, Slot, Cancel, Stop, Started, Ready, Progress, JobDone, Cancelled, Batch, ModelLoaded, ModelFailed,
    Want, Release, Results, Warn, Fatal,
]

_ENC = msgspec.msgpack.Encoder()
_DEC = msgspec.msgpack.Decoder(Message)


def encode(msg: Message) -> bytes:
    return _ENC.encode(msg)


def decode(data: bytes) -> Message:
    try:
        return _DEC.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as ex:
        raise ProtocolError(f"malformed message between processes: {ex}") from ex


def send(conn, msg: Message) -> None:
    try:
        data = _ENC.encode(msg)
    except UnicodeEncodeError:  # text for people (a reason, a traceback) naming a file that is not valid text
        data = _ENC.encode(_printable(msgspec.to_builtins(msg, builtin_types=(bytes,))))
    conn.send_bytes(data)


def _printable(obj):
    """Strings made encodable: undecodable bytes of file names shown escaped.
    Paths travel as bytes (DecodeJob.path, Item.thumb), so only text for people changes."""
    if isinstance(obj, str):
        return obj.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(obj, list | tuple):
        return [_printable(x) for x in obj]
    if isinstance(obj, dict):
        return {_printable(k): _printable(v) for k, v in obj.items()}
    return obj


def recv(conn) -> Message:
    return decode(conn.recv_bytes())


class ProtocolError(FacecutError):
    """A message that is not one of this module's (a version mix-up or a bug)."""


# ----------------------------------------------------------------- the coordinator's view of a worker


@dataclass
class DecoderState:
    held: set[int] = field(default_factory=set)  # slots handed out, not yet filled
    job: int | None = None  # the job it works on
    blocked: float = 0.0  # seconds it waited for slots (this slot's processes, all jobs)
    cpu: float = 0.0  # CPU seconds (this slot's processes: a restarted one adds to the dead one's)
    fatal: str | None = None
    before: tuple[float, float] = (0.0, 0.0)  # (blocked, cpu) of the processes this one replaced

    def reported(self, msg: Progress) -> None:
        """Take a Progress's process-wide totals (counted from the process's start)."""
        self.blocked, self.cpu = self.before[0] + msg.blocked, self.before[1] + msg.cpu

    def successor(self) -> DecoderState:
        """The state of the process that replaces this dead one: its totals go on."""
        return DecoderState(blocked=self.blocked, cpu=self.cpu, before=(self.blocked, self.cpu))


@dataclass
class InferState:
    wants: int = 0  # batches it asked for and has not got
    out: list[Item] = field(default_factory=list)  # items sent, results not yet back
    unreleased: set[int] = field(default_factory=set)  # slots sent, not yet released
    loaded: bool = False
    model: ModelLoaded | None = None
    frames: int = 0
    faces: int = 0
    batches: int = 0
    busy: float = 0.0
    starved: float = 0.0
    cpu: float = 0.0  # CPU seconds (this slot's processes: a restarted one adds to the dead one's)
    first: float | None = None  # perf_counter of its first batch's start
    fatal: str | None = None
    cpu_before: float = 0.0  # CPU of the processes this one replaced

    def successor(self) -> InferState:
        """The state of the process that replaces this dead one: frames, faces, busy,
        CPU... go on (its model and the batches it held do not)."""
        return InferState(frames=self.frames, faces=self.faces, batches=self.batches, busy=self.busy,
                          starved=self.starved, cpu=self.cpu, first=self.first, cpu_before=self.cpu)

    def took(self, msg: Results) -> None:
        """Account a batch's results."""
        self.batches += 1
        self.busy += msg.busy
        self.starved += msg.starved
        self.cpu = self.cpu_before + msg.cpu
        if self.first is None:
            self.first = time.perf_counter() - msg.busy
