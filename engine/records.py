"""Every msgspec Struct written to a file (logs, markers, scan.json, plan.json);
the messages between processes are in facecut.protocol.

Units, unless a field says otherwise: times in seconds (float, for display and
scoring) next to the exact integer ``pts`` in the stream's time base; boxes and
landmarks in *source* pixels of the displayed (rotation-applied) picture.

How records may evolve (logs are append-only and outlive versions):
  * add fields only at the end, always with a default;
  * never rename, reorder or retype a field, never reuse a tag;
  * ``array_like`` records (hot, many per second) follow the same rule: a new
    trailing field with a default decodes old rows fine.
Bump ``SCHEMA`` only for a change old readers must refuse.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import msgspec
from msgspec import Struct

from facecut.fsio import video_key

SCHEMA = 1

# --------------------------------------------------------------------------- scan
#
# File names are bytes on Linux and may not be valid UTF-8 (Python hands them
# over with surrogate escapes, which JSON cannot hold). A record's ``path`` is
# always valid text (undecodable parts shown as U+FFFD, made unique by the scan);
# ``raw_path`` keeps the real name for opening the file, only when it differs.


def raw_name(rel: str) -> str:
    """``raw_path`` of a relative path as the OS gave it: "" when it is valid
    text, else its bytes (``os.fsencode``) in hex."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(rel).hex()
    return ""


def os_name(path: str, raw: str) -> str:
    """The name to open: ``raw`` decoded back (``os.fsdecode``), else ``path``."""
    return os.fsdecode(bytes.fromhex(raw)) if raw else path


class AudioInfo(Struct, frozen=True, kw_only=True):
    index: int
    codec: str
    channels: int = 0
    sample_rate: int = 0


class VideoInfo(Struct, frozen=True, kw_only=True):
    """One input file as ``scan`` saw it. ``status == "failed"`` carries ``reason``."""

    path: str  # relative to the input folder, POSIX separators
    # "duplicate": the same bytes as ``duplicate_of`` (same size and fingerprint),
    # which is analysed instead; this one is not.
    status: Literal["ok", "failed", "duplicate"] = "ok"
    reason: str = ""  # one human line when failed (or duplicate)
    size: int = 0  # bytes
    mtime_ns: int = 0
    fingerprint: str = ""  # size + hash of first/last MiB (fsio.fingerprint)
    container: str = ""  # demuxer name(s), e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    stream_index: int = -1  # the video stream analysed
    codec: str = ""
    width: int = 0  # coded size
    height: int = 0
    rotation: int = 0  # display rotation, degrees counter-clockwise (PyAV frame.rotation)
    sar: str = "1:1"  # sample aspect ratio
    pix_fmt: str = ""
    fps: float = 0.0  # nominal (average) rate; exact sampling never relies on it
    rate: str = ""  # the same as an exact fraction, e.g. "30000/1001"
    time_base: str = ""  # video stream time base, e.g. "1/15360"
    start_time: float = 0.0  # seconds of the first video timestamp (TS often > 0)
    duration: float = 0.0  # seconds (stream, else container)
    frames: int = 0  # frame count from the container, 0 when unknown
    vfr: bool = False  # variable frame rate (irregular timestamps)
    audio: tuple[AudioInfo, ...] = ()
    duplicate_of: str = ""  # path of the first file with the same content
    raw_path: str = ""  # the real name when ``path`` is not it (see raw_name); "" otherwise
    # The work folder's name for this video (fsio.video_key of ``path``): computed
    # once, when the record is made or read (scan.json written before it existed).
    key: str = ""

    def __post_init__(self) -> None:
        if not self.key:
            msgspec.structs.force_setattr(self, "key", video_key(self.path))

    def fs_path(self, input_dir: str | Path) -> Path:
        """The file itself: ``input_dir`` joined with the real relative name."""
        return Path(input_dir) / os_name(self.path, self.raw_path)

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) after rotation: the orientation faces are found in."""
        if self.rotation % 180:
            return self.height, self.width
        return self.width, self.height


class ScanResult(Struct, kw_only=True):
    schema: int = SCHEMA
    input_dir: str  # absolute
    created: float  # unix time
    extensions: tuple[str, ...]
    filter_from: str | None = None
    skip_pattern: str | None = None
    videos: list[VideoInfo] = []
    skipped: list[str] = []  # relative paths left out by filter/pattern
    ignored: dict[str, int] = {}  # files the walk left out by extension: extension ("" none) -> count


# --------------------------------------------------------------------------- analysis


class Face(Struct, frozen=True, array_like=True, gc=False):
    """One detected face. Coordinates in source pixels (displayed orientation).

    Angles in degrees, insightface 1k3d68's convention (buffalo_l uses its exact
    maths; MTCNN decomposes a rigid fit to its 5 landmarks the same way):
    yaw > 0: the nose points towards the image's right edge (the subject turns
    to their own left); pitch > 0: the face tilts up; roll > 0: the face turns
    clockwise as displayed. MTCNN's pitch is coarse (5 points carry little
    depth); use it only for wide gates.
    """

    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    kps: tuple[float, ...]  # 5 landmarks: x0, y0, ..., x4, y4 (eyes, nose, mouth corners)
    score: float  # detector confidence 0..1
    yaw: float  # degrees, see above
    pitch: float  # degrees
    roll: float  # degrees
    short: float  # short side of the box, source pixels
    emb: bytes | None = None  # L2-normalised embedding as little-endian float16, or None
    # Variance of the Laplacian of the face, gray, resized to 64 x 64 (facecut.quality);
    # -1: not measured (an older log, or an analysis run without it).
    sharp: float = -1.0


def embedding_to_bytes(vec) -> bytes:
    import numpy as np

    return np.asarray(vec, dtype="<f2").tobytes()


def embedding_from_bytes(raw: bytes):
    import numpy as np

    return np.frombuffer(raw, dtype="<f2").astype(np.float32)


# --------------------------------------------------------------------------- analysis log
#
# One append-only log per video (facecut.logio framing, msgpack payloads). All
# log records are array_like tagged Structs (msgspec cannot mix array_like and
# map-like Structs in one Union): [tag, field, field, ...].
#
# Record order in a log is deterministic: the header, then samples in grid
# order, each preceded by the shot cuts the decoder found before it, then the
# completion record. A resumed run appends exactly what an uninterrupted run
# would have written after the last committed sample.


class LogHeader(Struct, frozen=True, tag="h", tag_field="t", array_like=True):
    """First record. A resumed run must have the same analysis parameters."""

    schema: int
    video: str  # relative path
    fingerprint: str
    fps: float  # sampling rate (samples per second of video)
    t0: float  # seconds of the first frame (stream time); times below are relative to it
    max_side: int  # long-side cap of sampled frames (pixels)
    model: str  # e.g. "mtcnn" / "buffalo_l"
    model_params: str  # canonical JSON of the parameters that change results
    detector: str  # shot detector, e.g. "adaptive"
    detector_params: str  # canonical JSON


class Sample(Struct, frozen=True, tag="s", tag_field="t", array_like=True, gc=False):
    """One sampled frame and the faces found in it."""

    k: int  # grid index: the frame displayed at k / fps seconds (relative to t0)
    pts: int  # the frame's pts in the stream time base
    time: float  # the frame's time in seconds, relative to t0
    scale: float  # analysed pixels / source pixels (<= 1)
    faces: tuple[Face, ...] = ()


class Cut(Struct, frozen=True, tag="c", tag_field="t", array_like=True):
    """A shot boundary: the first frame of a new shot."""

    pts: int
    time: float  # seconds relative to t0


class Done(Struct, frozen=True, tag="d", tag_field="t", array_like=True):
    """Last record of a finished video."""

    status: Literal["ok", "partial", "failed"]
    reason: str = ""
    samples: int = 0  # sample records in the log
    errors: int = 0  # corrupt packets skipped (by the job that finished the video)
    duration: float = 0.0  # seconds from t0 to the end of the last frame


LogRecord = LogHeader | Sample | Cut | Done


class VideoDone(Struct, kw_only=True):
    """Completion marker ``WORK/analysis/<key>.done`` (written atomically) for cheap
    listing; the log's Done record is the authority."""

    video: str
    key: str
    status: Literal["ok", "partial", "failed"]
    reason: str = ""
    samples: int = 0
    duration: float = 0.0
    finished: float = 0.0  # unix time


class Shot(Struct, frozen=True, kw_only=True):
    index: int
    start: float  # seconds relative to t0
    end: float


# --------------------------------------------------------------------------- plan (track + score -> cut + report)
#
# WORK/plan.json is the single source of truth for cut and report. Times are
# seconds relative to the source's first frame (``SourcePlan.t0`` seconds of
# stream time), which is what players show.


class ClipStats(Struct, kw_only=True):
    frames: int  # sampled frames in the clip's span with a usable face
    face_short_median: float  # source pixels
    yaw_range: tuple[float, float]  # degrees, min..max over the clip
    pitch_range: tuple[float, float] = (0.0, 0.0)
    det_score_median: float = 0.0


class ClipQuality(Struct, kw_only=True):
    """How well a clip will swap: its parts and their score (facecut.quality)."""

    score: float  # 0-100, higher swaps better
    face_px: float  # median short side of the main face, source pixels
    yaw: float  # median |yaw|, degrees
    pitch: float  # median |pitch|, degrees
    sharpness: float | None  # median variance of the Laplacian (None: not measured)
    stability: float  # median movement between samples, face sizes
    presence: float  # share of the span's samples with the main face
    crowded: float  # share of the span's samples with another sizeable face


class Clip(Struct, kw_only=True):
    id: str  # UUID from source fingerprint + start + end (fsio.clip_id)
    source: str  # relative path of the source video
    key: str  # video key (work-folder names)
    start: float  # planned start, seconds
    end: float  # planned end, seconds
    shot: int  # index of the shot it lies in
    tracks: list[int]  # track ids (per source) merged into this clip
    stats: ClipStats
    thumb: str | None = None  # thumbnail path relative to WORK (captured during analysis)
    # filled by cut:
    file: str | None = None  # path relative to the output folder
    cut_start: float | None = None  # actual start (keyframe at/before start, stream copy)
    cut_end: float | None = None
    lead_in: float | None = None  # start - cut_start
    container: str | None = None  # "mp4" | "mkv" (fallback when the codec can't go in MP4)
    # A segment longer than max_dur split into parts: this is part ``part`` of ``parts``
    # (1-based) of the group whose first part has id ``group``. Unsplit: 1 of 1, "".
    part: int = 1
    parts: int = 1
    group: str = ""
    # filled by cut: why this clip was re-encoded instead of stream-copied ("" = copied)
    encoded: str = ""
    quality: ClipQuality | None = None  # None: a plan written before quality scores
    person: int | None = None  # people group of its main face (embedding models only)


CUT_FIELDS = ("file", "cut_start", "cut_end", "lead_in", "container", "encoded")  # what cut fills in a Clip


class TrackSummary(Struct, kw_only=True):
    """A face track and the verdict of the quality gates (report timelines)."""

    id: int
    shot: int
    start: float
    end: float
    frames: int
    status: Literal["accepted", "rejected"]
    reason: str = ""  # rejection reason: too_small, pose, det_score, too_short, too_long, identity


class SourcePlan(Struct, kw_only=True):
    path: str  # relative to the input folder
    key: str
    status: Literal["ok", "partial", "failed", "pending"]
    reason: str = ""
    duration: float = 0.0
    fingerprint: str = ""
    size: int = 0  # bytes, and modification time, of the file as analysed (0: unknown)
    mtime_ns: int = 0
    t0: float = 0.0  # stream time of the first frame, seconds
    shots: list[Shot] = []
    tracks: list[TrackSummary] = []
    raw_path: str = ""  # the real name when ``path`` is not it (VideoInfo.raw_path)

    def fs_path(self, input_dir: str | Path) -> Path:
        """The source file itself (see VideoInfo.fs_path)."""
        return Path(input_dir) / os_name(self.path, self.raw_path)


class PersonFace(Struct, kw_only=True):
    """Where a person's face is shown: a thumbnail (relative to WORK) and the face
    box in it as fractions of the picture (x, y, width, height)."""

    clip: str  # the clip it comes from
    thumb: str
    box: tuple[float, float, float, float]


class Person(Struct, kw_only=True):
    """A people group: the clips whose main face is one person (facecut.people)."""

    id: int  # stable across re-scores of one work folder
    clips: int
    seconds: float  # planned seconds of their clips
    face: PersonFace | None = None
    centroid: list[float] = []  # mean embedding; the next re-score matches its groups to these


class Plan(Struct, kw_only=True):
    schema: int = SCHEMA
    created: float = 0.0
    input_dir: str = ""
    model: str = ""
    params: dict = {}  # every option used (analysis header + score options)
    sources: list[SourcePlan] = []
    clips: list[Clip] = []
    rejected: dict[str, int] = {}  # reason -> number of tracks
    people: list[Person] = []  # people groups (an embedding model's logs only)
