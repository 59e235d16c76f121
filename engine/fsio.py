"""Files: atomic writes, the work-folder layout, stable keys and ids.

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
from pathlib import Path
from typing import Iterator

import msgspec

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


_SLUG = re.compile(r"[^A-Za-z0-9._-]+")


def video_key(rel_path: str) -> str:
    """Stable, filesystem-safe key of an input (relative POSIX path): readable stem
    plus a short hash of the whole relative path, so ``a/x.mp4`` and ``b/x.mp4`` differ."""
    stem = _SLUG.sub("_", Path(rel_path).stem).strip("._")[:40] or "video"
    digest = hashlib.blake2b(rel_path.encode("utf-8"), digest_size=4).hexdigest()
    return f"{stem}-{digest}"


def clip_id(fingerprint_: str, start: float, end: float) -> str:
    """Deterministic UUID of a clip: same source content and span -> same id."""
    return str(uuid.uuid5(_CLIP_NS, f"{fingerprint_}:{start:.3f}:{end:.3f}"))


class WorkDir:
    """Layout of a work folder (everything facecut writes except clips)::

        WORK/scan.json             scan result (ScanResult)
        WORK/analysis/<key>.fclog  append-only analysis log per video
        WORK/analysis/<key>.done   completion marker (write-then-rename)
        WORK/thumbs/<key>/...      thumbnails captured during analysis
        WORK/plan.json             clip plan (track + score)
        WORK/report/index.html     HTML report
        WORK/logs/                 text logs of runs
        WORK/heartbeat.json        pid + time of a live run
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()

    def ensure(self) -> "WorkDir":
        for d in (self.root, self.analysis_dir, self.logs_dir):
            d.mkdir(parents=True, exist_ok=True)
        return self

    @property
    def scan_json(self) -> Path:
        return self.root / "scan.json"

    @property
    def analysis_dir(self) -> Path:
        return self.root / "analysis"

    def log_path(self, key: str) -> Path:
        return self.analysis_dir / f"{key}.fclog"

    def done_path(self, key: str) -> Path:
        return self.analysis_dir / f"{key}.done"

    @property
    def thumbs_dir(self) -> Path:
        return self.root / "thumbs"

    @property
    def plan_json(self) -> Path:
        return self.root / "plan.json"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def heartbeat(self) -> Path:
        return self.root / "heartbeat.json"
