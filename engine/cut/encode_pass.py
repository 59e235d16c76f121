"""The encode pass: one demux pass over a source that decodes only the GOPs
holding a clip and re-encodes each clip exactly on its planned frames
(libx264 + AAC, MP4): ``accurate`` mode, and the clips stream copy could not
make well.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av

from facecut.cut.audio import _AacAudio
from facecut.cut.files import EPS
from facecut.cut.spans import _abort, _EncodeSpan, _finish, _open_output
from facecut.cut.streams import _audio, _main_video
from facecut.timeline import FrameClock, Unwrapper, frame_rate, time_base

X264 = {"preset": "veryfast", "crf": "18"}  # accurate mode


class _EncodePass(_AacAudio):
    """One demux pass over a source; decodes only the GOPs that hold a clip and
    re-encodes each clip exactly on its planned frames (libx264 + AAC, MP4)."""

    def __init__(self, container, spans: list[_EncodeSpan], folder: Path, t0: float, tick, mode: str = "accurate"):
        self.c = container
        self.folder, self.t0, self.tick = folder, t0, tick
        self.mode = mode  # "accurate" (asked for) | "reencode" (stream copy could not do it)
        self.video = _main_video(container)
        self.video.thread_type = "AUTO"
        self.vctx = self.video.codec_context
        self.audios = _audio(container)
        self.vtb = time_base(self.video)
        self.rate = frame_rate(self.video)
        self.frame_s = float(1 / self.rate)
        self.pending = sorted(spans, key=lambda s: s.start)
        self.active: list[_EncodeSpan] = []
        self.done: list[_EncodeSpan] = []
        self.live = False  # the video decoder is being fed
        self.vbuf: list = []  # packets since the last keyframe while not decoding
        self.max_pkt_t = -math.inf
        self.prev: tuple | None = None  # (frame, t) decoded last
        # Decoded frames get their times exactly as in the analysis (facecut.timeline).
        self.clock = FrameClock(self.vtb, self.rate)
        self.awrap: dict[int, Unwrapper] = {}
        self.resamplers = {a.index: self._resampler(a) for a in self.audios}
        self.last_end = 0.0
        self.position = 0.0
        self.notes: list[str] = []
        self.errors = 0

    def run(self) -> None:
        for packet in self.c.demux([self.video, *self.audios]):
            if packet.size == 0:
                continue
            if packet.stream.index == self.video.index:
                self._vpacket(packet)
            else:
                self._apacket(packet)
            if not (self.pending or self.active):
                break
            self.tick(self.position)
        else:
            if self.live:
                self._decode_video(None)
                self._settle(self.clock.flush())
            for a in self.audios:
                self._audio_frames(a, None)
        for s in list(self.active):
            if s.state == "open":
                self._video_done(s, self.last_end)
            if s.state == "tail":
                self._close(s)
        if self.errors:
            self.notes.append(f"{self.errors} packet(s) could not be decoded")
        for s in self.pending:
            s.state = "failed"
            s.reason = f"span starts after the end of the source ({self.position:.2f} s)"
            self.done.append(s)
        self.pending = []

    def abort_all(self, reason: str) -> None:
        for s in self.active + self.pending:
            _abort(s, reason)
            self.done.append(s)
        self.active, self.pending = [], []

    def _needed(self, upto: float) -> bool:
        """Must the decoder run? While a clip is open, or once a pending clip's
        start lies before ``upto`` (the frame shown then is in the current GOP)."""
        return bool(self.active) or bool(self.pending and self.pending[0].start < upto + EPS)

    # ---- video

    def _vpacket(self, packet) -> None:
        raw = packet.pts if packet.pts is not None else packet.dts
        if raw is None:
            t = self.max_pkt_t
        else:
            t = float((raw + self.clock.unwrap.off) * self.vtb)
        if packet.is_keyframe:
            # A pending start before this keyframe is shown in the GOP that ends here,
            # or by a leading picture after it: decode what was held back first.
            if not self.live and self.vbuf and self._needed(t - 2 * EPS):
                self._go_live()
            if self.live and not self._needed(max(t, self.max_pkt_t) - 2 * EPS):
                self._settle(self.clock.flush())  # frames held back for ordering
                self.vctx.flush_buffers()  # frames still inside belong to no clip
                self.live = False
                self.prev = None
            if not self.live:
                self.vbuf = []
        t_end = t + (float(packet.duration * self.vtb) if packet.duration else self.frame_s)
        self.max_pkt_t = max(self.max_pkt_t, t_end)
        self.position = t - self.t0
        if self.live:
            self._decode_video(packet)
            return
        if packet.is_keyframe or self.vbuf:
            self.vbuf.append(packet)
        if self.vbuf and self._needed(self.max_pkt_t - 2 * EPS):
            self._go_live()

    def _go_live(self) -> None:
        self.live = True
        buf, self.vbuf = self.vbuf, []
        for p in buf:
            self._decode_video(p)

    def _decode_video(self, packet) -> None:
        try:
            frames = self.vctx.decode(packet)
        except (av.FFmpegError, ValueError):
            self.errors += 1
            return
        for f in frames:
            self._settle(self.clock.push(f))

    def _settle(self, timed) -> None:
        for frame, _pts, t, event in timed:
            self._vframe(frame, t, event)

    def _vframe(self, frame, t: float, event: str | None) -> None:
        dur = float(frame.duration * self.vtb) if frame.duration else self.frame_s
        if event == "discontinuity":
            rel = t - self.t0
            self.notes.append(f"timestamps jump backwards at {rel:.2f} s: no clip is cut across it")
            for s in list(self.active):
                if s.state == "open":
                    s.note = f"ends early at a timestamp discontinuity ({rel:.2f} s)"
                    self._video_done(s, self.last_end)
        self.last_end = t + dur
        # A span starts with the frame shown at its start: the previous frame when
        # the start falls inside its display interval, which this frame closes.
        late = []
        while self.pending and self.pending[0].start < t - EPS:
            s = self.pending.pop(0)
            if self.prev is not None and self.prev[1] <= s.start + EPS:
                self._start(s, *self.prev)
            else:  # nothing earlier was decoded (no keyframe before it)
                s.note = f"first frame inside the span is {t - s.start:.3f} s after its start"
                late.append(s)
        for s in list(self.active):
            if s.state != "open":
                continue
            if t >= s.end - EPS:
                self._video_done(s, t)
            else:
                self._encode_frame(s, frame, t)
        while self.pending and t >= self.pending[0].start - EPS:
            late.append(self.pending.pop(0))
        for s in late:
            if t >= s.end - EPS:
                s.state, s.reason = "failed", "no video frame inside the span"
                self.done.append(s)
            else:
                self._start(s, frame, t)
        self.prev = (frame, t)

    def _start(self, s: _EncodeSpan, frame, t: float) -> None:
        if self._open(s, frame, t):
            self._encode_frame(s, frame, t)
            held, s.held = s.held, []
            for aidx, af, at in held:
                self._audio_into(s, aidx, af, at)

    def _open(self, s: _EncodeSpan, frame, t: float) -> bool:
        try:
            out = _open_output(s, self.folder, "mp4", self.mode, t - self.t0)
            vs = out.add_stream("libx264", rate=self.rate) if self.rate else out.add_stream("libx264")
            vs.width, vs.height = frame.width, frame.height
            vs.pix_fmt = "yuv420p"
            vs.codec_context.time_base = self.vtb
            vs.options = dict(X264)
            if self.vctx.sample_aspect_ratio:
                vs.codec_context.sample_aspect_ratio = self.vctx.sample_aspect_ratio
            if frame.rotation:
                vs.set_display_rotation(int(frame.rotation))
            s.smap[self.video.index] = vs
            for a in self.audios:
                self._aac_stream(s, out, a)
        except (av.FFmpegError, OSError, ValueError) as ex:
            _abort(s, f"cannot open output: {ex}")
            self.done.append(s)
            return False
        s.size = (frame.width, frame.height)
        s.cut_start = t
        s.audio_open = set(s.enc)
        s.state = "open"
        self.active.append(s)
        return True

    def _encode_frame(self, s: _EncodeSpan, frame, t: float) -> None:
        """Queue ``frame`` (shown at ``t``) for ``s``; encode the one before it, whose
        display duration this frame's time now gives (exact VFR durations)."""
        if s.vhold is not None:
            self._encode_held(s, t)
        s.vhold = (frame, t)
        s.frames += 1

    def _encode_held(self, s: _EncodeSpan, t_next: float) -> None:
        frame, t = s.vhold
        s.vhold = None
        w, h = s.size
        f = frame
        if f.format.name != "yuv420p" or (f.width, f.height) != (w, h):
            f = frame.reformat(width=w, height=h, format="yuv420p")
        pts = round((t - s.cut_start) / self.vtb)
        end = round((t_next - s.cut_start) / self.vtb)
        if s.frames > 1 and pts <= s.vpts0:
            pts = s.vpts0 + 1
        s.vpts0 = pts
        f.pts, f.time_base = pts, self.vtb
        f.duration = max(1, end - pts)
        f.pict_type = 0  # let x264 choose frame types (a decoded frame carries the source's)
        self._mux(s, s.smap[self.video.index].encode(f), video=True)

    def _video_done(self, s: _EncodeSpan, t: float) -> None:
        s.state = "tail"
        s.cut_end = t
        if s.vhold is not None:
            self._encode_held(s, t)
        if not s.audio_open:
            self._close(s)

    # ---- audio

    def _apacket(self, packet) -> None:
        t = self._audio_clock(packet, self.active)
        # Decode a second ahead of the next clip (the decoder settles), not the whole file.
        if self.active or (self.pending and t + 1.0 >= self.pending[0].start):
            self._audio_frames(packet.stream, packet)

    def _audio_frames(self, stream, packet) -> None:
        for f, t in self._decode_audio(stream, packet):
            self._aframe(stream.index, f, t)

    def _aframe(self, aidx: int, f, t: float) -> None:
        dur = f.samples / f.sample_rate
        for s in list(self.active):
            self._audio_into(s, aidx, f, t)
        for s in self.pending:
            if s.start > t + dur + 1.0:
                break
            if t + dur > s.start - EPS and t < s.end:
                s.held.append((aidx, f, t))

    def _audio_into(self, s: _EncodeSpan, aidx: int, f, t: float) -> None:
        end = self._audio_end(s, aidx, t)
        if end is not None:
            self._feed_aac(s, aidx, f, t, end)

    # ---- output

    def _mux(self, s: _EncodeSpan, packets, video: bool = False, last: bool = False) -> None:
        """Write encoded packets. Video lags one packet: at ``last`` the held one
        gets the duration that makes the track's (dts) span equal the display span."""
        if s.state == "failed":
            return
        try:
            for p in packets:
                if video:
                    if s.first_vdts is None:
                        s.first_vdts = p.dts if p.dts is not None else p.pts
                    p, s.vpkt = s.vpkt, p
                    if p is None:
                        continue
                s.out.mux_one(p)
            if last and s.vpkt is not None:
                p, s.vpkt = s.vpkt, None
                tb = time_base(p, self.vtb)
                span = round(Fraction(s.cut_end - s.cut_start) / tb)
                dur = span + (s.first_vdts or 0) - (p.dts if p.dts is not None else p.pts)
                if dur > 0:
                    p.duration = dur
                s.out.mux_one(p)
        except (av.FFmpegError, OSError, ValueError) as ex:
            _abort(s, f"writing failed: {ex}")
            if s in self.active:
                self.active.remove(s)
            self.done.append(s)

    def _close(self, s: _EncodeSpan) -> None:
        if s in self.active:
            self.active.remove(s)
        if s.state != "failed":
            if s.frames == 0:
                _abort(s, "no video frame inside the span")
            else:
                self._mux(s, s.smap[self.video.index].encode(None), video=True, last=True)
                for aidx in s.enc:
                    if s.state != "failed":
                        self._drain_audio(s, aidx, final=True)
                if s.state != "failed":
                    try:
                        _finish(s)
                    except (av.FFmpegError, OSError, ValueError) as ex:
                        _abort(s, f"finishing failed: {ex}")
        if s not in self.done:
            self.done.append(s)
        self.tick(self.position, force=True)

