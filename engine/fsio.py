"""Files: atomic writes, safe names, stable keys and ids (the work folder's
layout and loaders: facecut.workdir).

Every output is written to a temporary name in the same folder and renamed
into place (``os.replace``), retried on Windows where a player, indexer or
antivirus can hold the target for a moment.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import uuid
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Iterator

import msgspec

from facecut.errors import ConfigError

MIB = 1 << 20
_CLIP_NS = uuid.UUID("6f1c1a52-9a49-4b0e-9c31-5f0e7c1d2b8a")  # facecut clip-id namespace


def replace_with_retry(src: Path, dst: Path, *, attempts: int = 20, delay: float = 0.05) -> None:
    """``os.replace`` that retries briefly on PermissionError (Windows sharing violations)."""
    for i in range(attempts):
        try:
            os.replace(src, dst)
            return
        except PermissionError:
            if i == attempts - 1:
                raise
            time.sleep(delay * (1 + i))


def temp_name(path: Path) -> Path:
    """A sibling temporary name: same folder (same filesystem), unique per process."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.tmp$")  # what temp_name makes


def remove_temp_files(folder: Path, *, recursive: bool = False, alive=None, pattern=TEMP_NAME) -> list[Path]:
    """Remove the temporary files (``temp_name``; ``pattern``, with a ``pid``
    group, narrows them) that killed writers left in ``folder``: all of them, or
    with ``alive(pid)``, those whose writer is gone. A file still open by a live
    writer on Windows stays."""
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for p in folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp"):
        m = pattern.match(p.name)
        if m is None or not p.is_file() or (alive is not None and alive(int(m["pid"]))):
            continue
        try:
            p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write; rename it to ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        yield tmp
        replace_with_retry(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj) -> None:
    """msgspec JSON, indented for people, written atomically."""
    atomic_write_bytes(path, msgspec.json.format(msgspec.json.encode(obj), indent=1))


def read_json(path: Path, type_=None):
    data = Path(path).read_bytes()
    return msgspec.json.decode(data, type=type_) if type_ is not None else msgspec.json.decode(data)


def fingerprint(path: Path, size: int | None = None) -> str:
    """Content fingerprint: size + BLAKE2b of the first and last MiB.

    Deliberately without mtime: a copied file (another disk, a cluster share)
    keeps its fingerprint, so resume and clip ids survive the move. The scan
    records mtime separately for a cheap "did it change" check.
    """
    path = Path(path)
    if size is None:
        size = path.stat().st_size
    h = hashlib.blake2b(digest_size=12)
    h.update(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(MIB))
        if size > MIB:
            f.seek(max(MIB, size - MIB))
            h.update(f.read(MIB))
    return f"{size:x}-{h.hexdigest()}"


# --------------------------------------------------------------------------- names
#
# Input file names are user data. They become folder names (clips, work files)
# only through ``safe_name``, and reach a terminal or a log only through
# ``display_name``.

_SURROGATES = re.compile(r"[\ud800-\udfff]")  # undecodable bytes (surrogateescape), lone UTF-16 halves
# Windows forbids these in names; control characters are refused or mangled by
# filesystems and terminals alike (C0, DEL, C1).
_NOT_IN_NAMES = re.compile(r'[<>:"/\\|?*\x00-\x1f\x7f-\x9f]')
# What a terminal or log line must not receive from a name: control characters,
# Unicode line separators and bidirectional overrides (text that reads backwards).
_NOT_SHOWN = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{dev}{n}" for dev in ("COM", "LPT") for n in [*"123456789", "\u00b9", "\u00b2", "\u00b3"]]
)  # Windows device names: reserved with any extension, in any case
_MAX_NAME_BYTES = 200  # UTF-8 bytes of one name (255 is the usual limit; room for temp-name affixes)


def text_name(name: str) -> str:
    """``name`` as valid Unicode text: undecodable parts become U+FFFD."""
    return _SURROGATES.sub("\ufffd", name)


def display_name(text: str) -> str:
    """A name (or a line holding one) as it may be shown in a terminal or a log
    line: valid text, one line, no control characters (each becomes U+FFFD).
    Markup is not escaped here: hand the result to rich as ``Text``."""
    return _NOT_SHOWN.sub("\ufffd", text_name(text))


def safe_name(text: str, max_len: int = 80) -> str:
    """The one rule for turning user-derived text into a single file or folder
    name that is valid and harmless on Windows, macOS and Linux.

    Characters Windows forbids (``<>:"/\\|?*``) and control characters become
    ``_``; leading and trailing dots and spaces go (no ``.``/``..``, no hidden
    name, nothing Windows would strip); a leading ``-`` becomes ``_`` (never read
    as an option); a Windows device name (CON, PRN, AUX, NUL, COM1-9, LPT1-9,
    also with an extension) gets a ``_`` in front; at most ``max_len``
    characters and 200 UTF-8 bytes. Never empty: ``_`` is left when nothing is.
    """
    name = _NOT_IN_NAMES.sub("_", text_name(text))
    name = name[:max_len]
    while len(name.encode("utf-8")) > _MAX_NAME_BYTES:
        name = name[:-1]
    name = name.strip(". ")
    if name.startswith("-"):
        name = "_" + name[1:]
    if name.split(".", 1)[0].rstrip(" ").upper() in _RESERVED:
        name = "_" + name[: max_len - 1].rstrip(". ")
    return name or "_"


def _path_digest(rel_path: str) -> str:
    return hashlib.blake2b(rel_path.encode("utf-8", "surrogatepass"), digest_size=4).hexdigest()


_SLUG = re.compile(r"[^A-Za-z0-9._-]+")


def video_key(rel_path: str) -> str:
    """Stable, filesystem-safe key of an input (relative POSIX path): readable stem
    plus a short hash of the whole relative path, so ``a/x.mp4`` and ``b/x.mp4`` differ."""
    stem = _SLUG.sub("_", PurePosixPath(rel_path).stem).strip("._")[:40] or "video"
    return safe_name(f"{stem}-{_path_digest(rel_path)}")


def output_folder(rel_path: str) -> str:
    """Name of the folder (directly in OUT) that holds a source's clips: its
    stem, made safe, plus a short hash of the whole relative path, so
    ``a/x.mp4`` and ``b/x.mp4`` (or ``...mp4``) never share or escape a folder."""
    return f"{safe_name(PurePosixPath(rel_path).stem, 70)}-{_path_digest(rel_path)}"


class UnsafePath(ConfigError):
    """A path facecut was about to write lies outside the folder it belongs in."""


def inside(root: Path, rel: str | Path) -> Path:
    """``root / rel``, refused (UnsafePath) unless it lies strictly inside
    ``root`` once links and ``..`` are resolved. The path returned is not resolved."""
    path = Path(root) / rel
    base = Path(root).resolve()
    real = path.resolve()
    if real == base or not real.is_relative_to(base):
        raise UnsafePath(f"refusing to write {display_name(str(real))}: not inside {display_name(str(base))}")
    return path


def ignored_summary(ignored: dict[str, int]) -> str:
    """"3 other files ignored (.m4a ×1, .txt ×2)", or "" when none were."""
    n = sum(ignored.values())
    if not n:
        return ""
    parts = ", ".join(f"{display_name(ext) or '(no extension)'} \u00d7{k}" for ext, k in sorted(ignored.items()))
    return f"{n} other file{'s' if n != 1 else ''} ignored ({parts})"


def clip_id(fingerprint_: str, start: float, end: float) -> str:
    """Deterministic UUID of a clip: same source content and span -> same id."""
    return str(uuid.uuid5(_CLIP_NS, f"{fingerprint_}:{start:.3f}:{end:.3f}"))


# Marker files of the folders facecut writes: a scan never walks into a folder
# holding one (an output or work folder inside the input folder).
WORK_MARKER = ".facecut-work"
OUT_MARKER = ".facecut-output"
MARKERS = (WORK_MARKER, OUT_MARKER)


def mark_folder(folder: Path, marker: str) -> None:
    """Write ``folder/marker`` once; a temp file of it left by a killed writer goes."""
    from facecut.procs import pid_alive

    path = Path(folder) / marker
    own = re.compile(rf"^\.{re.escape(marker)}\.(?P<pid>\d+)\.tmp$")
    remove_temp_files(path.parent, alive=pid_alive, pattern=own)
    if not path.exists():
        atomic_write_text(path, "written by facecut: scans of an input folder skip this folder\n")
