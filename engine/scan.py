"""Stage 1, scan: walk an input folder and probe every video with PyAV.

A broken input never stops the scan: it becomes a ``VideoInfo`` with
``status="failed"`` and a one-line reason a person can act on.
"""

from __future__ import annotations

import logging
import threading
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path, PurePosixPath

import av
import av.logging
import msgspec

from facecut.errors import ConfigError
from facecut.fsio import MARKERS, fingerprint, text_name
from facecut.media import ffmpeg_reason, open_input, refusal_reason
from facecut.records import AudioInfo, ScanResult, VideoInfo, raw_name
from facecut.timeline import frame_rate, start_seconds, time_base

log = logging.getLogger(__name__)

DEFAULT_EXTENSIONS = (
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".wmv", ".flv",
    ".ts", ".mts", ".m2ts", ".mpg", ".mpeg", ".3gp",
)  # fmt: skip

# How many video packets the probe reads to judge the frame rate (cheap: demux only).
_VFR_PACKETS = 120
# Files probed at once (threads: probing waits on the disk as much as on the CPU).
PROBE_THREADS = min(8, 2 * (os.cpu_count() or 1))
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
    exclude=(),
) -> tuple[list[str], list[str]]:
    """Video files under ``input_dir`` (recursive), as sorted relative POSIX paths
    (names as the OS gives them: possibly with surrogate escapes).

    ``filter_from``: start at this file in sorted order (matched against the
    relative path or the bare file name), like resuming a hand-made batch.
    ``skip_pattern``: a regular expression searched in the relative path.
    ``exclude``: folders not to walk into (the output and work folders); folders
    holding a facecut marker (``fsio.MARKERS``) are never walked into either.
    Returns ``(selected, skipped)``.
    """
    found, _ = _find(input_dir, extensions, exclude)
    return _select(input_dir, found, filter_from, skip_pattern)


def _find(input_dir: Path, extensions, exclude) -> tuple[list[str], dict[str, int]]:
    """(sorted relative paths of the files with a video extension, count of the
    other files by extension: "" for none)."""
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise ConfigError(f"input folder not found or not a folder: {input_dir}")
    exts = set(normalise_extensions(extensions))
    skip = {Path(p).expanduser().resolve() for p in exclude}
    found: list[str] = []
    ignored: dict[str, int] = {}
    # Linked folders are followed; each real folder is walked once (a link loop,
    # or two links to one folder, cannot repeat or hang the walk).
    seen = {input_dir.resolve()}
    for top, dirs, files in os.walk(input_dir, followlinks=True):
        here = Path(top)
        keep = []
        for d in sorted(dirs, key=lambda d: ((here / d).is_symlink(), d)):  # real folders before links to them
            real = (here / d).resolve()
            if real in skip or real in seen or any((here / d / m).exists() for m in MARKERS):
                continue
            seen.add(real)
            keep.append(d)
        dirs[:] = keep
        rel = here.relative_to(input_dir).parts
        for name in files:
            ext = PurePosixPath(name).suffix.lower()
            if ext in exts:
                found.append("/".join((*rel, name)))
            else:
                ext = text_name(ext)
                ignored[ext] = ignored.get(ext, 0) + 1
    return sorted(found), ignored


def _select(input_dir: Path, found: list[str], filter_from: str | None,
            skip_pattern: str | None) -> tuple[list[str], list[str]]:
    try:
        pattern = re.compile(skip_pattern) if skip_pattern else None
    except re.error as ex:
        raise ConfigError(f"--skip-pattern is not a valid regular expression: {ex}") from ex
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


def _identities(rels: list[str]) -> dict[str, tuple[str, str]]:
    """Relative path as the OS gave it -> (``VideoInfo.path``, ``raw_path``).

    A name that is not valid text is shown with U+FFFD; two such names that
    read the same (or one that reads like a real name) get " (2)", " (3)"...
    before the extension, so paths and video keys stay unique."""
    out = {rel: (rel, "") for rel in rels if not raw_name(rel)}
    taken = set(out)
    for rel in rels:
        raw = raw_name(rel)
        if not raw:
            continue
        text = candidate = text_name(rel)
        n = 1
        while candidate in taken:
            n += 1
            p = PurePosixPath(text)
            candidate = str(p.with_name(f"{p.stem} ({n}){p.suffix}"))
        taken.add(candidate)
        out[rel] = (candidate, raw)
    return out


_MP4_BOXES = (b"ftyp", b"mdat", b"moov", b"wide", b"free", b"skip")


def _has_top_box(path: Path, kind: bytes, limit: int = 4096) -> bool:
    """Whether the file's top-level ISO-BMFF boxes include `kind`. Read from the
    boxes themselves, not from FFmpeg's log line: probes run in threads and the
    log line an exception carries can belong to another thread's file."""
    size = path.stat().st_size
    pos = 0
    with open(path, "rb") as f:
        for _ in range(limit):
            f.seek(pos)
            hdr = f.read(16)
            if len(hdr) < 8:
                return False
            n, box = int.from_bytes(hdr[:4], "big"), hdr[4:8]
            if box == kind:
                return True
            if n == 1 and len(hdr) == 16:
                n = int.from_bytes(hdr[8:16], "big")
            elif n == 0:
                return False  # the last box runs to the end of the file
            if n < 8 or pos + n > size:
                return False  # cut off inside this box
            pos += n
    return False


def _open_failure_reason(path: Path, ex: Exception) -> str:
    detail = ffmpeg_reason(ex)
    script = refusal_reason(path)
    if script:
        return script
    with open(path, "rb") as f:
        head = f.read(4096)
    if head[4:8] in _MP4_BOXES and not _has_top_box(path, b"moov"):
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

    with _ffmpeg_errors_kept():
        with av.logging.Capture():  # ...without FFmpeg printing it a second time (this thread's lines)
            try:
                container = open_input(path)
            except (av.FFmpegError, OSError) as ex:
                return VideoInfo(**base, status="failed", reason=_open_failure_reason(path, ex))
            with container:
                try:
                    return _probe_open(container, base)
                except Exception as ex:  # noqa: BLE001 - a file PyAV cannot describe fails alone; the scan goes on
                    log.debug("probing %s", path, exc_info=True)
                    return VideoInfo(**base, status="failed", reason=f"cannot probe: {type(ex).__name__}: {ex}")


_level_lock = threading.Lock()
_level_users = 0
_level_before = None


@contextmanager
def _ffmpeg_errors_kept():
    """FFmpeg's log level at ERROR while any probe runs (so errors carry FFmpeg's
    own reason), the level before restored when the last one ends: probes run
    in several threads and the level is process-wide."""
    global _level_users, _level_before
    with _level_lock:
        if _level_users == 0:
            _level_before = av.logging.get_level()
            av.logging.set_level(av.logging.ERROR)
        _level_users += 1
    try:
        yield
    finally:
        with _level_lock:
            _level_users -= 1
            if _level_users == 0:
                av.logging.set_level(_level_before)


def _probe_open(container, base: dict) -> VideoInfo:
    fmt = container.format.name
    audio = tuple(
        AudioInfo(  # no codec context: a codec this FFmpeg does not know
            index=a.index,
            codec=a.codec_context.name if a.codec_context is not None else "unknown",
            channels=a.codec_context.channels if a.codec_context is not None else 0,
            sample_rate=(a.codec_context.sample_rate or 0) if a.codec_context is not None else 0,
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
    if ctx is None:
        return VideoInfo(**base, container=fmt, audio=audio, status="failed",
                         reason="no decoder for its video codec in PyAV's FFmpeg (unknown or not built in)")
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
                    last_error = ffmpeg_reason(ex)
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
                last_error = ffmpeg_reason(ex)
    except (av.FFmpegError, OSError) as ex:
        last_error = ffmpeg_reason(ex)
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
    exclude=(),
    progress=None,
) -> ScanResult:
    """Walk and probe. ``progress(done, total)`` is called after each file.
    ``exclude``: folders not to walk into (see ``walk``)."""
    input_dir = Path(input_dir).expanduser().resolve()
    if raw_name(str(input_dir)):
        raise ConfigError(f"the input folder's path is not valid text ({text_name(str(input_dir))}): "
                          "rename that folder (the files in it may have any name)")
    exts = normalise_extensions(extensions)
    found, ignored = _find(input_dir, exts, exclude)
    selected, skipped = _select(input_dir, found, filter_from, skip_pattern)
    names = _identities(selected)
    videos = []
    first: dict[tuple[int, str], str] = {}  # (size, fingerprint) -> first path with that content
    # Probing waits on the disk (a share, a USB drive) as much as on the CPU:
    # several at once, results taken in sorted order (duplicates: the first wins).
    with ThreadPoolExecutor(PROBE_THREADS) as pool:
        probed = pool.map(lambda real: probe(input_dir / real, names[real][0]), selected)
        for real, info in zip(selected, probed):
            rel, raw = names[real]
            videos.append(_settle(info, rel, raw, first))
            if progress:
                progress(len(videos), len(selected))
    return ScanResult(
        input_dir=str(input_dir),
        created=time.time(),
        extensions=exts,
        filter_from=filter_from,
        skip_pattern=skip_pattern,
        videos=videos,
        skipped=[text_name(rel) for rel in skipped],
        ignored=ignored,
    )


def _settle(info: VideoInfo, rel: str, raw: str, first: dict) -> VideoInfo:
    """A probed file with its real name kept, failures logged, duplicates marked."""
    if raw:
        info = msgspec.structs.replace(info, raw_path=raw)
    if info.status == "failed":
        log.warning("%s: %s", rel, info.reason)
    elif info.fingerprint:
        same = first.setdefault((info.size, info.fingerprint), rel)
        if same != rel:
            info = msgspec.structs.replace(info, status="duplicate", duplicate_of=same,
                                           reason=f"duplicate of {same} (same content): not analysed again")
            log.warning("%s: %s", rel, info.reason)
    return info
