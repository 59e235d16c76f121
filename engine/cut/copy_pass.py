"""The copy pass: one demux pass over a source writing its clips by stream
copy, each from the keyframe at or before its start; what it cannot write
well is marked for the encode pass.
"""

from __future__ import annotations

import math
from collections import deque
from fractions import Fraction
from pathlib import Path

import av

from facecut.cut.audio import AUDIO_TB, _AacAudio
from facecut.cut.files import EPS
from facecut.cut.spans import _abort, _CopySpan, _finish, _open_output, _Pkt
from facecut.cut.streams import _audio, _main_video
from facecut.timeline import Unwrapper, frame_rate, time_base

AUDIO_KEEP_S = 30.0  # audio kept back without a video keyframe (video ended early)


class _CopyPass(_AacAudio):
    """One demux pass over a source, writing its clips by stream copy."""

    def __init__(self, container, spans: list[_CopySpan], folder: Path, fmt: str, t0: float, tick, *,
                 transcode: set[int] = frozenset(), max_lead_in: float = math.inf):
        self.c = container
        self.folder, self.fmt, self.t0, self.tick = folder, fmt, t0, tick
        self.video = _main_video(container)
        self.audios = _audio(container)
        self.transcode = set(transcode)  # audio streams re-encoded to AAC (MP4 can't hold them)
        self.resamplers = {a.index: self._resampler(a) for a in self.audios if a.index in self.transcode}
        self.awrap: dict[int, Unwrapper] = {}
        self.errors = 0  # audio packets that could not be decoded
        self.afbuf: deque = deque()  # decoded (aidx, frame, t) of transcoded streams, like abuf
        self.max_lead_in = max_lead_in
        self.kf_old = False  # the last keyframe lies more than max_lead_in behind: vbuf dropped
        self.vidx = self.video.index
        self.vtb = time_base(self.video)
        self.frame_s = float(1 / frame_rate(self.video))
        self.vstep = max(1, round(Fraction(self.frame_s) / self.vtb))  # one frame, video ticks (a missing duration)
        self.pending = sorted(spans, key=lambda s: s.start)
        self.waiting: list[_CopySpan] = []  # reached, but no keyframe yet in this segment
        self.active: list[_CopySpan] = []  # open or tail
        self.done: list[_CopySpan] = []
        self.vbuf: list[_Pkt] = []  # video since the last keyframe (demux order)
        self.abuf: deque[_Pkt] = deque()  # audio that may still belong to a clip
        self.kf: _Pkt | None = None
        self.nodts: list = []  # video packets waiting for a dts (Matroska's first packets)
        self.unwrap: dict[int, Unwrapper] = {}  # stream -> its timeline (facecut.timeline)
        self.tbf: dict[int, float] = {}  # stream -> time base as a float
        self.notes: list[str] = []
        self.position = 0.0
        self.bsf = None
        if self.video.codec_context.name == "mpeg4":
            # AVI "packed B-frames" (DivX/Xvid) must be unpacked for MP4/MKV.
            from av.bitstream import BitStreamFilterContext

            self.bsf = BitStreamFilterContext("mpeg4_unpack_bframes", self.video)

    # ---- demux

    def run(self) -> None:
        streams = [self.video, *self.audios]
        for packet in self.c.demux(streams):
            if packet.size == 0:
                continue
            sidx = packet.stream.index
            if sidx == self.vidx:
                pkts = self.bsf.filter(packet) if self.bsf else [packet]
                for p in pkts:
                    self._video(p)
            else:
                self._audio(packet, sidx)
            if not (self.pending or self.waiting or self.active):
                break  # nothing left to cut: the rest of the file is never read
            self.tick(self.position)
        else:
            if self.bsf:
                for p in self.bsf.filter(None):
                    self._video(p)
            self._flush_nodts()
            for a in self.audios:
                if a.index in self.transcode:
                    self._audio_decode(a, None)
        self._eof()

    def _eof(self) -> None:
        for s in list(self.active):
            if s.state == "open":
                self._video_done(s)
            if s.state == "tail":
                self._close(s)
        for s in self.pending + self.waiting:
            s.state = "failed"
            s.reason = f"span starts after the end of the source ({self.position:.2f} s)"
            self.done.append(s)
        self.pending, self.waiting = [], []

    def abort_all(self, reason: str) -> None:
        for s in self.active + self.pending + self.waiting:
            _abort(s, reason)
            self.done.append(s)
        self.active, self.pending, self.waiting = [], [], []

    # ---- timestamps

    def _stamp(self, packet, sidx: int, tb: Fraction) -> _Pkt | None:
        uw = self.unwrap.get(sidx)
        if uw is None:
            uw = self.unwrap[sidx] = Unwrapper(tb)
        pts, dts = packet.pts, packet.dts
        dur = packet.duration or 0
        if pts is None:
            pts = dts
        if pts is None:
            if uw.end is None:
                return None
            pts = dts = uw.end - uw.off
        if dts is None:
            dts = pts
        if not dur:
            dur = self.vstep if sidx == self.vidx else 1
        # The shared timeline (facecut.timeline), as the analysis saw it: small
        # backward steps change nothing (the muxer's dts rule is kept in _write);
        # after a discontinuity the first frame shown follows the last one.
        off, event = uw(dts, dur, show=pts)
        if event == "discontinuity" and sidx == self.vidx:
            self._discontinuity(float((pts + off) * tb))
        tbf = self.tbf.get(sidx)
        if tbf is None:
            tbf = self.tbf[sidx] = float(tb)
        return _Pkt(packet, sidx, tb, pts + off, dts + off, dur, bool(packet.is_keyframe),
                    (pts + off) * tbf, (pts + off + dur) * tbf)

    def _discontinuity(self, t: float) -> None:
        rel = t - self.t0
        self.notes.append(f"timestamps jump backwards at {rel:.2f} s: no clip is cut across it")
        for s in list(self.active):
            if s.state == "open":
                s.note = f"ends early at a timestamp discontinuity ({rel:.2f} s)"
                self._video_done(s)
        self.vbuf.clear()
        self.kf = None

    def _video(self, packet) -> None:
        # Matroska gives no dts for the first packets of a B-frame stream: hold
        # them until a dts arrives and count backwards from it.
        if packet.dts is None and packet.pts is not None and self.vidx not in self.unwrap \
                and len(self.nodts) < 32:
            self.nodts.append(packet)
            return
        if self.nodts and packet.dts is not None:
            n = len(self.nodts)
            for k, p in enumerate(self.nodts):
                p.dts = min(p.pts, packet.dts - (n - k) * self.vstep)
            held, self.nodts = self.nodts, []
            for p in held:
                self._video_stamped(p)
        self._video_stamped(packet)

    def _flush_nodts(self) -> None:
        held, self.nodts = self.nodts, []
        for p in held:
            self._video_stamped(p)

    def _video_stamped(self, packet) -> None:
        e = self._stamp(packet, self.vidx, self.vtb)
        if e is None:
            return
        self.position = e.t - self.t0
        if e.key:
            # The frame shown at a pending start before this keyframe belongs to the
            # GOP that ends here (or is a leading picture of this one, which needs
            # that GOP): those clips start at the previous keyframe.
            while self.kf is not None and self.pending and self.pending[0].start < e.t - EPS:
                self._open(self.pending.pop(0))
            self.vbuf.clear()
            self.kf, self.kf_old = e, False
            while self.abuf and self.abuf[0].t_end <= e.t:
                self.abuf.popleft()
            while self.afbuf and self.afbuf[0][2] + self.afbuf[0][1].samples / self.afbuf[0][1].sample_rate <= e.t:
                self.afbuf.popleft()
            for s in self.waiting:  # reached before any keyframe: start here (late)
                if e.t < s.end - EPS:
                    s.note = f"no keyframe at/before the start: starts {e.t - s.start:.3f} s late"
                    self._open(s)
                else:
                    s.state, s.reason = "failed", "no keyframe inside the span"
                    self.done.append(s)
            self.waiting = []
        if self.kf is not None and not self.kf_old:
            if e.t - self.kf.t > self.max_lead_in + EPS:
                # Any clip starting from here on would have a longer lead-in than
                # allowed (it is re-encoded instead): the packets need not be kept.
                self.vbuf.clear()
                self.kf_old = True
            else:
                self.vbuf.append(e)
        if self.kf_old:  # no clip opens before the next keyframe: older audio is of no use
            while self.abuf and self.abuf[0].t_end < e.t - 1.0:
                self.abuf.popleft()
            while self.afbuf and self.afbuf[0][2] < e.t - 1.0:
                self.afbuf.popleft()
        for s in list(self.active):
            if s.state == "open":
                self._video_to(s, e)
        # A span starts with the frame shown at its start (the one whose display
        # interval holds it), hence t_end rather than t.
        while self.pending and (e.t_end > self.pending[0].start + EPS or e.t >= self.pending[0].start - EPS):
            s = self.pending.pop(0)
            if self.kf is None:
                self.waiting.append(s)
            else:
                self._open(s)

    def _audio(self, packet, sidx: int) -> None:
        if sidx in self.transcode:
            # Decoded only near a clip: from as far before the next start as a clip's
            # keyframe may lie (further back, the clip is re-encoded anyway).
            t = self._audio_clock(packet, self.active)
            horizon = min(self.max_lead_in, AUDIO_KEEP_S) + 1.0
            if self.active or self.waiting or (self.pending and t >= self.pending[0].start - horizon):
                self._audio_decode(packet.stream, packet)
            return
        tb = time_base(packet.stream, AUDIO_TB)
        e = self._stamp(packet, sidx, tb)
        if e is None:
            return
        self.abuf.append(e)
        while self.abuf and self.abuf[0].t_end < e.t - AUDIO_KEEP_S:
            self.abuf.popleft()
        for s in list(self.active):
            self._audio_to(s, e)

    def _audio_decode(self, stream, packet) -> None:
        """A packet (None: flush) of an audio stream transcoded to AAC: decoded once for every clip."""
        aidx = stream.index
        for rf, t in self._decode_audio(stream, packet):
            self.afbuf.append((aidx, rf, t))
            while self.afbuf and self.afbuf[0][2] < t - AUDIO_KEEP_S:
                self.afbuf.popleft()
            for s in list(self.active):
                self._aframe_to(s, aidx, rf, t)

    def _aframe_to(self, s: _CopySpan, aidx: int, f, t: float) -> None:
        limit = self._audio_end(s, aidx, t)
        if limit is None:
            return
        if s.state == "open" and t >= s.frontier:
            s.aheld.append((aidx, f, t))  # the video may still end before it
        else:
            self._feed_aac(s, aidx, f, t, limit)

    def _mux(self, s: _CopySpan, packets) -> None:
        if s.state == "failed":
            return
        try:
            for p in packets:
                s.out.mux_one(p)
        except (av.FFmpegError, OSError, ValueError) as ex:
            self._fail_writing(s, ex)

    def _fail_writing(self, s: _CopySpan, ex: Exception) -> None:
        _abort(s, f"writing failed: {ex}")
        s.reencode = True
        if s in self.active:
            self.active.remove(s)
        if s not in self.done:
            self.done.append(s)

    # ---- clips

    def _open(self, s: _CopySpan) -> None:
        kf = self.kf
        exact = Fraction(kf.pts) * kf.tb
        lead = s.start - float(exact)
        if self.kf_old or lead > self.max_lead_in + EPS:
            s.state, s.reencode = "failed", True
            s.reason = f"the keyframe before the start is {lead:.2f} s early (--max-lead-in {self.max_lead_in:g} s)"
            self.done.append(s)
            return
        try:
            out = _open_output(s, self.folder, self.fmt, "copy", float(exact) - self.t0)
            s.smap[self.vidx] = out.add_stream_from_template(self.video)
            for a in self.audios:
                if a.index in self.transcode:
                    self._aac_stream(s, out, a)
                else:
                    s.smap[a.index] = out.add_stream_from_template(a)
        except (av.FFmpegError, OSError, ValueError) as ex:
            _abort(s, f"cannot open output: {ex}")
            self.done.append(s)
            return
        s.off[self.vidx] = kf.pts
        for a in self.audios:
            s.off[a.index] = round(exact / time_base(a, AUDIO_TB))
        s.audio_open = {a.index for a in self.audios}
        s.cut_start = float(exact)
        s.state = "open"
        self.active.append(s)
        for e in self.vbuf:
            if s.state == "open":
                self._video_to(s, e)
        for e in list(self.abuf):
            if s.state in ("open", "tail"):
                self._audio_to(s, e)
        for aidx, f, t in list(self.afbuf):
            if s.state in ("open", "tail"):
                self._aframe_to(s, aidx, f, t)

    def _video_to(self, s: _CopySpan, e: _Pkt) -> None:
        if e.pts < s.off[self.vidx]:
            return  # a leading picture of an open GOP: shown before the cut, needs what precedes it
        if e.t >= s.end - EPS:
            self._video_done(s)
            return
        # Hold back one video packet: the last one gets the duration that makes
        # the track last exactly to the end of the last frame shown (the dts span
        # and the pts span differ with B-frames at a variable rate).
        if s.vhold is not None:
            self._write(s, s.vhold)
        s.vhold = e
        s.frames += 1
        if e.t_end > s.frontier:
            s.frontier = e.t_end
            if s.held:
                ready = [a for a in s.held if a.t < s.frontier]
                s.held = [a for a in s.held if a.t >= s.frontier]
                for a in ready:
                    self._write(s, a)
            if s.aheld:
                ready = [a for a in s.aheld if a[2] < s.frontier]
                s.aheld = [a for a in s.aheld if a[2] >= s.frontier]
                for aidx, f, t in ready:
                    self._feed_aac(s, aidx, f, t, s.end)

    def _video_done(self, s: _CopySpan) -> None:
        """No more video for ``s``; audio goes on up to the last frame's end."""
        s.state = "tail"
        s.cut_end = s.frontier
        if s.vhold is not None:
            e, s.vhold = s.vhold, None
            dts = e.dts - s.off[self.vidx]
            first = s.first_vdts if s.first_vdts is not None else dts  # None: this frame is the clip's only one
            span = round(Fraction(s.cut_end) / e.tb) - s.off[self.vidx]  # display span, pts units
            dur = span + first - dts
            self._write(s, e, dur=dur if dur > 0 else None)
        for a in s.held:
            if a.t < s.cut_end - EPS:
                self._write(s, a)
        s.held = []
        for aidx, f, t in s.aheld:
            if t < s.cut_end - EPS:
                self._feed_aac(s, aidx, f, t, s.cut_end)
        s.aheld = []
        if not s.audio_open:
            self._close(s)

    def _audio_to(self, s: _CopySpan, e: _Pkt) -> None:
        if s.state not in ("open", "tail") or e.sidx not in s.audio_open:
            return
        if e.pts < s.off[e.sidx]:
            return
        limit = s.cut_end if s.state == "tail" else s.end
        if e.t >= limit - EPS:
            s.audio_open.discard(e.sidx)
            if s.state == "tail" and not s.audio_open:
                self._close(s)
            return
        if s.state == "open" and e.t >= s.frontier:
            s.held.append(e)  # the video may still end before it
        else:
            self._write(s, e)

    def _write(self, s: _CopySpan, e: _Pkt, dur: int | None = None) -> None:
        if s.state == "failed":
            return
        off = s.off[e.sidx]
        pts, dts = e.pts - off, e.dts - off
        last = s.last_dts.get(e.sidx)
        if last is not None and dts <= last:  # muxers want strictly increasing dts
            if e.sidx == self.vidx and last + 1 <= pts:
                dts = last + 1
            else:
                s.dropped += 1
                return
        s.last_dts[e.sidx] = dts
        if e.sidx == self.vidx and s.first_vdts is None:
            s.first_vdts = dts
        p = e.packet
        # mux() rescales the packet in place to the output time base: set every
        # field from the stored values each time, so one packet feeds many clips.
        p.time_base = e.tb
        p.pts, p.dts, p.duration = pts, dts, dur or e.dur
        p.stream = s.smap[e.sidx]
        try:
            s.out.mux_one(p)
        except (av.FFmpegError, OSError, ValueError) as ex:
            self._fail_writing(s, ex)

    def _close(self, s: _CopySpan) -> None:
        if s in self.active:
            self.active.remove(s)
        if s.state != "failed":
            if s.cut_end is None:
                s.cut_end = s.frontier
            for aidx in s.enc:
                if s.state != "failed":
                    self._drain_audio(s, aidx, final=True)
            if s.state == "failed":
                pass
            elif s.frames == 0:
                _abort(s, "no video frame inside the span")
            else:
                try:
                    _finish(s)
                except (av.FFmpegError, OSError, ValueError) as ex:
                    _abort(s, f"finishing failed: {ex}")
                    s.reencode = True
        if s not in self.done:
            self.done.append(s)
        self.tick(self.position, force=True)

