"""``facecut bench`` / ``python -m facecut.bench``: measure, compare, tune.

Every figure is measured in this run, side by side with its baseline, and
reported as min / median / max over ``--repeats`` (medians are quoted).
See bench/README.md for what each figure means and how to reproduce it.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import click
import msgspec
from rich.console import Console
from rich.table import Table

from facecut.bench.common import SCHEMA, default_cache, figure, format_corpus, generated_corpus, machine, repeat, save_json
from facecut.cli.options import model_options
from facecut.config import FAST_DECODE, HWACCELS
from facecut.profile import infer_processes

console = Console(stderr=True)
STAGES = ("decode", "decode-options", "formats", "inference", "quality", "ring", "log", "analyze", "chain", "scale")
# Asked for only: scale renders and runs 150 files; decode-options analyses the corpus once per level.
DEFAULT_STAGES = tuple(s for s in STAGES if s not in ("scale", "decode-options"))
DECODE_FIGURES = ("decode", "shot_detection_cost", "shot_detection_cpu_cost", "decode_options",
                  "formats")  # printed when measured


def _ints(text: str) -> list[int]:
    return [int(x) for x in str(text).split(",") if x.strip()]


def _med(f: dict) -> float:
    return f["median"]


def _resolve_provider(provider: str) -> str:
    from facecut.models import resolve_provider

    return resolve_provider(provider)


def _analyze_cfg(base: dict, **over):
    from facecut.config import AnalyzeConfig

    return AnalyzeConfig(**{**base, **over})


# --------------------------------------------------------------------------- chain vs baseline


def _facecut_chain(corpus: Path, cfg, tmp: Path) -> dict:
    """scan + analyze + score + cut + report, timed per stage, on a fresh work folder."""
    from facecut.coordinator import analyze
    from facecut.workdir import WorkDir
    from facecut.scan import scan

    work = WorkDir(tempfile.mkdtemp(prefix="chain-", dir=tmp))
    out = Path(tempfile.mkdtemp(prefix="clips-", dir=tmp))
    t = {}
    s = time.perf_counter()
    work.save_scan(scan(corpus))
    t["scan_s"] = time.perf_counter() - s
    s = time.perf_counter()
    stats = analyze(work, cfg).stats
    t["analyze_s"] = time.perf_counter() - s
    cpu = {"analyze_s": 0.0}
    if stats is not None:  # CPU per process, as each reported it (all its threads)
        cpu.update(decoders_s=sum(d.cpu_s for d in stats.decoders), inference_s=sum(i.cpu_s for i in stats.infer),
                   coordinator_s=stats.coordinator_cpu_s, samples=stats.samples_written)
        cpu["analyze_s"] = cpu["decoders_s"] + cpu["inference_s"] + cpu["coordinator_s"]
    later = time.process_time()
    plan = None
    try:
        from facecut.config import ScoreConfig
        from facecut.plan import plan_from_work

        s = time.perf_counter()
        plan = plan_from_work(work, ScoreConfig())
        work.save_plan(plan)
        t["score_s"] = time.perf_counter() - s
    except ImportError as ex:
        t["score_s"] = None
        console.print(f"[yellow]score stage not available: {ex}[/]")
    if plan is not None:
        try:
            from facecut.cut import cut_plan

            s = time.perf_counter()
            cut_plan(work, out)
            t["cut_s"] = time.perf_counter() - s
        except ImportError:
            t["cut_s"] = None
        try:
            from facecut.report import write_report

            s = time.perf_counter()
            write_report(work, out)
            t["report_s"] = time.perf_counter() - s
        except ImportError:
            t["report_s"] = None
    t["total_s"] = sum(v for v in t.values() if v)
    clips = []
    if plan is not None:
        by_key = {sp.key: sp for sp in plan.sources}
        for c in plan.clips:
            clips.append((Path(plan.input_dir) / by_key[c.key].path, c.start, c.end))
    t["clips"] = len(clips)
    cpu["later_stages_s"] = time.process_time() - later  # score, cut, report: in this process
    cpu["total_s"] = cpu["analyze_s"] + cpu["later_stages_s"]
    return {"times": t, "clips": clips, "cpu": cpu}


def _baseline_chain(corpus: Path, clips: list, spec, fps: float, max_side: int, tmp: Path) -> dict:
    from facecut.bench import baseline

    paths = sorted(p for p in corpus.rglob("*") if p.suffix.lower() in (".mp4", ".mkv", ".mov"))
    work = Path(tempfile.mkdtemp(prefix="baseline-", dir=tmp))
    t = {}
    c0 = time.process_time()  # the old chain runs in this process (every thread counted)
    t["scene_pass_s"], _ = baseline.scene_pass(paths)
    c1 = time.process_time()
    r = baseline.sample_and_detect(paths, spec, fps=fps, max_side=max_side, out=work / "results.jsonl")
    c2 = time.process_time()
    t["sample_detect_s"] = r["wall_s"]
    t["detect_only_s"] = r["detect_s"]
    t["samples"] = r["samples"]
    t["cut_s"] = baseline.cut_per_clip(clips, work / "clips") if clips else 0.0
    t["thumbs_s"] = baseline.thumbnails_by_decoding(clips, work / "thumbs") if clips else 0.0
    t["total_s"] = t["scene_pass_s"] + t["sample_detect_s"] + t["cut_s"] + t["thumbs_s"]
    t["cpu_scene_pass_s"], t["cpu_sample_detect_s"] = c1 - c0, c2 - c1
    t["cpu_total_s"] = time.process_time() - c0
    return t


def _print_cpu_split(c: dict) -> None:
    """Where the CPU of each chain goes, per sample (medians): the end-to-end ratio is
    the old chain's CPU over facecut's times how many cores each keeps busy."""
    b, f = c["baseline"], c["facecut_cpu"]
    m = lambda d, k: d[k]["median"] if k in d else 0.0  # noqa: E731
    n_old, n_fc = max(1.0, m(b, "samples")), max(1.0, m(f, "samples"))
    per = lambda v, n: f"{1000 * v / n:.1f}"  # noqa: E731
    t = Table(title="CPU per sample, ms (every process and thread)", title_justify="left")
    for col in ("old chain", "ms", "facecut", "ms"):
        t.add_column(col, justify="right")
    detect = m(b, "detect_only_s")
    old_rows = [("shot pass (own decode)", m(b, "cpu_scene_pass_s")),
                ("sampling decode + writes", m(b, "cpu_sample_detect_s") - detect),
                ("detection, batch 1", detect),
                ("clips + thumbnails", m(b, "cpu_total_s") - m(b, "cpu_scene_pass_s") - m(b, "cpu_sample_detect_s"))]
    fc_rows = [("decoders (+ shots)", m(f, "decoders_s")), ("inference processes", m(f, "inference_s")),
               ("coordinator", m(f, "coordinator_s")), ("score + cut + report", m(f, "later_stages_s"))]
    for (a, av), (z, zv) in zip(old_rows, fc_rows):
        t.add_row(a, per(av, n_old), z, per(zv, n_fc))
    t.add_row("total", per(m(b, "cpu_total_s"), n_old), "total", per(m(f, "total_s"), n_fc))
    console.print(t)
    old_cores = m(b, "cpu_total_s") / max(1e-9, c["baseline_total_s"])
    fc_cores = m(f, "total_s") / max(1e-9, c["facecut_total_s"])
    cpu_ratio = (m(b, "cpu_total_s") / n_old) / max(1e-9, m(f, "total_s") / n_fc)
    console.print(f"cores kept busy: old chain {old_cores:.2f}, facecut {fc_cores:.2f}; the ratio is "
                  f"{cpu_ratio:.2f} (less CPU per sample) x {fc_cores / old_cores:.2f} (more cores busy)")


def _hwaccel_state(name: str) -> dict:
    """Whether ``--hwaccel name`` decodes here (facecut.media.hwaccel_check, strict):
    when it does not, facecut falls back to software and its rows measure that."""
    from facecut.errors import ConfigError
    from facecut.media import hwaccel_check, hwaccel_for

    try:
        _, device = hwaccel_for(name)
    except ConfigError as ex:
        raise click.UsageError(str(ex)) from ex
    reason = hwaccel_check(device) if device else "this FFmpeg build has no hardware device type facecut knows"
    state = {"asked": name, "device": device, "works": reason is None, "reason": reason}
    if reason is None:
        console.print(f"hardware decoder {device}: works")
    else:
        console.print(f"[yellow]--hwaccel {name}: no hardware decode here ({reason}); "
                      "facecut falls back to software, so those rows measure software decode[/]")
    return state


# --------------------------------------------------------------------------- sweep


def _sweep(corpus: Path, base: dict, budget: float, tmp: Path, cores: int) -> tuple[list[dict], dict]:
    """Coordinate descent over (infer_procs, decoders, batch, infer_threads) within ``budget`` seconds:
    vary one knob at a time around the best point so far."""
    from facecut.bench.stages import bench_analyze

    grid = {
        "infer_procs": [1, 2, 3, 4][: max(2, cores + 1)],
        "decoders": [1, 2, 3][: max(2, cores)],
        "batch": [1, 4, 8, 16],
        "infer_threads": [1, 2],
    }
    best = {k: base[k] for k in grid}
    best["infer_procs"] = infer_processes(_analyze_cfg(base))
    rows: list[dict] = []
    seen: dict[tuple, dict] = {}
    t0 = time.perf_counter()

    def evaluate(point: dict) -> dict | None:
        key = tuple(point[k] for k in grid)
        if key in seen:
            return seen[key]
        if time.perf_counter() - t0 > budget:
            return None
        r = bench_analyze(corpus, _analyze_cfg(base, **point), tmp)
        shutil.rmtree(r["work"], ignore_errors=True)
        row = {**point, "wall_s": r["wall_s"], "samples_per_s": r["samples_per_s"],
               "video_s_per_s": r["video_s_per_s"], "bottleneck": r.get("bottleneck", "")}
        rows.append(row)
        seen[key] = row
        console.print(f"  sweep {point} -> {row['samples_per_s']:.1f} samples/s, {row['video_s_per_s']:.1f}x")
        return row

    best_row = evaluate(best)
    for knob, values in grid.items():
        for v in values:
            cand = {**best, knob: v}
            row = evaluate(cand)
            if row is not None and best_row is not None and row["samples_per_s"] > best_row["samples_per_s"]:
                best, best_row = cand, row
    best, best_row = _sweep_decode(corpus, base, best, best_row, rows, tmp,
                                   rounds=2 if time.perf_counter() - t0 < budget else 1)
    return rows, {**best, **(best_row or {})}


# The --fast-decode levels the sweep compares with "off" (every frame decoded);
# it keeps the fastest whose cuts and clips are off's (deblock-all changes
# pictures throughout: never a candidate).
SWEEP_DECODE = ("ref-frames", "deblock-noref")


def _sweep_decode(corpus: Path, base: dict, best: dict, best_row: dict | None, rows: list, tmp: Path,
                  rounds: int = 2):
    """At the best counts: each of SWEEP_DECODE against off, back to back, on the
    sweep corpus; the fastest in video seconds per second of those whose cuts and
    clips equal off's (facecut.bench.decode_options.results) is kept, off included."""
    from facecut.bench.decode_options import analyse_levels, results

    if best_row is None:
        return best, best_row
    # levels interleaved over the rounds: single runs differ by several percent
    works, runs = analyse_levels(corpus, lambda level: _analyze_cfg(base, **best, fast_decode=level), tmp,
                                 ("off", *SWEEP_DECODE), rounds)
    for level, rs in runs.items():
        for r in rs:
            rows.append({**best, "fast_decode": level, "wall_s": r["wall_s"], "samples_per_s": r["samples_per_s"],
                         "video_s_per_s": r["video_s_per_s"], "bottleneck": r.get("bottleneck", "")})
            console.print(f"  sweep {best} fast_decode={level} -> {r['video_s_per_s']:.1f}x")
    speed = {lv: sum(r["video_s_per_s"] for r in rs) / len(rs) for lv, rs in runs.items()}
    found = results(corpus, works)
    for w in works.values():
        shutil.rmtree(w, ignore_errors=True)
    off = found["off"]
    same = [lv for lv in SWEEP_DECODE if found[lv]["clips_unchanged"]
            and (found[lv]["cuts_found"], found[lv]["cuts_extra"]) == (off["cuts_found"], off["cuts_extra"])]
    level = max(["off", *same], key=lambda lv: speed[lv])
    return {**best, "fast_decode": level}, best_row


# --------------------------------------------------------------------------- output


def _print_figures(res: dict) -> None:
    f = res["figures"]
    if "decode" in f:
        t = Table(title="decode only (real decoder path, samples converted, no ring)", title_justify="left")
        for c in ("decoders", "hwaccel", "shot detection", "frames/s", "video s/s", "samples/s", "CPU ms/frame"):
            t.add_column(c, justify="right")
        for key, v in f["decode"].items():
            cpu = f"{_med(v['cpu_ms_per_frame']):.2f}" if "cpu_ms_per_frame" in v else "-"
            t.add_row(str(v["decoders"]), v.get("hwaccel", "none"), "on" if v["detector"] != "none" else "off",
                      f"{_med(v['frames_per_s']):.0f}", f"{_med(v['video_s_per_s']):.1f}",
                      f"{_med(v['samples_per_s']):.1f}", cpu)
        console.print(t)
        if "shot_detection_cost" in f:
            line = f"shot detection inside decode adds {100 * f['shot_detection_cost']:.0f}% to decode wall time"
            if "shot_detection_cpu_cost" in f:
                line += f", {100 * f['shot_detection_cpu_cost']:.0f}% to its CPU time"
            console.print(line)
    if "decode_options" in f:
        t = Table(title="--fast-decode levels (decode: 1 process, shot detection on; results against 'off')",
                  title_justify="left")
        for c in ("level", "frames decoded", "decode video s/s", "decode x", "analyze x", "cuts found/missed/extra", "faces",
                  "box IoU mean", "IoU < 0.9", "sample shift frames (mean/max)", "clips (same as off)"):
            t.add_column(c, justify="right")
        for level, v in f["decode_options"].items():
            iou = v["box_iou_mean"]
            t.add_row(level, str(v["frames_decoded"]), f"{_med(v['decode_video_s_per_s']):.1f}",
                      f"{v['decode_speedup']:.2f}",
                      f"{v['analyze_speedup']:.2f}", f"{v['cuts_found']}/{v['cuts_missed']}/{v['cuts_extra']}",
                      str(v["faces"]), "-" if iou is None else f"{iou:.4f}", str(v["box_iou_below_0_9"]),
                      "-" if v.get("sample_shift_mean_frames") is None
                      else f"{v['sample_shift_mean_frames']:.2f}/{v['sample_shift_max_frames']:.0f}",
                      f"{v['clips']} ({v['clips_same_as_off']})")
        console.print(t)
    if "formats" in f:
        t = Table(title="decode per file class (format matrix, 1 decoder, shot detection on)", title_justify="left")
        for c, j in (("file", "left"), ("codec", "left"), ("container", "left"), ("size", "right"),
                     ("frames/s", "right"), ("video s/s", "right"), ("CPU ms/frame", "right")):
            t.add_column(c, justify=j)
        for name, v in f["formats"].items():
            t.add_row(name, v["codec"], v["container"], v["size"], f"{_med(v['frames_per_s']):.0f}",
                      f"{_med(v['video_s_per_s']):.1f}", f"{_med(v['cpu_ms_per_frame']):.2f}")
        console.print(t)
    if "inference" in f:
        t = Table(title=f"inference only ({res['config']['model']}, frames in memory)", title_justify="left")
        for c in ("procs", "threads", "batch", "frames/s (min/median/max)"):
            t.add_column(c, justify="right")
        for v in f["inference"].values():
            fp = v["frames_per_s"]
            t.add_row(str(v["procs"]), str(v["threads"]), str(v["batch"]),
                      f"{fp['min']:.1f} / {fp['median']:.1f} / {fp['max']:.1f}")
        console.print(t)
    if "quality" in f:
        q = f["quality"]
        console.print(
            f"quality score (face sharpness in the inference process): {_med(q['sharpness_us_per_face']):.0f} µs per "
            f"face, {100 * _med(q['share_of_inference']):.1f}% of the model's time per frame "
            f"({_med(q['sharpness_ms_per_frame']):.2f} of {_med(q['model_ms_per_frame']):.1f} ms); analyze "
            f"{_med(q['analyze_on_samples_per_s']):.1f} samples/s with it, {_med(q['analyze_off_samples_per_s']):.1f} "
            f"without ({100 * _med(q['analyze_cost']):+.1f}%)")
    if "ring" in f:
        r = f["ring"]
        console.print(f"ring transport: {_med(r['us_per_frame']):.0f} µs per {r['frame_mb']:.1f} MB frame "
                      f"({_med(r['gb_per_s']):.2f} GB/s) between two processes")
    if "log" in f:
        lg = f["log"]
        console.print(f"log writes: {_med(lg['write_records_per_s']):,.0f} records/s "
                      f"({_med(lg['write_mb_per_s']):.0f} MB/s, 512-d embeddings, flush per 8); "
                      f"reads {_med(lg['read_records_per_s']):,.0f} records/s")
    if "analyze" in f:
        a = f["analyze"]
        console.print(f"analyze end to end: {_med(a['wall_s']):.1f}s, {_med(a['samples_per_s']):.1f} samples/s, "
                      f"{_med(a['video_s_per_s']):.1f}x real time ({a.get('bottleneck', '')})")
        if "pipeline_efficiency" in f:
            e = a.get("efficiency_pairs")
            spread = f" (pairs {e['min']:.2f}-{e['max']:.2f})" if e else ""
            console.print(f"pipeline efficiency (analyze / inference only, same processes): "
                          f"{f['pipeline_efficiency']:.2f}{spread}")
        if "model_fed" in a:
            console.print(f"inference processes fed (not waiting for frames): {100 * _med(a['model_fed']):.1f}% "
                          "of analyze's wall time")
    if "scale" in f:
        sc = f["scale"]
        t = Table(title=f"scale: {sc['pieces']} files of {sc['seconds_each']:g} s against the same content as one file",
                  title_justify="left")
        for col in ("input", "wall s", "realtime x", "peak RSS MiB", "clips"):
            t.add_column(col, justify="right")
        for k, v in sc["files"].items():
            t.add_row(k, f"{_med(v['wall_s']):.1f}", f"{v['realtime_x']:.1f}", f"{_med(v['peak_rss_mb']):.0f}",
                      str(sc["clips"].get(k, "")))
        console.print(t)
        line = f"[bold]many files / one file: {sc['ratio']:.2f}x the wall time[/]"
        if sc.get("batch_rates"):
            r = sc["batch_rates"]
            line += f"; realtime first third {r['first_third_x']:.1f}x, last third {r['last_third_x']:.1f}x"
        console.print(line)
    if "chain" in f:
        c = f["chain"]
        t = Table(title="facecut vs the old chain (same files, model, provider)", title_justify="left")
        for col in ("stage", "old chain s", "facecut s", "ratio"):
            t.add_column(col, justify="right")
        for stage, (b, fc) in c["stages"].items():
            ratio = f"{b / fc:.2f}x" if b and fc else "-"
            t.add_row(stage, f"{b:.1f}" if b is not None else "-", f"{fc:.1f}" if fc is not None else "-", ratio)
        console.print(t)
        console.print(f"[bold]end to end: old chain {c['baseline_total_s']:.1f}s, facecut {c['facecut_total_s']:.1f}s "
                      f"-> {c['ratio']:.2f}x faster[/] ({c['clips']} clips)")
        if "ratio_pairs" in c:
            rp = c["ratio_pairs"]
            console.print(f"ratio per repeat (facecut and old chain back to back): min {rp['min']:.2f}x, "
                          f"median {rp['median']:.2f}x, max {rp['max']:.2f}x")
        if "facecut_cpu" in c and "cpu_total_s" in c["baseline"]:
            _print_cpu_split(c)
    if "sweep" in res:
        s = res["sweep"]
        t = Table(title="sweep (analyze on the sweep corpus)", title_justify="left")
        for col in ("decoders", "infer procs", "batch", "threads", "samples/s", "video s/s", "bottleneck"):
            t.add_column(col, justify="right", no_wrap=True)
        for r in sorted(s["rows"], key=lambda r: -r["samples_per_s"]):
            t.add_row(str(r["decoders"]), str(r["infer_procs"]), str(r["batch"]), str(r["infer_threads"]),
                      f"{r['samples_per_s']:.1f}", f"{r['video_s_per_s']:.1f}",
                      (r.get("bottleneck") or "").split(" (")[0])
        console.print(t)
        b = s["best"]
        console.print(f"[bold]best: --decoders {b['decoders']} --infer-procs {b['infer_procs']} --batch {b['batch']} "
                      f"--infer-threads {b['infer_threads']}[/] ({b.get('samples_per_s', 0):.1f} samples/s)")


def compare(a_path: Path, b_path: Path) -> None:
    """Ratios of every median that both result files have (B relative to A)."""
    import json

    a, b = json.loads(Path(a_path).read_text()), json.loads(Path(b_path).read_text())
    t = Table(title=f"{b_path} vs {a_path} (ratio of medians, B / A)", title_justify="left")
    for c in ("figure", "A", "B", "B / A"):
        t.add_column(c, justify="right" if c != "figure" else "left")

    def walk(x, y, path):
        if isinstance(x, dict) and isinstance(y, dict):
            if "median" in x and "median" in y:
                ratio = y["median"] / x["median"] if x["median"] else float("nan")
                t.add_row(path, f"{x['median']:.4g}", f"{y['median']:.4g}", f"{ratio:.2f}")
                return
            for k in x:
                if k in y:
                    walk(x[k], y[k], f"{path}.{k}" if path else k)

    walk(a.get("figures", {}), b.get("figures", {}), "")
    Console().print(t)


# --------------------------------------------------------------------------- main


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.argument("input_dir", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--generate", type=click.Choice(["bench720", "bench1080", "bench360"]), default=None,
              help="Use a generated, deterministic corpus (made once, cached).")
@click.option("--minutes", type=float, default=1.0, show_default=True, help="Length of each generated video.")
@click.option("--videos", type=int, default=3, show_default=True, help="Number of generated videos.")
@click.option("--stages", default=",".join(DEFAULT_STAGES), show_default=True,
              help=f"Which figures to measure, of {', '.join(STAGES)}.")
@click.option("--scale-pieces", type=int, default=150, show_default=True,
              help="scale: this many short files against the same content joined into one.")
@click.option("--scale-seconds", type=float, default=10.0, show_default=True, help="scale: length of each short file.")
@click.option("--model", default="mtcnn", show_default=True)
@click.option("--model-dir", type=click.Path(path_type=Path), default=None)
@click.option("--provider", default="auto", show_default=True)
@click.option("--min-face", type=float, default=80.0, show_default=True)
@click.option("--fps", type=float, default=2.0, show_default=True)
@click.option("--max-side", type=int, default=1280, show_default=True)
@click.option("--decoders", type=int, default=None, help="For analyze/chain [default: profile or CPU/2].")
@click.option("--infer-procs", type=int, default=None)
@click.option("--infer-threads", type=int, default=None)
@click.option("--batch", type=int, default=None)
@click.option("--decoder-counts", default="1,2", show_default=True, help="Decoder counts for the decode figure.")
@click.option("--batches", default="1,4,8,16", show_default=True, help="Batch sizes for the inference figure.")
@click.option("--infer-frames", type=int, default=96, show_default=True, help="Frames preloaded for inference only.")
@click.option("--repeats", type=int, default=1, show_default=True)
@click.option("--warmup", type=int, default=0, show_default=True)
@click.option("--sweep", is_flag=True, help="Try decoder x inference-process x batch x thread settings.")
@click.option("--budget", type=float, default=600.0, show_default=True, help="Seconds the sweep may take.")
@click.option("--sweep-videos", type=int, default=1, show_default=True, help="Corpus videos the sweep analyses.")
@click.option("--save-profile", is_flag=True, help="Save the sweep's best setting as this machine's default.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None, help="Write all figures here.")
@click.option("--compare", "compare_files", nargs=2, type=click.Path(exists=True, path_type=Path), default=None,
              help="Print the ratios between two result files and exit.")
@click.option("--keep", is_flag=True, help="Keep the work folders (clips, logs) of the run.")
@click.option("--fast-decode", type=click.Choice(list(FAST_DECODE)), default=None,
              help="facecut's --fast-decode level in the analyze and chain stages [default: the profile's, else ref-frames].")
@click.option("--hwaccel", type=click.Choice(list(HWACCELS)), default="none", show_default=True,
              help="Hardware decoder for facecut (analyze, chain; the decode figure shows it next to software).")
@click.option("--model-opt", "model_opt", multiple=True, metavar="KEY=VALUE",
              help="A model backend option (as facecut's --model-opt), for facecut and the old chain alike.")
def main(input_dir, generate, minutes, videos, stages, scale_pieces, scale_seconds, model, model_dir, provider, min_face, fps, max_side,
         decoders, infer_procs, infer_threads, batch, decoder_counts, batches, infer_frames, repeats, warmup,
         sweep, budget, sweep_videos, save_profile, json_out, compare_files, keep, fast_decode, hwaccel, model_opt) -> None:
    """Benchmark facecut on INPUT_DIR or a generated corpus, against the old chain."""
    if compare_files:
        compare(*compare_files)
        return
    from facecut.bench import stages as st
    from facecut.procs import cpu_count
    from facecut.profile import load_profile
    from facecut.scan import scan

    if input_dir is None and generate is None:
        generate = "bench720"
    corpus = Path(input_dir) if input_dir else generated_corpus(default_cache(), generate, minutes, videos)
    wanted = set(s.strip() for s in stages.split(",") if s.strip())
    unknown = wanted - set(STAGES)
    if unknown:
        raise click.UsageError(f"unknown stages {sorted(unknown)}; choose from {', '.join(STAGES)}")
    prov = _resolve_provider(provider)
    prof = load_profile(prov)
    cores = cpu_count()
    base = {
        "fps": fps, "max_side": max_side, "model": model, "model_dir": str(model_dir) if model_dir else None,
        "provider": prov, "min_face": min_face,
        "decoders": decoders or prof.get("decoders") or max(1, cores // 2),
        "infer_procs": infer_procs if infer_procs is not None else prof.get("infer_procs", 0),
        "infer_threads": infer_threads or prof.get("infer_threads") or 1,
        "batch": batch or prof.get("batch") or 8,
        "fast_decode": fast_decode or prof.get("fast_decode") or _analyze_cfg({}).fast_decode,
        "model_options": model_options(model_opt),
        "hwaccel": hwaccel,
    }
    from facecut.infer import model_spec
    from facecut.models.base import check_options

    check_options(model, base["model_options"])
    from facecut.coordinator import Coordinator  # noqa: F401  (import errors surface before timing)

    videos_info = [v for v in scan(corpus).videos if v.status == "ok"]
    if not videos_info:
        raise click.UsageError(f"no readable video in {corpus}")
    total_s = sum(v.duration for v in videos_info)
    console.print(f"corpus {corpus}: {len(videos_info)} videos, {total_s / 60:.1f} min; provider {prov}; "
                  f"model {model}; {cores} cores; repeats {repeats}")
    tmp = Path(tempfile.mkdtemp(prefix="facecut-bench-"))
    spec = model_spec(_analyze_cfg(base))
    res: dict = {
        "schema": SCHEMA, "created": time.time(), "machine": machine(), "provider": prov,
        "corpus": {"path": str(corpus), "videos": [{"path": v.path, "duration": v.duration, "width": v.width,
                                                    "height": v.height, "fps": v.fps} for v in videos_info],
                   "total_seconds": total_s},
        "config": base, "repeats": repeats, "warmup": warmup, "figures": {},
    }
    if hwaccel != "none":
        res["hwaccel"] = _hwaccel_state(hwaccel)
    F = res["figures"]
    try:
        if "decode" in wanted:
            F["decode"] = {}
            # Software decode, and with --hwaccel the hardware decoder side by side in the same run.
            for hw in dict.fromkeys(("none", base["hwaccel"])):
                for n in _ints(decoder_counts):
                    for det in ("adaptive", "none"):
                        runs = repeat(lambda: st.bench_decode(videos_info, corpus, decoders=n, fps=fps, max_side=max_side,
                                                              detector=det, hwaccel=hw), repeats, warmup)
                        key = f"decoders={n},detector={det}" + (f",hwaccel={hw}" if hw != "none" else "")
                        F["decode"][key] = {
                            "decoders": n, "detector": det, "hwaccel": hw,
                            **{k: figure([r[k] for r in runs]) for k in
                               ("wall_s", "frames_per_s", "video_s_per_s", "samples_per_s", "cpu_ms_per_frame")},
                        }
            one_on = F["decode"].get("decoders=1,detector=adaptive")
            one_off = F["decode"].get("decoders=1,detector=none")
            if one_on and one_off:
                F["shot_detection_cost"] = _med(one_on["wall_s"]) / _med(one_off["wall_s"]) - 1.0
                # In CPU time: with frame threading the decode runs on several cores and the
                # detector on one, so the wall-time share overstates what detection costs.
                F["shot_detection_cpu_cost"] = (_med(one_on["cpu_ms_per_frame"])
                                                / _med(one_off["cpu_ms_per_frame"]) - 1.0)
            _print_figures({"figures": {k: F[k] for k in DECODE_FIGURES if k in F}, "config": base})
        if "decode-options" in wanted:
            from facecut.bench import decode_options

            F["decode_options"] = decode_options.run(
                corpus, videos_info, lambda level: _analyze_cfg(base, fast_decode=level), tmp,
                fps=fps, max_side=max_side, repeats=repeats)
            _print_figures({"figures": {"decode_options": F["decode_options"]}, "config": base})
        if "formats" in wanted:
            # Decode speed per file class, so a slow class is visible (same decoder path).
            fdir = format_corpus(default_cache())
            F["formats"] = {}
            for v in (v for v in scan(fdir).videos if v.status == "ok"):
                runs = repeat(lambda v=v: st.bench_decode([v], fdir, decoders=1, fps=fps, max_side=max_side,
                                                          detector="adaptive"), repeats, warmup)
                w, h = v.display_size
                F["formats"][v.path] = {
                    "codec": v.codec, "container": v.container.split(",")[0], "size": f"{w}x{h}",
                    **{k: figure([r[k] for r in runs]) for k in ("frames_per_s", "video_s_per_s", "cpu_ms_per_frame")},
                }
            _print_figures({"figures": {"formats": F["formats"]}, "config": base})
        frames = None
        if "inference" in wanted or "analyze" in wanted or "quality" in wanted:
            frames = st.preload_frames(videos_info, corpus, fps=fps, max_side=max_side, limit=infer_frames)
        if "inference" in wanted:
            F["inference"] = {}
            procs_default = infer_processes(_analyze_cfg(base))
            points = [(procs_default, base["infer_threads"], b) for b in _ints(batches)]
            points += [(1, cores, base["batch"])] if cores > 1 else []
            if procs_default != cores:
                points += [(cores, 1, base["batch"])]
            for procs, threads, b in dict.fromkeys(points):
                opts = msgspec.structs.replace(spec, threads=threads, batch=b)
                runs = repeat(lambda: st.bench_inference(frames, spec=opts, batch=b, procs=procs),
                              repeats, warmup)
                F["inference"][f"procs={procs},threads={threads},batch={b}"] = {
                    "procs": procs, "threads": threads, "batch": b,
                    "frames_per_s": figure([r["frames_per_s"] for r in runs]),
                }
            _print_figures({"figures": {"inference": F["inference"]}, "config": base})
        if "quality" in wanted:
            # What the quality score's sharpness costs: on frames in memory against the
            # model (one process), and analyze end to end with it on and off, interleaved.
            opts = msgspec.structs.replace(spec, batch=1)
            cost = repeat(lambda: st.bench_sharpness_cost(frames, spec=opts), repeats, warmup)
            pairs = repeat(lambda: (st.bench_analyze(corpus, _analyze_cfg(base, sharpness=True), tmp),
                                    st.bench_analyze(corpus, _analyze_cfg(base, sharpness=False), tmp)),
                           repeats, warmup)
            F["quality"] = {
                **{k: figure([r[k] for r in cost]) for k in
                   ("model_ms_per_frame", "sharpness_ms_per_frame", "sharpness_us_per_face", "share_of_inference")},
                "analyze_on_samples_per_s": figure([a["samples_per_s"] for a, _ in pairs]),
                "analyze_off_samples_per_s": figure([b["samples_per_s"] for _, b in pairs]),
                # > 0: analysis with the measurement is that much slower (pairs back to back)
                "analyze_cost": figure([b["samples_per_s"] / a["samples_per_s"] - 1.0 for a, b in pairs]),
            }
            _print_figures({"figures": {"quality": F["quality"]}, "config": base})
        if "ring" in wanted:
            runs = repeat(lambda: st.bench_ring(), repeats, warmup)
            F["ring"] = {k: figure([r[k] for r in runs]) for k in ("frames_per_s", "us_per_frame", "gb_per_s")}
            F["ring"]["frame_mb"] = runs[0]["frame_mb"]
        if "log" in wanted:
            runs = repeat(lambda: st.bench_log_write(), repeats, warmup)
            F["log"] = {k: figure([r[k] for r in runs]) for k in
                        ("write_records_per_s", "write_mb_per_s", "read_records_per_s")}
        if "analyze" in wanted:
            cfg = _analyze_cfg(base)
            procs = infer_processes(cfg)
            opts = msgspec.structs.replace(spec, threads=cfg.infer_threads, batch=cfg.batch)

            def paired() -> tuple[dict, dict]:
                # analyze, then at once the same inference configuration alone on frames in
                # memory: pairs taken back to back, so slow drifts of a shared machine
                # cancel out of each pair's ratio.
                a = st.bench_analyze(corpus, cfg, tmp)
                return a, st.bench_inference(frames, spec=opts, batch=cfg.batch, procs=procs)

            pairs = repeat(paired, repeats, warmup)
            runs = [a for a, _ in pairs]
            F["analyze"] = {k: figure([r[k] for r in runs]) for k in ("wall_s", "samples_per_s", "video_s_per_s")}
            F["analyze"]["bottleneck"] = runs[-1].get("bottleneck", "")
            F["analyze"]["decoder_blocked_s"] = figure([r.get("decoder_blocked_s", 0.0) for r in runs])
            F["analyze"]["infer_starved_s"] = figure([r.get("infer_starved_s", 0.0) for r in runs])
            F["analyze"]["inference_only_same_procs"] = figure([i["frames_per_s"] for _, i in pairs])
            F["analyze"]["efficiency_pairs"] = figure(
                [a["samples_per_s"] / i["frames_per_s"] for a, i in pairs])
            # The share of the inference processes' time not spent waiting for frames.
            F["analyze"]["model_fed"] = figure(
                [1.0 - a.get("infer_starved_s", 0.0) / (procs * a["wall_s"]) for a in runs])
            F["pipeline_efficiency"] = F["analyze"]["efficiency_pairs"]["median"]
        if "chain" in wanted:
            cfg = _analyze_cfg(base)
            fc_runs, bl_runs, fc_cpu = [], [], []
            clips: list = []
            for i in range(warmup + repeats):
                fc = _facecut_chain(corpus, cfg, tmp)
                clips = fc["clips"]
                bl = _baseline_chain(corpus, clips, msgspec.structs.replace(spec, batch=1), fps, max_side, tmp)
                if i >= warmup:
                    fc_runs.append(fc["times"])
                    fc_cpu.append(fc["cpu"])
                    bl_runs.append(bl)
            med = lambda rows, k: figure([r[k] for r in rows])["median"] if all(r.get(k) is not None for r in rows) else None  # noqa: E731
            stages = {
                "shots + sampling + detection": (
                    med(bl_runs, "scene_pass_s") + med(bl_runs, "sample_detect_s"), med(fc_runs, "analyze_s")),
                "clips": (med(bl_runs, "cut_s"), med(fc_runs, "cut_s")),
                "report thumbnails": (med(bl_runs, "thumbs_s"), med(fc_runs, "report_s")),
            }
            b_total, f_total = med(bl_runs, "total_s"), med(fc_runs, "total_s")
            # Each repeat runs facecut and the old chain back to back: the ratio per pair.
            pair_ratios = figure([b["total_s"] / f["total_s"] for b, f in zip(bl_runs, fc_runs)])
            F["chain"] = {
                "baseline": {k: figure([r[k] for r in bl_runs]) for k in bl_runs[0]},
                "facecut": {k: figure([r[k] for r in fc_runs]) for k in fc_runs[0] if fc_runs[0][k] is not None},
                "stages": stages, "baseline_total_s": b_total, "facecut_total_s": f_total,
                "ratio": b_total / f_total, "ratio_pairs": pair_ratios, "clips": len(clips),
                "facecut_cpu": {k: figure([r[k] for r in fc_cpu]) for k in fc_cpu[0]},
            }
        if "scale" in wanted:
            from facecut.bench.scale import bench_scale

            args = ["--provider", prov, "--model", model, "--min-face", str(min_face)]
            for flag, value in (("--decoders", decoders), ("--infer-procs", infer_procs), ("--batch", batch)):
                if value is not None:
                    args += [flag, str(value)]
            F["scale"] = bench_scale(default_cache(), pieces=scale_pieces, seconds=scale_seconds, run_args=args,
                                     repeats=repeats)
        if sweep:
            sweep_corpus = corpus
            if sweep_videos < len(videos_info):
                sweep_corpus = tmp / "sweep-corpus"
                sweep_corpus.mkdir()
                for v in videos_info[:sweep_videos]:
                    dst = sweep_corpus / v.path
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(corpus / v.path, dst)
            rows, best = _sweep(sweep_corpus, base, budget, tmp, cores)
            res["sweep"] = {"rows": rows, "best": best, "budget_s": budget}
            if save_profile:
                from facecut.profile import save_profile as save

                path = save(prov, best, {"samples_per_s": best.get("samples_per_s"), "corpus": str(corpus),
                                         "date": time.strftime("%Y-%m-%d")})
                res["sweep"]["profile"] = str(path)
                console.print(f"saved profile {path}")
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    _print_figures({k: v for k, v in res.items() if k in ("figures", "config", "sweep")}
                   | {"figures": {k: v for k, v in F.items() if k not in (*DECODE_FIGURES, "inference")}})
    if json_out:
        save_json(json_out, res)
        console.print(f"wrote {json_out}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
