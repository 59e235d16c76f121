"""One clip being written during a pass over its source: a span per mode
(a common base, :class:`_CopySpan` holding demuxed packets, :class:`_EncodeSpan`
holding decoded frames), the demuxed packet the copy pass hands it, and its
output file's life (opened under a temporary name, aborted, or finished and
renamed into place).
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


_AudioFrame = tuple[int, av.AudioFrame, float]  # decoded audio: (source stream index, fltp frame, its time)


@dataclass
class _Span:
    """One planned clip during a pass over its source: what both modes keep.
    Times are absolute (unwrapped) stream seconds. A pass works on the span of
    its mode (:class:`_CopySpan`, :class:`_EncodeSpan`); the audio part
    (``facecut.cut.audio``) and the orchestrator only on what is here."""

    i: int  # index in plan.clips
    clip: Clip
    start: float
    end: float
    state: str = "pending"  # pending -> open -> tail (video done) -> closed | failed
    out: av.container.OutputContainer | None = None
    tmp: Path | None = None
    final: Path | None = None
    smap: dict[int, av.stream.Stream] = field(default_factory=dict)  # source stream index -> output stream
    cut_start: float | None = None
    cut_end: float | None = None
    audio_open: set[int] = field(default_factory=set)  # audio streams not yet past the end
    audio_cap: float = math.inf  # re-encoded audio stops here: its stream jumped back (a discontinuity)
    frames: int = 0
    first_vdts: int | None = None
    reason: str = ""
    note: str = ""
    # audio encoded to AAC (facecut.cut.audio): stream index -> [fifo, out stream, first pts, samples]
    enc: dict[int, list] = field(default_factory=dict)


@dataclass
class _CopySpan(_Span):
    """A clip of the copy pass: packets go in as they were demuxed."""

    off: dict[int, int] = field(default_factory=dict)  # source stream index -> pts offset (its time base)
    last_dts: dict[int, int] = field(default_factory=dict)
    frontier: float = -math.inf  # end of the latest video frame written
    held: list[_Pkt] = field(default_factory=list)  # audio waiting for the video to catch up
    aheld: list[_AudioFrame] = field(default_factory=list)  # the same, decoded (audio transcoded to AAC)
    vhold: _Pkt | None = None  # the latest video packet, not yet written (it may get the last duration)
    dropped: int = 0
    reencode: bool = False  # copy failed in a way re-encoding avoids: try the encode pass


@dataclass
class _EncodeSpan(_Span):
    """A clip of the encode pass: decoded frames are re-encoded."""

    held: list[_AudioFrame] = field(default_factory=list)  # decoded audio that came before the clip opened
    vhold: tuple[av.VideoFrame, float] | None = None  # the latest frame and its time, not yet encoded
    vpkt: av.Packet | None = None  # the latest encoded video packet, not yet written
    vpts0: int = 0  # pts of the last frame sent to the encoder
    size: tuple[int, int] | None = None  # encoded (width, height)


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
