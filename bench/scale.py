"""The scale figure: what many files cost against the same content in one file.

``facecut.tools.make_media.scale_batch`` renders N short videos (one face shot each) and
the same shots joined into one file. ``facecut run`` goes over each, in a fresh
process with a fresh work folder, back to back; the figure is the wall-time
ratio (N files / one file: 1.0 means a file costs only its content), the peak
memory of the whole process tree (sampled), the clips each made, and the
realtime factor of the first and last third of the batch (from each video's
completion marker): a batch that slows down as it grows shows there.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from facecut.bench.common import figure, made_once


def scale_corpus(root: Path, pieces: int, seconds: float) -> tuple[Path, Path]:
    """(pieces folder, joined folder), made once per (pieces, seconds)."""
    from facecut.tools.make_media import scale_batch

    folder = made_once(Path(root) / f"scale-{pieces}x{seconds:g}s", "the scale corpus",
                       lambda d: scale_batch(d, pieces=pieces, seconds=seconds))
    return folder / "pieces", folder / "joined"


def _tree_rss(proc) -> int:
    import psutil

    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_measured(args: list[str], cwd: Path | None = None) -> dict:
    """Run ``python -m facecut ARGS``; wall time and peak RSS of its process tree."""
    import psutil

    # stderr into a file, not a pipe: a big batch prints more than a pipe holds, and
    # a pipe read only at the end would block the run on its last lines.
    with tempfile.TemporaryFile(mode="w+") as errf:
        t = time.perf_counter()
        p = subprocess.Popen([sys.executable, "-m", "facecut", *args], stdout=subprocess.DEVNULL,
                             stderr=errf, text=True, cwd=cwd)
        ps = psutil.Process(p.pid)
        peak = 0
        while p.poll() is None:
            peak = max(peak, _tree_rss(ps))
            time.sleep(0.1)
        wall = time.perf_counter() - t
        if p.returncode not in (0, 3):
            errf.seek(0)
            raise RuntimeError(f"facecut run failed ({p.returncode}): {errf.read()[-2000:]}")
    return {"wall_s": wall, "peak_rss_mb": peak / 2**20}


def _batch_rates(work: Path) -> dict:
    """Realtime factor (video seconds / wall seconds) of the first and last third
    of the videos, by completion time."""
    from facecut.fsio import read_json
    from facecut.records import VideoDone

    done = sorted((read_json(p, VideoDone) for p in (work / "analysis").glob("*.done")), key=lambda d: d.finished)
    if len(done) < 6:
        return {}
    third = len(done) // 3

    def rate(part, before):
        span = part[-1].finished - before
        return sum(d.duration for d in part) / span if span > 0 else 0.0

    first, last = done[:third], done[-third:]
    return {"first_third_x": rate(first[1:], first[0].finished),
            "last_third_x": rate(last, done[-third - 1].finished)}


def bench_scale(cache: Path, *, pieces: int, seconds: float, run_args: list[str], repeats: int = 1) -> dict:
    from facecut.fsio import read_json
    from facecut.workdir import WorkDir
    from facecut.records import Plan

    pieces_dir, joined_dir = scale_corpus(cache, pieces, seconds)
    rows: dict[str, list[dict]] = {"pieces": [], "joined": []}
    clips: dict[str, int] = {}
    rates: dict = {}
    for _ in range(repeats):
        for label, folder in (("pieces", pieces_dir), ("joined", joined_dir)):  # back to back
            with tempfile.TemporaryDirectory(prefix=f"scale-{label}-") as tmp:
                work = Path(tmp) / "work"
                r = run_measured(["run", str(folder), "-o", str(Path(tmp) / "out"), "-w", str(work),
                                  "--no-dashboard", *run_args])
                rows[label].append(r)
                clips[label] = len(read_json(WorkDir(work).plan_json, Plan).clips)
                if label == "pieces":
                    rates = _batch_rates(work)
    video_s = pieces * seconds
    out = {
        "pieces": pieces, "seconds_each": seconds, "video_s": video_s, "clips": clips,
        "files": {k: {"wall_s": figure([r["wall_s"] for r in v]),
                      "peak_rss_mb": figure([r["peak_rss_mb"] for r in v]),
                      "realtime_x": video_s / figure([r["wall_s"] for r in v])["median"]} for k, v in rows.items()},
        "ratio_pairs": figure([a["wall_s"] / b["wall_s"] for a, b in zip(rows["pieces"], rows["joined"])]),
        "batch_rates": rates,
    }
    out["ratio"] = out["files"]["pieces"]["wall_s"]["median"] / out["files"]["joined"]["wall_s"]["median"]
    return out


if __name__ == "__main__":  # python -m facecut.bench.scale [PIECES] [SECONDS]
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 150
    s = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
    from facecut.bench.common import default_cache

    print(bench_scale(default_cache(), pieces=n, seconds=s, run_args=["--provider", "cpu"]))
