"""Stage 1, scan: walk an input folder and probe every video with PyAV.

A broken input never stops the scan: it becomes a ``VideoInfo`` with
``status="failed"`` and a one-line reason a person can act on.
"""

from __future__ import annotations

import logging
import re
import time
from fractions import Fraction
from pathlib import Path

import av
import av.logging
import msgspec

from engine.errors import ConfigError
from engine.fsio import WorkDir, fingerprint, read_json, write_json
from engine.media import open_input, refusal_reason
from engine.records import AudioInfo, ScanResult, VideoInfo
from engine.timeline import frame_rate, start_seconds, time_base

log = logging.getLogger(__name__)

DEFAULT_EXTENSIONS = (
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".wmv", ".flv",
    ".ts", ".mts", ".m2ts", ".mpg", ".mpeg", ".3gp",
)  # fmt: skip

# How many video packets the probe reads to judge the frame rate (cheap: demux only).
_VFR_PACKETS = 120
# Give up finding a first decodable frame after this many packets.
_FIRST_FRAME_PACKETS = 300


def normalise_extensions(exts) -> tuple[str, ...]:
    out = []
    for e in exts:
        for part in str(e).split(","):
            part = part.strip().lower()
            if part:
                out.append(part if part.startswith(".") else "." + part)
    return tuple(dict.fromkeys(out))


def walk(
    input_dir: Path,
    *,
    extensions=DEFAULT_EXTENSIONS,
    filter_from: str | None = None,
    skip_pattern: str | None = None,
) -> tuple[list[str], list[str]]:
    """Video files under ``input_dir`` (recursive), as sorted relative POSIX paths.

    ``filter_from``: start at this file in sorted order (matched against the
    relative path or the bare file name), like resuming a hand-made batch.
    ``skip_pattern``: a regular expression searched in the relative path.
    Returns ``(selected, skipped)``.
    """
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise ConfigError(f"input folder not found or not a folder: {input_dir}")
    exts = set(normalise_extensions(extensions))
    try:
        pattern = re.compile(skip_pattern) if skip_pattern else None
    except re.error as ex:
        raise ConfigError(f"--skip-pattern is not a valid regular expression: {ex}") from ex
    found = sorted(
        p.relative_to(input_dir).as_posix()
        for p in input_dir.rglob("*")
        if p.suffix.lower() in exts and (p.is_file() or p.is_symlink())
    )
    selected, skipped = [], []
    started = filter_from is None
    for rel in found:
        if not started and filter_from in (rel, rel.rsplit("/", 1)[-1]):
            started = True
        if not started or (pattern and pattern.search(rel)):
            skipped.append(rel)
        else:
            selected.append(rel)
    if filter_from is not None and not started:
        raise ConfigError(f"--filter-from {filter_from!r} matches no video under {input_dir}")
    return selected, skipped


def _ffmpeg_line(ex: Exception) -> str:
    """FFmpeg's own last log line if PyAV kept it (needs av.logging level >= ERROR)."""
    entry = getattr(ex, "log", None)
    if entry and len(entry) == 3 and entry[2]:
        return str(entry[2]).strip()
    return getattr(ex, "strerror", None) or str(ex)


def _open_failure_reason(path: Path, ex: Exception) -> str:
    detail = _ffmpeg_line(ex)
    script = refusal_reason(path)
    if script:
        return script
    with open(path, "rb") as f:
        head = f.read(4096)
    if head[4:8] in (b"ftyp", b"mdat", b"moov", b"wide", b"free") and "moov" in detail:
        return f"truncated or unfinished MP4/MOV: no index ({detail})"
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in head)
    if head and printable > 0.95 * len(head):
        return f"not a video file (looks like text; {detail})"
    return f"not a readable video ({detail})"


def _rate_str(rate) -> str:
    return f"{rate.numerator}/{rate.denominator}" if rate else ""


def _is_vfr(stream, pts: list[int]) -> bool:
    """Irregular timestamps among the first packets, or a nominal rate that
    disagrees with the average one."""
    if len(pts) >= 3:
        # Packets come in decode order: with B-frames the last few demuxed pts
        # leave holes that later packets would fill. Judge only the settled part.
        pts = sorted(pts)
        if len(pts) > 16:
            pts = pts[:-8]
        deltas = [b - a for a, b in zip(pts, pts[1:]) if b > a]
        if deltas:
            lo, hi = min(deltas), max(deltas)
            if hi - lo > max(1, 0.1 * lo):
                return True
    avg, base = stream.average_rate, stream.base_rate
    if avg and base and abs(float(avg) - float(base)) > 0.01 * float(base):
        return True
    return False


def probe(path: Path, rel: str) -> VideoInfo:
    """Probe one file. Never raises for problems of the file itself."""
    path = Path(path)
    if not path.exists():
        why = "broken link" if path.is_symlink() else "file not found"
        return VideoInfo(path=rel, status="failed", reason=why)
    st = path.stat()
    base = dict(path=rel, size=st.st_size, mtime_ns=st.st_mtime_ns)
    if st.st_size == 0:
        return VideoInfo(**base, status="failed", reason="empty file (0 bytes)")
    try:
        base["fingerprint"] = fingerprint(path, st.st_size)
    except OSError as ex:
        return VideoInfo(**base, status="failed", reason=f"cannot read: {ex.strerror or ex}")

    previous = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)  # so errors carry FFmpeg's own reason...
    try:
        with av.logging.Capture():  # ...without FFmpeg printing it a second time
            try:
                container = open_input(path)
            except (av.FFmpegError, OSError) as ex:
                return VideoInfo(**base, status="failed", reason=_open_failure_reason(path, ex))
            with container:
                return _probe_open(container, base)
    finally:
        av.logging.set_level(previous)


def _probe_open(container, base: dict) -> VideoInfo:
    fmt = container.format.name
    audio = tuple(
        AudioInfo(
            index=a.index,
            codec=a.codec_context.name,
            channels=a.codec_context.channels,
            sample_rate=a.codec_context.sample_rate or 0,
        )
        for a in container.streams.audio
    )
    videos = [
        s for s in container.streams.video if not (s.disposition & av.stream.Disposition.attached_pic)
    ]
    if not videos:
        kind = f"audio only: {', '.join(a.codec for a in audio)}" if audio else "no streams"
        return VideoInfo(**base, container=fmt, audio=audio, status="failed", reason=f"no video stream ({kind})")
    stream = videos[0]
    ctx = stream.codec_context
    tb = time_base(stream, Fraction(1, 1))
    if stream.duration:
        duration = float(stream.duration * tb)
    elif container.duration:
        duration = container.duration / av.time_base
    else:
        duration = 0.0
    start = start_seconds(stream)
    rate = frame_rate(stream, default=None)
    info = dict(
        base,
        container=fmt,
        stream_index=stream.index,
        codec=ctx.name,
        width=ctx.width,
        height=ctx.height,
        pix_fmt=ctx.pix_fmt or "",
        fps=float(rate) if rate else 0.0,
        rate=_rate_str(rate),
        time_base=_rate_str(tb),
        start_time=start,
        duration=duration,
        frames=stream.frames or 0,
        audio=audio,
    )

    # Demux the first packets (cheap) for the frame-rate check, and decode
    # until the first picture: it proves the file decodes and gives rotation.
    stream.thread_type = "SLICE"
    pts: list[int] = []
    first = None
    errors = 0
    last_error = ""
    try:
        for n, packet in enumerate(container.demux(stream)):
            if packet.pts is not None and len(pts) < _VFR_PACKETS:
                pts.append(packet.pts)
            if first is None:
                try:
                    for frame in packet.decode():
                        first = frame
                        break
                except (av.FFmpegError, ValueError) as ex:
                    errors += 1
                    last_error = _ffmpeg_line(ex)
            if first is not None and len(pts) >= _VFR_PACKETS:
                break
            if first is None and n >= _FIRST_FRAME_PACKETS:
                break
        if first is None:  # flush: very short files hold their only frame in the decoder
            try:
                for frame in stream.codec_context.decode(None):
                    first = frame
                    break
            except (av.FFmpegError, ValueError) as ex:
                last_error = _ffmpeg_line(ex)
    except (av.FFmpegError, OSError) as ex:
        last_error = _ffmpeg_line(ex)
    if first is None:
        why = last_error or "no packets"
        return VideoInfo(**info, status="failed", reason=f"no decodable video frame ({why})")
    sar = ctx.sample_aspect_ratio or stream.sample_aspect_ratio
    return VideoInfo(
        **dict(info, width=first.width, height=first.height, pix_fmt=first.format.name),
        rotation=int(first.rotation or 0) % 360,
        sar=f"{sar.numerator}:{sar.denominator}" if sar else "1:1",
        vfr=_is_vfr(stream, pts),
    )


def scan(
    input_dir: Path,
    *,
    extensions=DEFAULT_EXTENSIONS,
    filter_from: str | None = None,
    skip_pattern: str | None = None,
    progress=None,
) -> ScanResult:
    """Walk and probe. ``progress(rel, info)`` is called after each file."""
    input_dir = Path(input_dir).expanduser().resolve()
    exts = normalise_extensions(extensions)
    selected, skipped = walk(
        input_dir, extensions=exts, filter_from=filter_from, skip_pattern=skip_pattern
    )
    videos = []
    first: dict[tuple[int, str], str] = {}  # (size, fingerprint) -> first path with that content
    for rel in selected:
        info = probe(input_dir / rel, rel)
        if info.status == "failed":
            log.warning("%s: %s", rel, info.reason)
        elif info.fingerprint:
            same = first.setdefault((info.size, info.fingerprint), rel)
            if same != rel:
                info = msgspec.structs.replace(info, status="duplicate", duplicate_of=same,
                                               reason=f"duplicate of {same} (same content): not analysed again")
                log.warning("%s: %s", rel, info.reason)
        videos.append(info)
        if progress:
            progress(rel, info)
    return ScanResult(
        input_dir=str(input_dir),
        created=time.time(),
        extensions=exts,
        filter_from=filter_from,
        skip_pattern=skip_pattern,
        videos=videos,
        skipped=skipped,
    )


def save_scan(work: WorkDir, result: ScanResult) -> Path:
    work.ensure()
    write_json(work.scan_json, result)
    return work.scan_json


def load_scan(work: WorkDir) -> ScanResult:
    if not work.scan_json.exists():
        raise ConfigError(f"no scan in {work.root} (run `facecut scan INPUT_DIR -w {work.root}` first)")
    return read_json(work.scan_json, ScanResult)
