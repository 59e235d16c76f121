"""Stage 7, cut: write every planned clip, reading each source once.

``cut_plan`` reads ``WORK/plan.json`` and writes each clip to
``OUT/<source folder>/<clip id>.mp4`` (``fsio.output_folder``: the source's
stem made safe plus a hash of its relative path; nothing is written outside OUT):

* **Stream copy** (default): one demux pass per source; every packet goes to
  every clip whose span covers it (one output container per open clip, opened
  when its span starts, closed when it ends). A copied clip starts on the
  keyframe at or before the planned start (found from packet flags while
  demuxing: the packets since the last keyframe are kept, so no seek) and ends
  before the first video packet at or after the planned end; with B-frames that
  can lose the last few frames, which ``cut_end`` records. Audio streams are kept
  (copied, or transcoded to AAC when MP4 cannot hold them: WMA, PCM, MP2...),
  data/subtitle streams are not. MKV only for a video codec MP4 refuses.
* **Re-encode fallback** (copy mode, per clip): a clip stream copy cannot make
  well -- no container takes the video by copy (WMV2), the keyframe lies more
  than ``max_lead_in`` before the start, or the muxer refused the packets -- is
  re-encoded by the accurate pass in a second read of the source, its reason in
  ``Clip.encoded``; nothing that decodes is left unwritten.
* **Accurate** (``accurate=True``): decode once per source, re-encode (libx264,
  AAC) so clips start and end exactly on the planned frames. Only the GOPs that
  hold a clip are decoded.

Times in plan.json are seconds relative to the source's first frame
(``SourcePlan.t0`` seconds of stream time); a span is half-open, ``[start, end)``.
Both passes map timestamps through ``facecut.timeline`` exactly as the analysis
did (reordering, gaps, discontinuities), and no clip is cut across a backward jump.

Every clip is written under a temporary name in its final folder and renamed
when complete, and carries its own description in the container's ``comment``
tag (id, mode, span, actual cut): a re-run skips a clip whose file exists and
whose tag and duration match, and adopts a finished clip that plan.json does
not know yet (a run killed between the rename and the plan write). Temporary
files of dead runs are removed. plan.json is rewritten (atomically) every few
seconds and at the end; ``plan.params["cut"]`` records the output folder and mode.
A :class:`CutCache` remembers the clips written or checked in this process, so a
streamed run's final pass opens none of them again.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import msgspec

from facecut.errors import ConfigError
from facecut.fsio import (
    OUT_MARKER,
    UnsafePath,
    atomic_write_bytes,
    display_name,
    fingerprint,
    inside,
    mark_folder,
    output_folder,
    read_json,
    remove_temp_files,
    replace_with_retry,
    temp_name,
    text_name,
    write_json,
)
from facecut.media import ffmpeg_reason, open_input, refusal_reason
from facecut.procs import pid_alive
from facecut.records import Clip, Plan, SourcePlan
from facecut.timeline import FrameClock, Unwrapper, frame_rate, start_seconds, time_base
from facecut.workdir import WorkDir

log = logging.getLogger(__name__)

EPS = 1e-3  # seconds: slack when comparing planned times with frame times
TAG_PREFIX = "facecut-clip "  # container comment tag: TAG_PREFIX + JSON
AUDIO_KEEP_S = 30.0  # audio kept back without a video keyframe (video ended early)
X264 = {"preset": "veryfast", "crf": "18"}  # accurate mode
AAC_BITRATE = 160_000

_TMP = re.compile(r"^\.(?P<name>[0-9a-f-]{36}\.(?:mp4|mkv|json))\.(?P<pid>\d+)\.tmp$")


# --------------------------------------------------------------------------- results


class SourceCut(msgspec.Struct, kw_only=True):
    """What happened to one source. ``status``: ``ok`` (every clip there),
    ``skipped`` (nothing to do, the source was not opened), ``partial`` (some
    clips failed), ``failed`` (none could be written)."""

    source: str
    status: Literal["ok", "skipped", "partial", "failed"] = "ok"
    reason: str = ""
    container: str = ""  # "mp4" | "mkv"
    clips: int = 0  # planned for this source
    written: int = 0
    skipped: int = 0  # already there and matching (or adopted)
    failed: int = 0
    bytes: int = 0  # written by this run
    opens: int = 0  # times the source was opened for reading (1 when anything was cut)
    seconds: float = 0.0
    notes: list[str] = []  # things a person should know (MKV fallback, discontinuities...)
    failures: dict[str, str] = {}  # clip id -> reason


class CutResult(msgspec.Struct, kw_only=True):
    out_dir: str
    accurate: bool
    sources: list[SourceCut] = []

    @property
    def written(self) -> int:
        return sum(s.written for s in self.sources)

    @property
    def skipped(self) -> int:
        return sum(s.skipped for s in self.sources)

    @property
    def failed(self) -> int:
        return sum(s.failed for s in self.sources)

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.sources)

    @property
    def opens(self) -> int:
        return sum(s.opens for s in self.sources)

    @property
    def ok(self) -> bool:
        return all(s.status in ("ok", "skipped") for s in self.sources)


class CutProgress(msgspec.Struct, kw_only=True):
    """Snapshot handed to ``progress``: after each clip and a few times a second."""

    source: str
    source_index: int  # 0-based
    sources: int
    clips_done: int  # of this source (written + skipped + failed)
    clips: int
    position: float  # seconds read of this source (relative to t0)
    duration: float  # seconds, 0 when unknown


Progress = Callable[[CutProgress], None]


# --------------------------------------------------------------------------- clip files


def clip_relpath(clip: Clip, container: str = "mp4") -> str:
    """Path of a clip relative to the output folder (POSIX separators)."""
    return f"{output_folder(clip.source)}/{clip.id}.{container}"


def _tag(clip: Clip, mode: str, cut_start: float) -> str:
    """The clip's own description. Written with the header, so without the actual
    end (the file's video duration says it)."""
    info = {
        "id": clip.id,
        "source": clip.source,
        "mode": mode,
        "start": round(clip.start, 6),
        "end": round(clip.end, 6),
        "cut_start": round(cut_start, 6),
    }
    if clip.encoded:
        info["encoded"] = clip.encoded
    return TAG_PREFIX + json.dumps(info, separators=(",", ":"))


def read_clip_tag(path: Path) -> tuple[dict | None, float]:
    """(the tag ``cut`` wrote into a clip, its video duration in seconds), or
    (None, 0.0) when the file is not a complete clip of ours."""
    try:
        with open_input(path) as c:
            text = {k.lower(): v for k, v in c.metadata.items()}.get("comment", "")
            if not text.startswith(TAG_PREFIX) or not c.streams.video:
                return None, 0.0
            v = c.streams.video[0]
            if v.duration and v.time_base:
                dur = float(v.duration * v.time_base)
            else:  # Matroska: no stream duration; the container's is the longest stream
                dur = (c.duration or 0) / av.time_base
            if not _complete(c, path, dur):
                return None, 0.0
    except (av.FFmpegError, OSError):
        return None, 0.0
    try:
        return json.loads(text[len(TAG_PREFIX):]), dur
    except ValueError:
        return None, 0.0


def _complete(c, path: Path, dur: float) -> bool:
    """Is every sample there? MP4: the index (moov, at the front) says where each
    one lies, so the file must reach the last. MKV: read the last second."""
    if c.format.name.startswith("mov"):
        size = path.stat().st_size
        ends = [e.pos + e.size for s in c.streams for e in s.index_entries]
        return bool(ends) and max(ends) <= size
    c.seek(max(0, int((dur - 1.0) * av.time_base)))
    last = 0.0
    for p in c.demux(c.streams.video[0]):
        if p.pts is not None and p.size:
            last = max(last, float((p.pts + (p.duration or 0)) * p.time_base))
    return last >= dur - 0.1

class CutCache:
    """The clips this process wrote or checked, so none is opened again to be
    checked (a batch's cut bookkeeping stays O(clips): streaming cuts each video's
    clips once, the final pass finds them here). Keyed by the file's path in OUT;
    an entry holds only while the file keeps its size and modification time."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[int, int, str, float, float, dict]] = {}

    def put(self, path: Path, rel: str, mode: str, clip: Clip, fields: dict) -> None:
        try:
            st = path.stat()
        except OSError:
            return
        self.files[rel] = (st.st_size, st.st_mtime_ns, mode, clip.start, clip.end, dict(fields))

    def get(self, path: Path, rel: str, mode: str, clip: Clip) -> dict | None:
        hit = self.files.get(rel)
        if hit is None:
            return None
        try:
            st = path.stat()
        except OSError:
            return None
        size, mtime, got_mode, start, end, fields = hit
        if (size, mtime) != (st.st_size, st.st_mtime_ns) or abs(start - clip.start) > EPS \
                or abs(end - clip.end) > EPS:
            return None
        if got_mode != mode and not (mode == "copy" and got_mode == "reencode"):
            return None
        return dict(fields)


def _existing(out_dir: Path, clip: Clip, mode: str, cache: CutCache | None = None) -> dict | None:
    """The finished file of ``clip`` if one exists and matches, as plan fields.

    Matches: the tag names this clip, span and mode; when plan.json already has
    the cut, the file starts there and lasts ``cut_end - cut_start`` (a file with
    another length is someone else's or damaged). A file in ``cache`` (written or
    checked by this process, unchanged since) is not opened again."""
    exts = [clip.container] if clip.container in ("mp4", "mkv") else []
    for ext in dict.fromkeys(exts + ["mp4", "mkv"]):
        rel = clip_relpath(clip, ext)
        path = out_dir / rel
        if cache is not None:
            fields = cache.get(path, rel, mode, clip)
            if fields is not None:
                return fields
        if not path.is_file():
            continue
        tag, dur = read_clip_tag(path)
        if not tag or tag.get("id") != clip.id or dur <= 0:
            continue
        if tag.get("mode") != mode and not (mode == "copy" and tag.get("mode") == "reencode"):
            continue
        if abs(tag.get("start", -1) - clip.start) > EPS or abs(tag.get("end", -1) - clip.end) > EPS:
            continue
        cs = float(tag["cut_start"])
        if clip.file == rel and clip.cut_start is not None and clip.cut_end is not None:
            if abs(clip.cut_start - cs) > EPS:
                continue
            slack = 0.1 if ext == "mkv" else 0.04  # MKV: container duration includes audio
            if abs(dur - (clip.cut_end - clip.cut_start)) > slack:
                continue
            ce = clip.cut_end
        else:
            ce = cs + dur
        fields = {"file": rel, "cut_start": cs, "cut_end": round(ce, 6), "lead_in": round(clip.start - cs, 6),
                  "container": ext, "encoded": tag.get("encoded", "")}
        if cache is not None:
            cache.put(path, rel, tag["mode"], clip, fields)
        return fields
    return None


def clean_temp_files(folder: Path) -> list[Path]:
    """Remove temporary clip files left by killed runs (dead pids) in ``folder``:
    OUT is not under WORK's lock, so a live cut's files stay."""
    return remove_temp_files(folder, alive=pid_alive, pattern=_TMP)


# --------------------------------------------------------------------------- one clip being written


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


# --------------------------------------------------------------------------- source helpers


def _main_video(container):
    vids = [s for s in container.streams.video if not (s.disposition & av.stream.Disposition.attached_pic)]
    return vids[0] if vids else None


def _accepts(fmt: str, streams) -> str | None:
    """None when a ``fmt`` muxer takes every stream by copy, else the codec it refuses."""
    import io

    probe = av.open(io.BytesIO(), "w", format=fmt)
    try:
        for s in streams:
            try:
                probe.add_stream_from_template(s)
            except ValueError:
                return s.codec_context.codec.name if s.codec_context else "?"
    finally:
        try:
            probe.close()
        except Exception:  # noqa: BLE001, S110 - nothing was written
            pass
    return None


# Audio that MP4 players handle badly or MP4 refuses: transcoded to AAC by the copy pass.
_AAC_TRANSCODE = ("wmav1", "wmav2", "wmapro", "wmavoice", "mp2", "adpcm_ima_wav", "adpcm_ms")


def _copy_plan(video, audios) -> tuple[str | None, set[int], str]:
    """How the copy pass writes a source: (container or None when no container
    takes the video by copy, audio stream indexes to transcode to AAC, note).

    MP4 whenever it takes the video; audio MP4 can't hold (WMA, PCM, MP2,
    ADPCM...) is transcoded to AAC; MKV only for a video codec MP4 refuses."""
    refused = _accepts("mp4", [video])
    if refused is None:
        transcode = {a.index for a in audios
                     if _accepts("mp4", [a]) is not None or a.codec_context.name in _AAC_TRANSCODE
                     or a.codec_context.name.startswith("pcm_")}
        names = sorted({a.codec_context.name for a in audios if a.index in transcode})
        note = f"audio {', '.join(names)} transcoded to AAC (MP4 cannot hold it)" if names else ""
        return "mp4", transcode, note
    if _accepts("matroska", [video, *audios]) is None:
        return "mkv", set(), f"codec {refused} cannot go into MP4: clips written as MKV"
    return None, set(), f"codec {refused} cannot be stream-copied into MP4 or MKV: clips re-encoded (H.264 + AAC)"


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
        tb = Fraction(packet.time_base or stream.time_base or Fraction(1, 48000))
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


# --------------------------------------------------------------------------- the copy pass


class _CopyPass(_AacAudio):
    """One demux pass over a source, writing its clips by stream copy."""

    def __init__(self, container, spans: list[_Span], folder: Path, fmt: str, t0: float, tick, *,
                 transcode: set[int] = frozenset(), max_lead_in: float = math.inf):
        self.c = container
        self.folder, self.fmt, self.t0, self.tick = folder, fmt, t0, tick
        self.video = _main_video(container)
        self.audios = list(container.streams.audio)
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
        self.pending = sorted(spans, key=lambda s: s.start)
        self.waiting: list[_Span] = []  # reached, but no keyframe yet in this segment
        self.active: list[_Span] = []  # open or tail
        self.done: list[_Span] = []
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
            dur = max(1, round(Fraction(self.frame_s) / tb)) if sidx == self.vidx else 1
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
            step = max(1, round(Fraction(self.frame_s) / self.vtb))
            n = len(self.nodts)
            for k, p in enumerate(self.nodts):
                p.dts = min(p.pts, packet.dts - (n - k) * step)
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
        tb = packet.stream.time_base or Fraction(1, 48000)
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

    def _aframe_to(self, s: _Span, aidx: int, f, t: float) -> None:
        limit = self._audio_end(s, aidx, t)
        if limit is None:
            return
        if s.state == "open" and t >= s.frontier:
            s.aheld.append((aidx, f, t))  # the video may still end before it
        else:
            self._feed_aac(s, aidx, f, t, limit)

    def _mux(self, s: _Span, packets) -> None:
        if s.state == "failed":
            return
        try:
            for p in packets:
                s.out.mux_one(p)
        except (av.FFmpegError, OSError, ValueError) as ex:
            self._fail_writing(s, ex)

    def _fail_writing(self, s: _Span, ex: Exception) -> None:
        _abort(s, f"writing failed: {ex}")
        s.reencode = True
        if s in self.active:
            self.active.remove(s)
        if s not in self.done:
            self.done.append(s)

    # ---- clips

    def _open(self, s: _Span) -> None:
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
            s.off[a.index] = round(exact / (a.time_base or Fraction(1, 48000)))
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

    def _video_to(self, s: _Span, e: _Pkt) -> None:
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

    def _video_done(self, s: _Span) -> None:
        """No more video for ``s``; audio goes on up to the last frame's end."""
        s.state = "tail"
        s.cut_end = s.frontier
        if s.vhold is not None:
            e, s.vhold = s.vhold, None
            if s.first_vdts is not None:
                span = round(Fraction(s.cut_end) / e.tb) - s.off[self.vidx]  # display span, pts units
                dur = span + s.first_vdts - (e.dts - s.off[self.vidx])
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

    def _audio_to(self, s: _Span, e: _Pkt) -> None:
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

    def _write(self, s: _Span, e: _Pkt, dur: int | None = None) -> None:
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

    def _close(self, s: _Span) -> None:
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


# --------------------------------------------------------------------------- the accurate (re-encode) pass


class _EncodePass(_AacAudio):
    """One demux pass over a source; decodes only the GOPs that hold a clip and
    re-encodes each clip exactly on its planned frames (libx264 + AAC, MP4)."""

    def __init__(self, container, spans: list[_Span], folder: Path, t0: float, tick, mode: str = "accurate"):
        self.c = container
        self.folder, self.t0, self.tick = folder, t0, tick
        self.mode = mode  # "accurate" (asked for) | "reencode" (stream copy could not do it)
        self.video = _main_video(container)
        self.video.thread_type = "AUTO"
        self.vctx = self.video.codec_context
        self.audios = [a for a in container.streams.audio if a.codec_context is not None]
        self.vtb = time_base(self.video)
        self.rate = frame_rate(self.video)
        self.frame_s = float(1 / self.rate)
        self.pending = sorted(spans, key=lambda s: s.start)
        self.active: list[_Span] = []
        self.done: list[_Span] = []
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

    def _start(self, s: _Span, frame, t: float) -> None:
        if self._open(s, frame, t):
            self._encode_frame(s, frame, t)
            held, s.held = s.held, []
            for aidx, af, at in held:
                self._audio_into(s, aidx, af, at)

    def _open(self, s: _Span, frame, t: float) -> bool:
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

    def _encode_frame(self, s: _Span, frame, t: float) -> None:
        """Queue ``frame`` (shown at ``t``) for ``s``; encode the one before it, whose
        display duration this frame's time now gives (exact VFR durations)."""
        if s.vhold is not None:
            self._encode_held(s, t)
        s.vhold = (frame, t)
        s.frames += 1

    def _encode_held(self, s: _Span, t_next: float) -> None:
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

    def _video_done(self, s: _Span, t: float) -> None:
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

    def _audio_into(self, s: _Span, aidx: int, f, t: float) -> None:
        end = self._audio_end(s, aidx, t)
        if end is not None:
            self._feed_aac(s, aidx, f, t, end)

    # ---- output

    def _mux(self, s: _Span, packets, video: bool = False, last: bool = False) -> None:
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
                tb = p.time_base or self.vtb
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

    def _close(self, s: _Span) -> None:
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


# --------------------------------------------------------------------------- driver


class _SourceFailed(Exception):
    pass


def _write_sidecar(out_dir: Path, clip: Clip) -> None:
    path = inside(out_dir, clip.file).with_suffix(".json")
    atomic_write_bytes(path, msgspec.json.format(msgspec.json.encode(clip), indent=1))


_CUT_FIELDS = ("file", "cut_start", "cut_end", "lead_in", "container", "encoded")  # what cut fills in


def _clear_cut(clip: Clip) -> None:
    clip.file = clip.cut_start = clip.cut_end = clip.lead_in = clip.container = None
    clip.encoded = ""


class _Ticker:
    """Throttled progress snapshots (at most 4 a second, plus one per finished clip)."""

    def __init__(self, progress: Progress | None, rel: str, index: int, sources: int, clips: int, duration: float):
        self.progress = progress
        self.snap = CutProgress(source=rel, source_index=index, sources=sources, clips_done=0,
                                clips=clips, position=0.0, duration=duration)
        self.last = 0.0
        self.done_base = 0
        self.pass_ = None

    def __call__(self, position: float, force: bool = False) -> None:
        if self.progress is None:
            return
        now = time.perf_counter()
        if not force and now - self.last < 0.25:
            return
        self.last = now
        self.snap.position = max(0.0, position)
        self.snap.clips_done = self.done_base + (len(self.pass_.done) if self.pass_ else 0)
        self.progress(self.snap)


_PLAN_WRITE_EVERY = 5.0  # seconds: plan.json is rewritten at most this often while cutting (and at the end)


def cut_plan(
    work: WorkDir,
    out_dir: Path,
    *,
    accurate: bool = False,
    sidecar: bool = False,
    progress: Progress | None = None,
    max_lead_in: float = 2.0,
    cache: CutCache | None = None,
) -> CutResult:
    """Cut every clip of ``WORK/plan.json`` into ``out_dir`` (see the module doc).

    Opens each source once (twice when some of its clips must be re-encoded; not
    at all when all its clips are already there). A source that cannot be read is reported in the result and the others
    go on; only an unusable plan or output folder raises (``ConfigError``).
    plan.json is rewritten every few seconds while cutting and at the end (or on
    an interruption); a clip finished in between is adopted by the next run.
    """
    work = work if isinstance(work, WorkDir) else WorkDir(Path(work))
    if not work.plan_json.exists():
        raise ConfigError(f"no plan in {work.root} (run `facecut score -w {work.root}` first)")
    try:
        plan = read_json(work.plan_json, Plan)
    except (msgspec.DecodeError, msgspec.ValidationError) as ex:
        raise ConfigError(f"{work.plan_json} is not a valid plan: {ex}") from ex
    last = time.perf_counter()
    dirty = False

    def source_done(touched: bool) -> None:
        nonlocal last, dirty
        dirty |= touched
        if dirty and time.perf_counter() - last >= _PLAN_WRITE_EVERY:
            write_json(work.plan_json, plan)
            last, dirty = time.perf_counter(), False

    try:
        result, changed = cut_clips(plan, out_dir, accurate=accurate, sidecar=sidecar, progress=progress,
                                    max_lead_in=max_lead_in, cache=cache, on_source=source_done)
    except BaseException:
        write_json(work.plan_json, plan)  # what was finished before the interruption
        raise
    if dirty or changed:
        write_json(work.plan_json, plan)
    return result


def cut_clips(
    plan: Plan,
    out_dir: Path,
    *,
    accurate: bool = False,
    sidecar: bool = False,
    progress: Progress | None = None,
    max_lead_in: float = 2.0,
    cache: CutCache | None = None,
    on_source: Callable[[bool], None] | None = None,
) -> tuple[CutResult, bool]:
    """Cut the clips of ``plan`` (in memory: its clip entries get the cut fields)
    into ``out_dir``. Returns the result and whether the cut parameters in
    ``plan.params`` changed. ``on_source(touched)`` after each source."""
    out_dir = Path(out_dir).expanduser().resolve()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        mark_folder(out_dir, OUT_MARKER)
    except OSError as ex:
        raise ConfigError(f"cannot create the output folder {out_dir}: {ex.strerror or ex}") from ex
    input_dir = Path(plan.input_dir)
    mode = "accurate" if accurate else "copy"
    cut_params = {"out_dir": str(out_dir), "accurate": accurate, "max_lead_in": max_lead_in}
    changed = plan.params.get("cut") != cut_params
    plan.params["cut"] = cut_params

    groups: dict[str, list[int]] = {}
    for i, c in enumerate(plan.clips):
        groups.setdefault(c.source, []).append(i)
    planned = {sp.path: sp for sp in plan.sources}
    order = [p for p in planned if p in groups] + [p for p in groups if p not in planned]

    result = CutResult(out_dir=str(out_dir), accurate=accurate)
    for n, rel in enumerate(order):
        duration = planned[rel].duration if rel in planned else 0.0
        tick = _Ticker(progress, rel, n, len(order), len(groups[rel]), duration)
        sc, touched = _cut_source(plan, groups[rel], planned.get(rel), input_dir, out_dir, mode,
                                  sidecar, tick, max_lead_in, cache)
        tick.pass_, tick.done_base = None, sc.written + sc.skipped + sc.failed
        tick(duration, force=True)  # every source ends with a snapshot
        result.sources.append(sc)
        if on_source is not None:
            on_source(touched)
        log.info("%s: %s, %d written, %d skipped, %d failed%s", rel, sc.status, sc.written,
                 sc.skipped, sc.failed, f" ({sc.reason})" if sc.reason else "")
    return result, changed


def _cut_source(plan: Plan, idxs: list[int], sp: SourcePlan | None, input_dir: Path, out_dir: Path,
                mode: str, sidecar: bool, tick: _Ticker, max_lead_in: float = 2.0,
                cache: CutCache | None = None) -> tuple[SourceCut, bool]:
    """Cut one source's clips. Returns (its report, whether plan entries changed)."""
    t_begin = time.perf_counter()
    rel = plan.clips[idxs[0]].source
    sc = SourceCut(source=rel, clips=len(idxs))
    try:  # every file of this source goes into its folder, strictly inside OUT
        folder = inside(out_dir, output_folder(rel))
        for i in idxs:
            inside(folder, f"{plan.clips[i].id}.mp4")
    except UnsafePath as ex:
        sc.status, sc.reason, sc.failed = "failed", str(ex), len(idxs)
        sc.failures = {plan.clips[i].id: str(ex) for i in idxs}
        return sc, False
    clean_temp_files(folder)
    touched = False
    todo: list[int] = []
    first_of: dict[str, int] = {}
    dups: list[tuple[int, int]] = []
    for i in idxs:
        clip = plan.clips[i]
        hit = _existing(out_dir, clip, mode, cache)
        if hit is not None:
            if any(getattr(clip, k) != v for k, v in hit.items()):
                for k, v in hit.items():
                    setattr(clip, k, v)
                touched = True
            if sidecar and not (out_dir / clip.file).with_suffix(".json").exists():
                _write_sidecar(out_dir, clip)
            sc.skipped += 1
        elif not (clip.end > clip.start):
            sc.failed += 1
            sc.failures[clip.id] = f"empty span ({clip.start:.3f}..{clip.end:.3f} s)"
        elif clip.id in first_of:  # the same span listed twice: one file
            dups.append((i, first_of[clip.id]))
        else:
            first_of[clip.id] = i
            todo.append(i)
    tick.done_base = sc.skipped + sc.failed
    if not todo:
        sc.status = "skipped" if not sc.failed else "failed"
        sc.seconds = time.perf_counter() - t_begin
        return sc, touched

    for i in todo:
        if plan.clips[i].file is not None:
            _clear_cut(plan.clips[i])
            touched = True
    spans = [_Span(i, plan.clips[i], 0.0, 0.0) for i in todo]  # absolute times once t0 is known
    for s in spans:
        s.clip.encoded = ""
    t0 = 0.0
    retry: list[_Span] = []
    whole = False
    try:
        container = _check_and_open(_source_path(input_dir, rel, sp), sp)
        sc.opens += 1
        try:
            video = _main_video(container)
            if video is None:
                raise _SourceFailed("no video stream")
            if sp is not None:
                t0 = sp.t0
            elif video.start_time is not None:
                t0 = start_seconds(video)
            for s in spans:
                s.start, s.end = t0 + s.clip.start, t0 + s.clip.end
            if mode == "accurate":
                sc.container = "mp4"
                _run_pass(_EncodePass(container, spans, folder, t0, tick), sc, tick)
            else:
                fmt, transcode, why = _copy_plan(video, list(container.streams.audio))
                if why:
                    sc.notes.append(why)
                    log.info("%s: %s", rel, why)
                sc.container = fmt or "mp4"
                whole = fmt is None
                if whole:  # no container takes the video by copy: every clip re-encoded
                    retry = spans
                    for s in spans:
                        s.reencode, s.reason = True, why
                else:
                    _run_pass(_CopyPass(container, spans, folder, fmt, t0, tick, transcode=transcode,
                                        max_lead_in=max_lead_in), sc, tick)
                    retry = [s for s in spans if s.state == "failed" and s.reencode]
        finally:
            container.close()
        if retry:
            # Per clip, what stream copy could not do well is re-encoded (H.264 + AAC
            # in MP4, the accurate path), with the reason kept in plan.json.
            again = []
            for s in retry:
                s.clip.encoded = _encode_reason(s.reason)
                again.append(_Span(s.i, s.clip, s.start, s.end))
            spans = [s for s in spans if s not in retry] + again
            container = _check_and_open(_source_path(input_dir, rel, sp), sp, again=True)
            sc.opens += 1
            try:
                tick.done_base += len(spans) - len(again)
                _run_pass(_EncodePass(container, again, folder, t0, tick, mode="reencode"), sc, tick)
            finally:
                container.close()
            if not whole:  # (the whole source: its note says so already)
                for why in sorted({s.clip.encoded for s in again}):
                    n = sum(s.clip.encoded == why for s in again)
                    sc.notes.append(f"{n} clip(s) re-encoded: {why}")
    except _SourceFailed as ex:
        sc.reason = str(ex)
        for s in spans:
            if s.state != "closed":
                s.state, s.reason = "failed", str(ex)
    finally:
        touched |= _record(plan, spans, out_dir, sc, sidecar, t0, mode, cache)
        for i, j in dups:
            for k in _CUT_FIELDS:
                setattr(plan.clips[i], k, getattr(plan.clips[j], k))
            if plan.clips[j].file:
                sc.skipped += 1
            else:
                sc.failed += 1
                sc.failures.setdefault(plan.clips[i].id, sc.failures.get(plan.clips[j].id, "not written"))
    if sc.failed and not (sc.written or sc.skipped):
        sc.status = "failed"
    elif sc.failed:
        sc.status = "partial"
    if sc.failed and not sc.reason:
        sc.reason = f"{sc.failed} clip(s) not written"
    sc.seconds = time.perf_counter() - t_begin
    return sc, touched


def _run_pass(pass_, sc: SourceCut, tick: _Ticker) -> None:
    tick.pass_ = pass_
    try:
        pass_.run()
    except (av.FFmpegError, OSError) as ex:  # truncated/corrupt file, I/O error, vanished disk
        sc.reason = f"stopped reading at {pass_.position:.2f} s: {ffmpeg_reason(ex)}"
        pass_.abort_all(sc.reason)
    except BaseException:
        pass_.abort_all("interrupted")
        raise
    finally:
        sc.notes.extend(pass_.notes)


def _encode_reason(reason: str) -> str:
    if reason.startswith("writing failed") or reason.startswith("finishing failed"):
        return f"stream copy failed ({reason})"
    return reason


def _source_path(input_dir: Path, rel: str, sp: SourcePlan | None) -> Path:
    """The source file: its real name (``SourcePlan.raw_path``) when the plan has it."""
    return sp.fs_path(input_dir) if sp is not None else input_dir / rel


def _check_and_open(path: Path, sp: SourcePlan | None, again: bool = False):
    """Open the source after checking it is the file analysed: size, then the
    fingerprint (size + first and last MiB). A modification time that differs
    while both match (a copy, a touch) is said once (not on the second open,
    ``again``) and the file is cut."""
    if not path.is_file():
        raise _SourceFailed(f"source not found: {text_name(str(path))}")
    if sp is not None and sp.fingerprint:
        try:
            st = path.stat()
            if sp.size and st.st_size != sp.size:
                raise _SourceFailed(f"the file changed since it was analysed (size {st.st_size:,} bytes, "
                                    f"was {sp.size:,})")
            if fingerprint(path, st.st_size) != sp.fingerprint:
                raise _SourceFailed("the file changed since it was analysed (fingerprint differs)")
        except OSError as ex:
            raise _SourceFailed(f"cannot read: {ex.strerror or ex}") from ex
        if sp.mtime_ns and st.st_mtime_ns != sp.mtime_ns and not again:
            log.warning("%s: modified since it was analysed, but its size, first and last MiB are the "
                        "same: cut as analysed", display_name(sp.path))
    try:
        return open_input(path)
    except (av.FFmpegError, OSError) as ex:
        raise _SourceFailed(f"cannot open: {refusal_reason(path) or ffmpeg_reason(ex)}") from ex


def _record(plan: Plan, done: list[_Span], out_dir: Path, sc: SourceCut, sidecar: bool, t0: float,
            mode: str, cache: CutCache | None) -> bool:
    """Put what the pass did into plan.json entries and the source report."""
    for s in done:
        clip = plan.clips[s.i]
        if s.state == "closed":
            clip.file = s.final.relative_to(out_dir).as_posix()
            clip.container = s.final.suffix[1:]
            clip.cut_start = round(s.cut_start - t0, 6)
            clip.cut_end = round(s.cut_end - t0, 6)
            clip.lead_in = round(clip.start - clip.cut_start, 6)
            if cache is not None:
                tag_mode = "reencode" if mode == "copy" and clip.encoded else mode
                cache.put(s.final, clip.file, tag_mode, clip, {k: getattr(clip, k) for k in _CUT_FIELDS})
            sc.written += 1
            sc.bytes += s.final.stat().st_size
            if sidecar:
                _write_sidecar(out_dir, clip)
            if s.note:
                sc.notes.append(f"clip {clip.id}: {s.note}")
        else:
            _clear_cut(clip)
            sc.failed += 1
            sc.failures[clip.id] = s.reason or "not written"
    return bool(done)
