"""Shared pieces of the benchmark harness: timing statistics, machine facts,
the corpus, JSON output."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import msgspec

SCHEMA = 1


def figure(values: list[float], unit: str = "") -> dict:
    """min / median / max of repeated measurements (medians are what we quote)."""
    v = sorted(values)
    return {"min": v[0], "median": statistics.median(v), "max": v[-1], "values": values, "unit": unit}


def repeat(fn: Callable[[], float | dict], repeats: int, warmup: int = 0) -> list:
    """Run ``fn`` ``warmup`` times (discarded) then ``repeats`` times; collect results."""
    for _ in range(warmup):
        fn()
    return [fn() for _ in range(repeats)]


class Timer:
    def __enter__(self) -> "Timer":
        self.t = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.s = time.perf_counter() - self.t


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    import av
    import numpy as np

    from facecut import __version__
    from facecut.procs import cpu_count

    info = {
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cores": cpu_count(),
        "python": sys.version.split()[0],
        "facecut": __version__,
        "av": av.__version__,
        "numpy": np.__version__,
    }
    try:
        import onnxruntime as ort

        from facecut.models.base import ort_flavours

        info["onnxruntime"] = ort.__version__
        info["onnxruntime_flavours"] = ort_flavours()
        info["available_providers"] = ort.get_available_providers()
    except ImportError:
        pass
    try:
        import scenedetect

        info["scenedetect"] = scenedetect.__version__
    except ImportError:
        pass
    return info


def generated_corpus(root: Path, profile: str = "bench720", minutes: float = 1.0, videos: int = 3) -> Path:
    """Deterministic corpus from facecut.tools.make_media (made once, reused: the truth
    file of the last video marks it complete)."""
    from facecut.tools.make_media import bench_batch

    height = {"bench720": 720, "bench1080": 1080, "bench360": 360}[profile]
    folder = Path(root) / f"{profile}-{minutes:g}min-{videos}v"
    last = folder / f"bench{height}p_{videos - 1}.mp4.truth.json"
    if not last.exists():
        print(f"generating the {profile} corpus in {folder} (once) ...", file=sys.stderr)
        bench_batch(folder, height=height, minutes=minutes, videos=videos)
    return folder


def made_once(folder: Path, what: str, make) -> Path:
    """``folder``, filled by ``make(folder)`` the first time (a marker file says it
    is complete, so an interrupted generation starts again)."""
    folder = Path(folder)
    marker = folder / ".complete"
    if not marker.exists():
        print(f"generating {what} in {folder} (once) ...", file=sys.stderr)
        make(folder)
        marker.write_text("ok\n")
    return folder


def format_corpus(root: Path) -> Path:
    """The format matrix (facecut.tools.make_media.formats_batch: one small file per file class)."""
    from facecut.tools.make_media import formats_batch

    return made_once(Path(root) / "formats", "the format matrix", formats_batch)


def save_json(path: Path, data: dict) -> None:
    from facecut.fsio import atomic_write_bytes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, msgspec.json.format(msgspec.json.encode(data), indent=1))


def default_cache() -> Path:
    return Path(os.environ.get("FACECUT_BENCH_CACHE", Path.home() / ".cache" / "facecut-bench"))
