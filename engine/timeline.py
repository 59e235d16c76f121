"""One timeline for every stage: stream timestamps -> continuous seconds.

Scan, decode (analysis) and cut (both passes) map a stream's timestamps to
seconds through this module, so a time in the analysis log means the same
frame when the clip is cut.

Rules, per stream (integer ticks of the stream's time base):

* a timestamp is ``pts × time_base``, exact; nothing is derived from the
  nominal frame rate except where a timestamp is missing;
* **small backward steps** (frames decoded in display order whose pts arrive
  slightly out of order, as DivX/Xvid "packed B-frames" in AVI give, or a few
  frames of jitter) are *put in order*: :class:`FrameClock` hands the smallest
  pts of a small window to the oldest frame, so every frame gets its true time
  and the timeline is not shifted;
* **real discontinuities** (a backward jump of more than :data:`JUMP_S`:
  concatenated recordings, a camera restart) start a new *segment* that
  continues where the last frame ended; an MPEG-TS 33-bit wrap-around adds
  exactly ``2**33`` ticks, so the timeline keeps its real gaps;
* **forward jumps stay gaps**: nothing is invented for the missing time (the
  sampler skips the grid steps in O(1), see ``decode._Sampler``); a single
  frame far ahead of its neighbours (a corrupt pts) is an outlier and gets the
  time of the frame before it plus one frame.

``Unwrapper`` applies the segment rules to any timestamp sequence (the copy
pass's packet dts); ``FrameClock`` adds the reordering window for decoded frames
(analysis and the re-encode pass).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from fractions import Fraction
from typing import NamedTuple

SAME_INSTANT = 1e-4  # seconds: timestamps closer than this are the same instant (sampling grid)
JUMP_S = 1.0  # a backward step larger than this (seconds) is a discontinuity
WINDOW = 6  # frames: the deepest pts disorder put back in order (packed B-frames: 1-3)
TS_WRAP = 1 << 33  # MPEG-TS timestamps are 33 bits at 90 kHz
DEFAULT_RATE = Fraction(25)


def frame_rate(stream, default: Fraction | None = DEFAULT_RATE) -> Fraction | None:
    """The nominal frame rate of a video stream, for the few places that need one
    (a missing timestamp or duration). Never used to place a frame that has a pts.
    ``default`` when the stream states none."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and rate > 0:
            return Fraction(rate)
    return default


def time_base(stream, default: Fraction = Fraction(1, 90000)) -> Fraction:
    return Fraction(stream.time_base) if stream.time_base else default


def start_seconds(stream) -> float:
    """Seconds of a stream's first timestamp (MPEG-TS often starts at 1.4 s)."""
    if stream.start_time is None:
        return 0.0
    return float(stream.start_time * time_base(stream))


class Unwrapper:
    """Per-stream offset (ticks) that makes a timestamp sequence continuous across
    discontinuities, by the module's rules. Small backward steps change nothing."""

    def __init__(self, tb: Fraction) -> None:
        self.tb = Fraction(tb)
        self.jump = max(1, math.ceil(JUMP_S / self.tb))
        self.wrap = TS_WRAP if self.tb == Fraction(1, 90000) else None
        self.off = 0
        self.last: int | None = None  # latest unwrapped timestamp
        self.end: int | None = None  # largest unwrapped timestamp + duration seen

    def __call__(self, ts: int, dur: int = 0, show: int | None = None) -> tuple[int, str | None]:
        """(offset to add, event) for the next timestamp ``ts`` (decode order: a
        packet's dts; a frame's pts). ``show``: the display timestamp when it
        differs (a packet's pts): after a discontinuity the first one shown starts
        where the last one shown ended. Event: None, "wrap" or "discontinuity"."""
        show = ts if show is None else show
        event = None
        if self.last is not None and ts + self.off < self.last - self.jump:
            back = self.last - (ts + self.off)
            if self.wrap and abs(back - self.wrap) <= self.jump * 10:
                self.off += self.wrap
                event = "wrap"
            else:
                self.off = (self.end if self.end is not None else self.last) - show
                event = "discontinuity"
        u = ts + self.off
        self.last = u if self.last is None or event else max(self.last, u)
        e = show + self.off + dur
        self.end = e if self.end is None or event else max(self.end, e)
        return self.off, event


class Timed(NamedTuple):
    frame: object
    pts: int  # the frame's pts in the stream time base (put in order, not unwrapped)
    t: float  # seconds on the continuous timeline (stream seconds, unwrapped)
    event: str | None  # "discontinuity" / "wrap": this frame starts a new segment


class FrameClock:
    """Decoded frames, in the order the decoder gives them (display order), to
    times on the continuous timeline. Holds up to :data:`WINDOW` frames back."""

    def __init__(self, tb: Fraction, rate: Fraction, window: int = WINDOW) -> None:
        self.tb = Fraction(tb)
        self.step = max(1, round(1 / (Fraction(rate) * self.tb)))  # one frame, ticks
        self.window = window
        self.unwrap = Unwrapper(self.tb)
        self.frames: deque = deque()  # arrival order
        self.pool: list[int] = []  # heap of the held frames' pts
        self.hi = -math.inf  # largest pts pushed in this segment
        self.jump_from: int | None = None  # pts before a forward jump still in the window
        self.last_pts: int | None = None  # pts handed out last
        self.reordered = 0  # frames whose pts arrived out of order

    def push(self, frame) -> list[Timed]:
        """Take the next decoded frame; returns the frames whose time is now settled."""
        pts = frame.pts
        out: list[Timed] = []
        jumped_from, self.jump_from = self.jump_from, None
        if pts is None:  # raw streams: one frame after the latest one
            if self.hi > -math.inf:
                pts = int(self.hi) + self.step
            else:
                pts = (self.last_pts + self.step) if self.last_pts is not None else 0
        elif self.frames and pts < self.hi - self.unwrap.jump:
            if jumped_from is not None and pts >= jumped_from - self.unwrap.jump:
                self._drop_outlier()  # one pts far ahead, then back: a corrupt timestamp
            else:
                out.extend(self.flush())  # a real discontinuity: settle the old segment first
        if self.hi > -math.inf and pts > self.hi + self.unwrap.jump:
            self.jump_from = int(self.hi)
        if self.frames and pts < self.hi:
            self.reordered += 1
        self.hi = max(self.hi, pts)
        self.frames.append(frame)
        heapq.heappush(self.pool, pts)
        while len(self.frames) > self.window:
            out.append(self._emit())
        return out

    def flush(self) -> list[Timed]:
        out = [self._emit() for _ in range(len(self.frames))]
        self.hi, self.jump_from = -math.inf, None
        return out

    def _drop_outlier(self) -> None:
        big = max(self.pool)
        self.pool.remove(big)
        heapq.heapify(self.pool)
        below = max(self.pool) if self.pool else (self.last_pts if self.last_pts is not None else big)
        heapq.heappush(self.pool, below + self.step)
        self.hi, self.jump_from = max(self.pool), None

    def _emit(self) -> Timed:
        frame = self.frames.popleft()
        pts = heapq.heappop(self.pool)
        if self.last_pts is not None and pts <= self.last_pts and pts > self.last_pts - self.unwrap.jump:
            pts = self.last_pts  # duplicate pts (jitter): same instant, the sampler takes the later
        off, event = self.unwrap(pts, self.step)
        self.last_pts = pts
        return Timed(frame, pts, float((pts + off) * self.tb), event)
