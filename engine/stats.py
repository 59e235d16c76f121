"""Snapshots of a run's counters, published by the coordinator a few times a
second. The dashboard, ``--json-progress`` and the benchmark read these; they
never drive the engine."""

from __future__ import annotations

from msgspec import Struct, field


class DecoderStats(Struct, kw_only=True):
    name: str
    video: str = ""  # relative path of the current video ("" when idle)
    position: float = 0.0  # seconds into the current video
    duration: float = 0.0  # seconds, from the scan
    frames: int = 0  # frames decoded in the current video
    samples: int = 0  # frames sampled into the ring in the current video
    decode_fps: float = 0.0  # frames decoded per second of wall time (current video)
    sample_fps: float = 0.0
    blocked_s: float = 0.0  # waiting for a free ring slot (ring full), whole run
    cpu_s: float = 0.0  # CPU the process has used (all its threads) as last reported, plus the CPU of
    # the dead ones it replaced (like every counter of a restarted worker: it goes on, not from 0)
    alive: bool = True


class InferStats(Struct, kw_only=True):
    name: str
    model: str = ""
    provider: str = ""
    frames: int = 0
    faces: int = 0
    batches: int = 0
    fps: float = 0.0  # frames per second of wall time since the first batch
    faces_per_s: float = 0.0
    batch_fill: float = 0.0  # mean frames per batch / --batch
    busy_s: float = 0.0  # time inside the model
    starved_s: float = 0.0  # waiting for ready frames (ring empty)
    cpu_s: float = 0.0  # as DecoderStats.cpu_s (frames, faces, busy... of a restarted one go on too)
    alive: bool = True


class RingStats(Struct, kw_only=True):
    slots: int = 0
    free: int = 0  # in the coordinator's free pool
    at_decoders: int = 0  # handed to decoders, not yet filled
    ready: int = 0  # filled, waiting for inference
    at_infer: int = 0  # sent to inference, not yet released
    slot_mib: float = 0.0


class RunStats(Struct, kw_only=True):
    """One snapshot of a run."""

    time: float  # unix time
    elapsed: float  # seconds since the run started
    stage: str = "analyze"
    decoders: list[DecoderStats] = []
    infer: list[InferStats] = []
    ring: RingStats = field(default_factory=RingStats)
    bottleneck: str = ""  # plain words: "inference-bound", "decode-bound", ...
    videos_total: int = 0
    videos_done: int = 0  # finished ok (this run or earlier)
    videos_partial: int = 0
    videos_failed: int = 0
    video_seconds_total: float = 0.0
    video_seconds_done: float = 0.0  # finished videos plus progress of running ones
    video_seconds_this_run: float = 0.0
    speed: float = 0.0  # video seconds per wall second, this run
    eta_s: float | None = None
    samples_written: int = 0
    coordinator_cpu_s: float = 0.0  # CPU of the coordinator's process (all its threads) during this run
    faces_found: int = 0
    warnings: list[str] = []  # the last few, newest last
    # later stages (filled by `run` as they happen)
    tracks: int | None = None
    segments: int | None = None  # accepted segments (clips planned)
    clips_cut: int | None = None
    clips_total: int | None = None
    report: str | None = None  # path of the HTML report once written
