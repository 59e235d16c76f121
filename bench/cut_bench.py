"""Cut benchmark: facecut's one pass per source vs one open + seek + copy per clip.

    python -m facecut.bench.cut_bench [--clips N] [--minutes M] [--input FILE] [--json OUT]

Both sides stream-copy the same N clips of the same source with PyAV in the same
run (like with like: the baseline is ``facecut.bench.baseline.copy_clip``, what the old
chain's one-ffmpeg-per-clip did, minus ffmpeg's process start). Each side runs
``--repeats`` times into a fresh folder; medians are quoted. Bytes read come from
``/proc/self/io`` (``rchar``: reads through the page cache count too), so they say
how many times the source was read, whatever the cache holds.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import av

from facecut.bench.common import default_cache, figure, generated_corpus, machine, save_json
from facecut.cut import cut_plan
from facecut.fsio import clip_id, fingerprint, video_key, write_json
from facecut.workdir import WorkDir
from facecut.records import Clip, ClipStats, Plan, SourcePlan


def read_bytes() -> int | None:
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("rchar:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def interleaved(src: Path) -> Path:
    """A copy of ``src`` with audio and video interleaved like a camera file.

    facecut.tools.make_media encodes all the video, then all the audio, so its MP4s hold
    the audio after the video; a demuxer reading both then jumps back and forth
    and reads the file ~45 times over (measured), which would drown what this
    benchmark measures. Made once next to the source."""
    dst = src.with_name(src.stem + ".interleaved.mp4")
    if dst.exists():
        return dst
    with av.open(str(src)) as inp:
        packets = []
        for s in inp.streams:
            if s.type in ("video", "audio"):
                inp.seek(0)
                packets += [p for p in inp.demux(s) if p.size and p.dts is not None]
        packets.sort(key=lambda p: float(p.dts * p.time_base))
        tmp = dst.with_suffix(".tmp")
        with av.open(str(tmp), "w", format="mp4", container_options={"movflags": "+faststart"}) as out:
            omap = {s.index: out.add_stream_from_template(s) for s in inp.streams if s.type in ("video", "audio")}
            for p in packets:
                p.stream = omap[p.stream.index]
                out.mux_one(p)
    tmp.replace(dst)
    return dst


def source_facts(path: Path) -> tuple[float, float]:
    """(t0, duration) in seconds: first frame time, as the analysis logs it."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        t0 = float(next(c.decode(v)).time)
        dur = float(v.duration * v.time_base) if v.duration else c.duration / av.time_base
    return t0, dur


def plan_clips(duration: float, n: int, seed: int = 1) -> list[tuple[float, float]]:
    """``n`` clips of 2-6 s spread over the source, mid-shot starts included
    (so stream copy needs lead-ins), a few overlapping like two faces at once."""
    rng = random.Random(seed)
    step = max(0.5, (duration - 7.0) / n)
    out = []
    for i in range(n):
        start = round(min(duration - 7.0, i * step + rng.uniform(0, step * 0.5)), 2)
        out.append((max(0.0, start), round(start + rng.uniform(2.0, 6.0), 2)))
    return out


def make_plan(path: Path, spans: list[tuple[float, float]], t0: float, duration: float) -> Plan:
    rel = path.name
    fp = fingerprint(path)
    stats = ClipStats(frames=1, face_short_median=100.0, yaw_range=(0.0, 0.0))
    clips = [Clip(id=clip_id(fp, a, b), source=rel, key=video_key(rel), start=a, end=b, shot=0, tracks=[],
                  stats=stats) for a, b in spans]
    src = SourcePlan(path=rel, key=video_key(rel), status="ok", fingerprint=fp, t0=t0, duration=duration)
    return Plan(input_dir=str(path.parent), sources=[src], clips=clips)


def run_facecut(plan: Plan, tmp: Path, accurate: bool = False) -> dict:
    shutil.rmtree(tmp, ignore_errors=True)
    work = WorkDir(tmp / "work").ensure()
    write_json(work.plan_json, plan)
    r0, t = read_bytes(), time.perf_counter()
    result = cut_plan(work, tmp / "out", accurate=accurate)
    wall = time.perf_counter() - t
    r1 = read_bytes()
    if not result.ok or result.written != len(plan.clips):
        raise SystemExit(f"facecut cut failed: {result.sources}")
    return {"wall_s": wall, "read_bytes": (r1 - r0) if r0 is not None else None, "opens": result.opens,
            "written_bytes": result.bytes}


def run_baseline(path: Path, spans: list[tuple[float, float]], t0: float, tmp: Path) -> dict:
    from facecut.bench.baseline import copy_clip

    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    r0, t = read_bytes(), time.perf_counter()
    for i, (a, b) in enumerate(spans):
        copy_clip(path, tmp / f"clip{i:04d}.mp4", a, b)
    wall = time.perf_counter() - t
    r1 = read_bytes()
    return {"wall_s": wall, "read_bytes": (r1 - r0) if r0 is not None else None, "opens": len(spans),
            "written_bytes": sum(p.stat().st_size for p in tmp.glob("*.mp4"))}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m facecut.bench.cut_bench", description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=40)
    ap.add_argument("--minutes", type=float, default=2.0, help="length of the generated source")
    ap.add_argument("--height", type=int, default=720, choices=(360, 720, 1080))
    ap.add_argument("--input", type=Path, default=None, help="cut this file instead of a generated one")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--accurate", action="store_true", help="also time one --accurate (re-encode) run")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = ap.parse_args(argv)

    if args.input:
        source = args.input.expanduser().resolve()
    else:
        corpus = generated_corpus(default_cache(), f"bench{args.height}", args.minutes, videos=1)
        source = interleaved(corpus / f"bench{args.height}p_0.mp4")
    t0, duration = source_facts(source)
    spans = plan_clips(duration, args.clips)
    plan = make_plan(source, spans, t0, duration)
    size = source.stat().st_size
    print(f"source {source} ({size / 1e6:.1f} MB, {duration:.1f} s), {len(spans)} clips, "
          f"{sum(b - a for a, b in spans):.0f} s planned", file=sys.stderr)

    runs: dict[str, list[dict]] = {"facecut": [], "baseline": []}
    with tempfile.TemporaryDirectory(prefix="facecut-cutbench-") as d:
        tmp = Path(d)
        run_facecut(plan, tmp / "warm")  # warm the page cache and imports for both sides
        for _ in range(args.repeats):  # interleaved, so drift hits both alike
            runs["facecut"].append(run_facecut(plan, tmp / "f"))
            runs["baseline"].append(run_baseline(source, spans, t0, tmp / "b"))
        accurate = run_facecut(plan, tmp / "a", accurate=True) if args.accurate else None

    res = {"machine": machine(), "source": str(source), "source_bytes": size, "duration_s": duration,
           "clips": len(spans), "repeats": args.repeats}
    for side, rs in runs.items():
        res[side] = {
            "wall_s": figure([r["wall_s"] for r in rs], "s"),
            "read_bytes": rs[-1]["read_bytes"],
            "source_reads": round(rs[-1]["read_bytes"] / size, 2) if rs[-1]["read_bytes"] else None,
            "opens": rs[-1]["opens"],
            "written_bytes": rs[-1]["written_bytes"],
        }
    res["ratio"] = res["baseline"]["wall_s"]["median"] / res["facecut"]["wall_s"]["median"]
    if accurate:
        res["accurate_wall_s"] = accurate["wall_s"]

    for side in ("baseline", "facecut"):
        r = res[side]
        reads = f", read {r['source_reads']}x the source" if r["source_reads"] is not None else ""
        print(f"{side:9s} median {r['wall_s']['median']:.3f} s (min {r['wall_s']['min']:.3f}, "
              f"max {r['wall_s']['max']:.3f}), {r['opens']} open(s){reads}")
    print(f"ratio     baseline / facecut = {res['ratio']:.2f}x")
    if accurate:
        print(f"accurate  {accurate['wall_s']:.2f} s (re-encode, once)")
    if args.json:
        save_json(args.json, res)
    return res


if __name__ == "__main__":
    main()
