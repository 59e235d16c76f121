"""``--fast-decode ref-frames``, the default: the decode pass skips the pictures
no other picture references and no sample needs, and still samples and cuts
exactly what decoding every picture does (see :class:`RefFramesOnly`).

Used by facecut.decode; never imports onnxruntime.
"""

from __future__ import annotations

import logging
import math
from collections import deque

import av
import cv2
import numpy as np

from facecut.media import open_input
from facecut.protocol import DecodeJob
from facecut.shotdetect import ShotFrames
from facecut.timeline import SAME_INSTANT

log = logging.getLogger(__name__)

_EPS = SAME_INSTANT


class RefFramesOnly:
    """``--fast-decode ref-frames`` in the decode pass: FFmpeg skips the pictures no
    other picture references (most B-frames: a third of the frames of a usual
    H.264 file), *except* those the sampler could pick, so every sample is the
    very frame a full decode samples, to the bit.

    Decided packet by packet (``skip_frame`` is read by FFmpeg per picture, and
    skipping a picture nothing references changes no other picture). A picture
    with time ``t`` is displayed from ``t`` until the next picture's time; every
    picture displayed after it whose packet was already sent bounds that: a
    non-reference picture is decoded when a sampling grid time falls in
    ``[t, latest time sent)``, or when no later picture was sent yet.

    Packet times are put on the settled timeline (facecut.timeline) with the
    offset of the last frame the clock settled; without one, near a timestamp
    jump (more than ``jump`` ticks from the latest packet), or without a pts,
    the packet is decoded, and so is everything after a picture whose pts is
    no packet's (:meth:`decoded`). The shot detector sees only the pictures decoded: a
    cut on a skipped picture is found on the next decoded one, and
    :meth:`refine_cut` then places it on its own frame (x264 and camera encoders
    start a new shot with a reference picture, so this is rare; fixed-GOP
    encoders start two shots in three on a B-frame).
    """

    def __init__(self, cc, tb, fps: float, jump: int) -> None:
        self.cc = cc
        self.tb = float(tb)
        self.fps = fps
        self.jump = jump
        self.offset: float | None = None  # grid time of pts 0, from the last settled frame
        self.hi: int | None = None  # latest (largest) pts sent
        self.mode = ""
        self.cc.skip_frame = "DEFAULT"
        self.skippable: deque[int] = deque(maxlen=512)  # pts of packets sent while skipping was allowed
        self.sent: deque[int] = deque(maxlen=256)  # pts of the latest packets sent
        self.trusted = True  # every decoded picture so far carries the pts of a packet sent

    def settled(self, pts: int, t: float) -> None:
        """A frame the clock settled: its pts and its grid time."""
        self.offset = t - pts * self.tb

    def decoded(self, pts: int | None) -> None:
        """A picture came out of the decoder. Its pts must be one of a packet sent:
        the decisions read pictures' times from their packets. A stream whose
        decoder gives pictures other times (re-timed, packed B-frames) is decoded
        whole from here on."""
        if self.trusted and (pts is None or pts not in self.sent):
            self.trusted = False
            log.debug("picture pts %s is no packet's: every picture decoded from here on", pts)

    def before(self, packet) -> None:
        """Decide for the next packet whether FFmpeg may skip it (when not a reference)."""
        pts = packet.pts
        skip = False
        if pts is not None:
            self.sent.append(pts)
        if (self.trusted and pts is not None and self.offset is not None and self.hi is not None
                and abs(pts - self.hi) <= self.jump):
            t = pts * self.tb + self.offset
            t_hi = self.hi * self.tb + self.offset
            if t_hi > t + _EPS:  # a picture displayed after this one was sent
                # The first grid time at or after t; at a grid time T the sampler takes the
                # last picture with time <= T + eps, so a later picture starting at or
                # before T + eps (t_hi at most) is displayed there instead of this one.
                grid = math.ceil((t - _EPS) * self.fps) / self.fps
                skip = grid >= t_hi - _EPS
        if pts is not None:
            self.hi = pts if self.hi is None or abs(pts - self.hi) > self.jump else max(self.hi, pts)
        if skip:
            self.skippable.append(pts)
        mode = "NONREF" if skip else "DEFAULT"
        if mode != self.mode:
            self.cc.skip_frame = self.mode = mode

    def gap(self, q_pts: int, r_pts: int) -> bool:
        """Whether pictures between two consecutive decoded ones may have been skipped."""
        return any(q_pts < p < r_pts for p in self.skippable)

    def refine_cut(self, job: DecodeJob, shot_width: int, q_pts: int, r_pts: int) -> tuple[int, float] | None:
        """The exact first picture of a shot the detector found on ``r_pts`` when
        pictures between it and the decoded one before (``q_pts``) were skipped:
        the stretch is decoded again, on its own (the file opened once more, one
        seek to the keyframe at or before ``q_pts``, reference pictures and those
        of the stretch only), and the shot starts on the picture that differs most
        from the one before it (the detector's own measure: HSV change of the
        small frames). None: the stretch could not be read again (the cut stays
        on ``r_pts``). Only files whose encoder does not start a shot with a
        reference picture get here (fixed GOPs); measured: 1-2 frames earlier
        than ``r_pts``, each cut as a full decode finds it."""
        if self.offset is None:
            return None
        got: dict[int, np.ndarray] = {}
        # Some demuxers (MPEG-TS) seek to a keyframe *after* the target: seek
        # further back until the stretch is reached from its start.
        for back_s in (0.0, 2.0, 8.0):
            got = self._decode_stretch(job, shot_width, q_pts, r_pts, q_pts - round(back_s / self.tb))
            if got is None or q_pts in got:
                break
        if not got or q_pts not in got or r_pts not in got or len(got) < 3:
            return None
        order = sorted(got)
        change = [float(cv2.absdiff(got[a], got[b]).mean()) for a, b in zip(order, order[1:])]
        pts = order[1 + int(np.argmax(change))]
        return pts, pts * self.tb + self.offset

    def _decode_stretch(self, job: DecodeJob, shot_width: int, q_pts: int, r_pts: int,
                        seek_pts: int) -> dict[int, np.ndarray] | None:
        """HSV small frames of the pictures from ``q_pts`` to ``r_pts``, decoded after a
        seek to ``seek_pts``; {} when the seek landed after ``q_pts``; None: unreadable."""
        got: dict[int, np.ndarray] = {}
        try:
            with open_input(job.file) as c:  # as the decoder opens it (odd tags, protocols)
                stream = c.streams[job.stream_index]
                stream.thread_type = "SLICE"
                cc = stream.codec_context
                c.seek(seek_pts, stream=stream, backward=True, any_frame=False)
                small = ShotFrames(shot_width)
                mode = ""
                for packet in c.demux(stream):
                    want = "DEFAULT" if packet.pts is not None and q_pts <= packet.pts <= r_pts else "NONREF"
                    if want != mode:
                        cc.skip_frame = mode = want
                    for frame in packet.decode():
                        if frame.pts is None:
                            continue
                        if not got and frame.pts > q_pts:
                            return {}  # started after the stretch
                        if frame.pts > r_pts + self.jump:
                            return got  # went past it
                        if q_pts <= frame.pts <= r_pts:
                            got[frame.pts] = cv2.cvtColor(small(frame), cv2.COLOR_BGR2HSV)
                            if frame.pts == r_pts:
                                return got
        except (av.FFmpegError, OSError, ValueError) as ex:
            log.debug("%s: cut at pts %d not refined: %s", job.rel, r_pts, ex)
            return None
        return got
