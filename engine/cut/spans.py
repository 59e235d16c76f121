"""One clip being written during a pass over its source: the span, the
demuxed packet the copy pass hands it, and its output file's life (opened
under a temporary name, aborted, or finished and renamed into place).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av

from facecut.cut.files import _tag
from facecut.fsio import replace_with_retry, temp_name
from facecut.records import Clip


@dataclass(slots=True)
class _Pkt:
    """A demuxed packet with unwrapped timestamps (ints, its stream's time base)
    and the same in seconds (floats: comparisons only, with EPS slack)."""

    packet: av.Packet
    sidx: int  # source stream index
    tb: Fraction
    pts: int
    dts: int
    dur: int
    key: bool
    t: float  # pts, seconds
    t_end: float  # pts + dur, seconds


@dataclass
class _Span:
    """One planned clip during a pass over its source. Times are absolute
    (unwrapped) stream seconds."""

    i: int  # index in plan.clips
    clip: Clip
    start: float
    end: float
    state: str = "pending"  # pending -> open -> tail (video done) -> closed | failed
    out: object | None = None  # av OutputContainer
    tmp: Path | None = None
    final: Path | None = None
    smap: dict = field(default_factory=dict)  # source stream index -> output stream
    off: dict = field(default_factory=dict)  # source stream index -> pts offset (its time base)
    last_dts: dict = field(default_factory=dict)
    cut_start: float | None = None
    cut_end: float | None = None
    frontier: float = -math.inf  # end of the latest video frame written
    held: list = field(default_factory=list)  # audio waiting for the video to catch up
    aheld: list = field(default_factory=list)  # the same, decoded (audio transcoded to AAC)
    audio_open: set = field(default_factory=set)  # audio streams not yet past the end
    audio_cap: float = math.inf  # re-encoded audio stops here: its stream jumped back (a discontinuity)
    frames: int = 0
    vhold: object | None = None  # the latest video packet (copy) / (frame, t) (accurate), not yet written
    vpkt: object | None = None  # accurate: the latest encoded video packet, not yet written
    first_vdts: int | None = None
    dropped: int = 0
    reason: str = ""
    note: str = ""
    reencode: bool = False  # copy failed in a way re-encoding avoids: try the encode pass
    # accurate mode
    enc: dict = field(default_factory=dict)  # audio stream index -> [fifo, out stream, first pts, samples]
    vpts0: int = 0  # pts of the last frame sent to the encoder
    size: tuple | None = None  # encoded (width, height)


def _open_output(span: _Span, folder: Path, container: str, mode: str, cut_start: float):
    """Output container under a temporary name; ``cut_start`` relative to t0."""
    final = folder / f"{span.clip.id}.{container}"
    tmp = temp_name(final)
    folder.mkdir(parents=True, exist_ok=True)
    if container == "mp4":
        out = av.open(str(tmp), "w", format="mp4", container_options={"movflags": "+faststart"})
    else:
        out = av.open(str(tmp), "w", format="matroska")
    span.out, span.tmp, span.final = out, tmp, final
    out.metadata["comment"] = _tag(span.clip, mode, cut_start)
    return out


def _abort(span: _Span, reason: str) -> None:
    span.state, span.reason = "failed", reason
    if span.out is not None:
        try:
            span.out.close()
        except Exception:  # noqa: BLE001, S110 - already failing; the temp file goes anyway
            pass
        span.out = None
    if span.tmp is not None and span.tmp.exists():
        try:
            span.tmp.unlink()
        except OSError:
            pass


def _finish(span: _Span) -> None:
    """Close (trailer, faststart) and rename into place."""
    out, span.out = span.out, None
    out.close()
    replace_with_retry(span.tmp, span.final)
    span.state = "closed"
    for ext in (".mp4", ".mkv"):  # a copy of this clip in the other container (other mode)
        other = span.final.with_suffix(ext)
        if other != span.final and other.exists():
            other.unlink()
