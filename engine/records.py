"""Every msgspec Struct that crosses a process or file boundary.

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

from typing import Literal

import msgspec
from msgspec import Struct

SCHEMA = 1

# --------------------------------------------------------------------------- scan


class AudioInfo(Struct, frozen=True, kw_only=True):
    index: int
    codec: str
    channels: int = 0
    sample_rate: int = 0


class VideoInfo(Struct, frozen=True, kw_only=True):
    """One input file as ``scan`` saw it. ``status == "failed"`` carries ``reason``."""

    path: str  # relative to the input folder, POSIX separators
    status: Literal["ok", "failed"] = "ok"
    reason: str = ""  # one human line when failed
    size: int = 0  # bytes
    mtime_ns: int = 0
    fingerprint: str = ""  # size + mtime + hash of first/last MiB (fsio.fingerprint)
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


# --------------------------------------------------------------------------- analysis


class Face(Struct, frozen=True, array_like=True, gc=False):
    """One detected face. Coordinates in source pixels (displayed orientation)."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    kps: tuple[float, ...]  # 5 landmarks: x0, y0, ..., x4, y4 (eyes, nose, mouth corners)
    score: float  # detector confidence 0..1
    yaw: float  # degrees; sign: + when the face turns to the image's left
    pitch: float  # degrees
    roll: float  # degrees
    short: float  # short side of the box, source pixels
    emb: bytes | None = None  # L2-normalised embedding as little-endian float16, or None


def embedding_to_bytes(vec) -> bytes:
    import numpy as np

    return np.asarray(vec, dtype="<f2").tobytes()


def embedding_from_bytes(raw: bytes):
    import numpy as np

    return np.frombuffer(raw, dtype="<f2").astype(np.float32)
