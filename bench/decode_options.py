"""What each ``--fast-decode`` level buys and what it changes, side by side in one run.

For every level of :data:`facecut.config.FAST_DECODE` on the same corpus:

* speed: the decoder alone (one process, the shot detector fused in, samples
  converted as for the ring: ``facecut.bench.stages.bench_decode``), repeated, levels
  interleaved so drift in the host's speed hits them alike; and ``analyze`` end to
  end (decoders and inference as configured);
* results, against the ``off`` run: shot cuts against the corpus's truth (found
  within one frame, missed, extra), faces found, box IoU of each face of the
  ``off`` run with the nearest face of the same sample, how far samples moved
  (in frames: a level that skips pictures samples the nearest decoded one), and the clips planned
  (the same spans, within 0.05 s, or not).

``facecut bench --stages decode-options`` runs it; bench/README has the table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facecut.bench.common import figure
from facecut.bench.stages import bench_analyze, bench_decode

SPAN_EPS = 0.05  # s: two clips are the same when both ends are this close


def _iou(a, b) -> float:
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _logs(work: Path) -> dict[str, tuple[list, dict]]:
    """video -> (cut times, {grid index k: Sample})."""
    from facecut.workdir import WorkDir
    from facecut.logio import read_records
    from facecut.records import Cut, LogRecord, Sample

    wd = WorkDir(work)
    out = {}
    for v in wd.load_scan().videos:
        path = wd.log_path(v.key)
        if not path.exists():
            continue
        recs = read_records(path, LogRecord)
        cuts = [r.time for r in recs if type(r) is Cut]
        samples = {r.k: r for r in recs if type(r) is Sample}
        out[v.path] = (cuts, samples)
    return out


def _cut_match(cuts: list[float], truth: list[float], frame: float) -> tuple[int, int, int]:
    """(truth cuts found within one frame, missed, extra)."""
    left = sorted(cuts)
    found = 0
    for t in truth:
        hit = next((c for c in left if abs(c - t) <= frame + 1e-6), None)
        if hit is not None:
            found += 1
            left.remove(hit)
    return found, len(truth) - found, len(left)


def results(corpus: Path, works: dict[str, Path]) -> dict[str, dict]:
    """Per level: what the analysis found, compared with the ``off`` level's."""
    from facecut.workdir import WorkDir
    from facecut.config import ScoreConfig
    from facecut.plan import plan_from_work
    from facecut.tools.make_media import load_truth

    truth = {}
    for p in sorted(corpus.rglob("*.truth.json")):
        t = load_truth(p.with_name(p.name[: -len(".truth.json")]))
        truth[str(p.relative_to(corpus))[: -len(".truth.json")]] = (
            [s.start for s in t.shots[1:]], 1.0 / t.fps if t.fps else 0.04)
    logs = {level: _logs(w) for level, w in works.items()}
    plans = {level: plan_from_work(WorkDir(w), ScoreConfig()) for level, w in works.items()}
    ref_logs, ref_plan = logs["off"], plans["off"]
    ref_spans = sorted((c.source, c.start, c.end) for c in ref_plan.clips)
    out = {}
    for level, got in logs.items():
        found = missed = extra = faces = 0
        ious: list[float] = []
        shifts: list[float] = []
        for video, (cuts, samples) in got.items():
            if video in truth:
                f, m, e = _cut_match(cuts, *truth[video])
                found, missed, extra = found + f, missed + m, extra + e
            frame = truth[video][1] if video in truth else 0.04
            faces += sum(len(s.faces) for s in samples.values())
            for k, ref in ref_logs.get(video, ([], {}))[1].items():
                mine = samples.get(k)
                if mine is not None:
                    shifts.append(abs(mine.time - ref.time) / frame)
                for rf in ref.faces:
                    ious.append(max((_iou(rf.box, f.box) for f in (mine.faces if mine else ())), default=0.0))
        spans = sorted((c.source, c.start, c.end) for c in plans[level].clips)
        same = sum(1 for s in spans if any(s[0] == r[0] and abs(s[1] - r[1]) <= SPAN_EPS
                                           and abs(s[2] - r[2]) <= SPAN_EPS for r in ref_spans))
        out[level] = {
            "cuts_found": found, "cuts_missed": missed, "cuts_extra": extra,
            "faces": faces,
            # how far each sample moved from the frame the off run analysed, in frames
            "sample_shift_mean_frames": float(np.mean(shifts)) if shifts else None,
            "sample_shift_max_frames": float(max(shifts)) if shifts else None,
            "box_iou_mean": float(np.mean(ious)) if ious else None,
            "box_iou_below_0_9": int(sum(1 for i in ious if i < 0.9)),
            "clips": len(spans), "clips_same_as_off": same,
            "clips_unchanged": same == len(spans) == len(ref_spans),
        }
    return out


def analyse_levels(corpus: Path, cfg_for, tmp: Path, levels, repeats: int
                   ) -> tuple[dict[str, Path], dict[str, list[dict]]]:
    """``analyze`` of the corpus at each level, ``repeats`` times, levels
    interleaved (the host's drift hits them alike): the work folder of each
    level's first run (kept for :func:`results`) and every run's figures."""
    import shutil

    works: dict[str, Path] = {}
    runs: dict[str, list[dict]] = {level: [] for level in levels}
    for _ in range(repeats):
        for level in levels:
            a = bench_analyze(corpus, cfg_for(level), tmp)
            if level in works:
                shutil.rmtree(a["work"], ignore_errors=True)
            works.setdefault(level, Path(a["work"]))
            runs[level].append(a)
    return works, runs


def run(corpus: Path, videos, cfg_for, tmp: Path, *, fps: float, max_side: int, repeats: int) -> dict:
    """The whole comparison. ``cfg_for(level)``: the AnalyzeConfig of a level.
    Each level is decoded and analysed ``repeats`` times, levels interleaved."""
    from facecut.config import FAST_DECODE

    decode: dict[str, list[dict]] = {level: [] for level in FAST_DECODE}
    for _ in range(repeats):  # interleaved: the host's drift hits every level alike
        for level in FAST_DECODE:
            decode[level].append(bench_decode(videos, corpus, decoders=1, fps=fps, max_side=max_side,
                                              detector="adaptive", fast=level))
    works, analyze = analyse_levels(corpus, cfg_for, tmp, FAST_DECODE, repeats)
    found = results(corpus, works)
    out = {}
    # Speeds in video seconds per second: ref-frames decodes fewer frames of the same video.
    base = figure([r["video_s_per_s"] for r in decode["off"]])["median"]
    abase = figure([r["video_s_per_s"] for r in analyze["off"]])["median"]
    for level in FAST_DECODE:
        vs = figure([r["video_s_per_s"] for r in decode[level]])
        avs = figure([r["video_s_per_s"] for r in analyze[level]])
        out[level] = {
            "decode_frames_per_s": figure([r["frames_per_s"] for r in decode[level]]),
            "decode_video_s_per_s": vs,
            "decode_cpu_ms_per_frame": figure([r["cpu_ms_per_frame"] for r in decode[level]]),
            "decode_speedup": vs["median"] / base if base else None,
            "frames_decoded": decode[level][0]["frames"],
            "analyze_video_s_per_s": avs,
            "analyze_speedup": avs["median"] / abase if abase else None,
            **found[level],
        }
    return out
