"""The audio both passes share: AAC transcoding of decoded audio into a span
(the re-encode pass, and the copy pass for audio MP4 cannot hold) and the
packet-level audio clock on the shared timeline.
"""

from __future__ import annotations

import math
from fractions import Fraction

import av

from facecut.cut.files import EPS
from facecut.cut.spans import _Span
from facecut.timeline import Unwrapper, time_base

AAC_BITRATE = 160_000
AUDIO_TB = Fraction(1, 48000)  # an audio stream's time base when it states none


class _AacAudio:
    """AAC encoding of decoded audio into a span (the re-encode pass, and the copy
    pass for audio MP4 cannot hold). ``s.enc[aidx] = [fifo, stream, first pts, samples]``;
    the subclass provides ``_mux(span, packets)``."""

    @staticmethod
    def _aac_layout(a) -> str:
        """A layout the AAC encoder takes (sources often say only "1 channels")."""
        n = a.codec_context.channels or 2
        return {1: "mono", 2: "stereo", 6: "5.1"}.get(n, "stereo")

    def _resampler(self, a):
        return av.AudioResampler(format="fltp", layout=self._aac_layout(a))

    def _aac_stream(self, s: _Span, out, a) -> None:
        layout = self._aac_layout(a)
        aus = out.add_stream("aac", rate=a.codec_context.sample_rate or 48000, layout=layout)
        aus.codec_context.bit_rate = min(AAC_BITRATE, 64_000 * aus.codec_context.channels)
        s.enc[a.index] = [av.AudioFifo(), aus, None, 0]

    def _audio_clock(self, packet, active: list[_Span]) -> float:
        """Put a packet of a re-encoded audio stream on the stream's timeline
        (facecut.timeline) and return its time. Every packet comes here, decoded or
        not, so a jump between two decoded stretches is still seen; at a jump back,
        the ``active`` spans take no more of this stream's audio."""
        stream = packet.stream
        tb = time_base(packet, time_base(stream, AUDIO_TB))
        uw = self.awrap.get(stream.index)
        if uw is None:
            uw = self.awrap[stream.index] = Unwrapper(tb)
        raw = packet.pts if packet.pts is not None else packet.dts
        if raw is None:
            return float(uw.end * tb) if uw.end is not None else math.inf
        off, event = uw(raw, packet.duration or 0)
        t = float((raw + off) * tb)
        if event == "discontinuity":
            for s in active:
                s.audio_cap = min(s.audio_cap, t)
        return t

    def _decode_audio(self, stream, packet) -> list[tuple[object, float]]:
        """Decode a packet (None: flush) of an audio stream that is re-encoded: fltp
        frames with their times on the stream's timeline, with the offset of the
        packet that made them (``_audio_clock`` saw it first)."""
        try:
            frames = stream.codec_context.decode(packet)
        except (av.FFmpegError, ValueError):
            self.errors += 1
            return []
        uw = self.awrap.get(stream.index)
        off = uw.off * uw.tb if uw is not None else 0
        out = []
        for f in frames:
            if f.time_base is None:
                f.time_base = stream.time_base
            for rf in self.resamplers[stream.index].resample(f):
                if rf.pts is not None:
                    out.append((rf, float(rf.pts * Fraction(rf.time_base) + off)))
        return out

    def _audio_end(self, s: _Span, aidx: int, t: float) -> float | None:
        """Where audio stream ``aidx`` of ``s`` stops (the planned end; the last
        frame's end once the video is done), or None when audio from ``t`` on is
        not wanted (reaching the end closes a span whose video is done)."""
        if s.state not in ("open", "tail") or aidx not in s.audio_open:
            return None
        end = min(s.cut_end if s.state == "tail" else s.end, s.audio_cap)
        if t >= end - EPS:
            s.audio_open.discard(aidx)
            if s.state == "tail" and not s.audio_open:
                self._close(s)
            return None
        return end

    def _feed_aac(self, s: _Span, aidx: int, f, t: float, end: float) -> None:
        """The samples of decoded frame ``f`` (shown from ``t``) inside [cut_start, end)."""
        sr = f.sample_rate
        i0 = max(0, math.ceil((s.cut_start - t) * sr - 1e-6))
        i1 = min(f.samples, math.ceil((end - t) * sr - 1e-6))
        if i1 <= i0:
            return
        import numpy as np

        arr = np.ascontiguousarray(f.to_ndarray()[:, i0:i1])
        nf = av.AudioFrame.from_ndarray(arr, format="fltp", layout=f.layout.name)
        nf.sample_rate = sr
        enc = s.enc[aidx]
        if enc[2] is None:
            enc[2] = max(0, round((t + i0 / sr - s.cut_start) * sr))
        enc[0].write(nf)
        self._drain_audio(s, aidx, final=False)

    def _drain_audio(self, s: _Span, aidx: int, final: bool) -> None:
        fifo, aus, first, n = s.enc[aidx]
        size = aus.codec_context.frame_size or 1024
        while fifo.samples >= size or (final and fifo.samples):
            chunk = fifo.read(size) if fifo.samples >= size else fifo.read()
            chunk.pts = (first or 0) + n
            chunk.time_base = Fraction(1, chunk.sample_rate)
            n += chunk.samples
            self._mux(s, aus.encode(chunk))
        s.enc[aidx][3] = n
        if final:
            self._mux(s, aus.encode(None))

    def _mux(self, s: _Span, packets) -> None:
        raise NotImplementedError

    def _close(self, s: _Span) -> None:
        raise NotImplementedError
