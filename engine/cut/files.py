"""Clip files: where a clip goes in OUT, the tag it carries, recognising a
finished clip (``_existing``, with :class:`CutCache`), the plan fields a clip
file fills in, sidecars, and the temporary files of killed runs.

The bottom of the package: it imports nothing from ``facecut.cut``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import av

from facecut.fsio import TEMP_NAME, inside, output_folder, remove_temp_files, write_json
from facecut.media import open_input
from facecut.procs import pid_alive
from facecut.records import Clip

EPS = 1e-3  # seconds: slack when comparing planned times with frame times
TAG_PREFIX = "facecut-clip "  # container comment tag: TAG_PREFIX + JSON

_CLIP_FILE = re.compile(r"[0-9a-f-]{36}\.(?:mp4|mkv|json)")  # a clip's file name (or its sidecar's)


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


class _ClipTemp:
    """fsio's temp-name pattern (``TEMP_NAME``, what ``temp_name`` makes) narrowed
    to clip files: the ``pattern`` ``remove_temp_files`` matches names with."""

    @staticmethod
    def match(name: str) -> re.Match | None:
        m = TEMP_NAME.match(name)
        return m if m is not None and _CLIP_FILE.fullmatch(m["name"]) else None


def clean_temp_files(folder: Path) -> list[Path]:
    """Remove temporary clip files left by killed runs (dead pids) in ``folder``:
    OUT is not under WORK's lock, so a live cut's files stay."""
    return remove_temp_files(folder, alive=pid_alive, pattern=_ClipTemp)


# --------------------------------------------------------------------------- plan fields and sidecars


def _write_sidecar(out_dir: Path, clip: Clip) -> None:
    write_json(inside(out_dir, clip.file).with_suffix(".json"), clip)


def _clear_cut(clip: Clip) -> None:
    clip.file = clip.cut_start = clip.cut_end = clip.lead_in = clip.container = None
    clip.encoded = ""

