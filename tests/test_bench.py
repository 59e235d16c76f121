"""Smoke test of the benchmark harness: one repeat on the small test media, every
figure present in the JSON. (No timing assertions: speed is reported, not tested.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_writes_every_figure(media_dir, format_matrix, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(format_matrix, cache / "formats")  # the format matrix, already rendered
    (cache / "formats" / ".complete").write_text("ok\n")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("basic.mp4", "rotated.mp4"):
        shutil.copy(media_dir / name, corpus / name)
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "facecut.bench", str(corpus), "--provider", "cpu", "--repeats", "1", "--min-face", "60",
           "--decoder-counts", "1", "--batches", "1,4", "--infer-frames", "8", "--sweep", "--budget", "1",
           "--json", str(out)]
    env = {**os.environ, "FACECUT_BENCH_CACHE": str(cache)}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads(out.read_text())
    for key in ("schema", "created", "machine", "provider", "corpus", "config", "repeats", "figures", "sweep"):
        assert key in data, key
    assert {"cpu", "cores", "python", "onnxruntime", "av"} <= set(data["machine"])
    f = data["figures"]
    for key in ("decode", "shot_detection_cost", "shot_detection_cpu_cost", "formats", "inference", "ring", "log",
                "analyze", "pipeline_efficiency", "chain"):
        assert key in f, key

    def is_figure(x):
        return {"min", "median", "max", "values"} <= set(x) and x["min"] <= x["median"] <= x["max"]

    assert all(is_figure(v["frames_per_s"]) for v in f["decode"].values())
    assert {"packed_b.avi", "wmv2_wma.wmv", "mpeg2_mp2.ts"} <= set(f["formats"]), "decode speed per file class"
    assert all(is_figure(v["frames_per_s"]) and v["codec"] for v in f["formats"].values())
    assert {v["batch"] for v in f["inference"].values()} >= {1, 4}
    assert is_figure(f["analyze"]["samples_per_s"]) and f["analyze"]["samples_per_s"]["median"] > 0
    assert is_figure(f["analyze"]["efficiency_pairs"]) and 0 < f["pipeline_efficiency"]
    assert is_figure(f["analyze"]["model_fed"]) and f["analyze"]["model_fed"]["max"] <= 1.0
    chain = f["chain"]
    assert chain["clips"] > 0 and chain["ratio"] > 0 and is_figure(chain["ratio_pairs"])
    assert {"scene_pass_s", "sample_detect_s", "cut_s", "thumbs_s", "total_s"} <= set(chain["baseline"])
    assert {"analyze_s", "score_s", "cut_s", "report_s", "total_s"} <= set(chain["facecut"])
    # CPU per process as each reported it: every role worked, and no more CPU than the cores had.
    cpu = {k: v["median"] for k, v in chain["facecut_cpu"].items()}
    assert cpu["decoders_s"] > 0 and cpu["inference_s"] > 0 and cpu["samples"] > 0
    assert cpu["analyze_s"] <= 1.05 * os.cpu_count() * chain["facecut"]["analyze_s"]["max"] + 0.5
    assert 0 < chain["baseline"]["cpu_total_s"]["median"]
    assert "CPU per sample" in res.stderr and "cores kept busy" in res.stderr
    assert data["sweep"]["rows"] and "best" in data["sweep"]
    assert data["sweep"]["best"]["fast_decode"] in ("off", "deblock-noref", "ref-frames")  # never deblock-all
    assert {r.get("fast_decode") for r in data["sweep"]["rows"]} >= {"off", "deblock-noref", "ref-frames"}
    assert "end to end" in res.stderr and "x faster" in res.stderr

    # --compare on two different runs: a second, smaller one (ring and log figures only).
    second = tmp_path / "second.json"
    res2 = subprocess.run([sys.executable, "-m", "facecut.bench", str(corpus), "--provider", "cpu", "--repeats", "1",
                           "--stages", "ring,log", "--json", str(second)], capture_output=True, text=True,
                          timeout=300, cwd=REPO, env=env)
    assert res2.returncode == 0, res2.stderr[-3000:]
    cmp = subprocess.run([sys.executable, "-m", "facecut.bench", "--compare", str(out), str(second)], capture_output=True,
                         text=True, timeout=120, cwd=REPO, env={**env, "COLUMNS": "200"})
    assert cmp.returncode == 0, cmp.stderr
    b = json.loads(second.read_text())["figures"]
    rows = {}
    for line in cmp.stdout.splitlines():
        cells = [c.strip() for c in line.replace("┃", "│").split("│") if c.strip()]
        if cells and cells[0].startswith(("ring.", "log.")):
            rows[cells[0]] = cells
    assert rows, cmp.stdout
    for name, cells in rows.items():  # B / A is the ratio of the two runs' medians
        k, fig = name.split(".", 1)
        want = b[k][fig]["median"] / f[k][fig]["median"]
        assert float(cells[-1]) == pytest.approx(want, abs=0.006), (name, cells)
    assert {n.split(".")[0] for n in rows} == {"ring", "log"}  # only what both runs measured


@pytest.mark.slow
def test_decode_options_stage_compares_every_level_with_off(media_dir, tmp_path):
    """Each --fast-decode level, decoded and analysed, its results against off's:
    off against itself is exact, ref-frames decodes fewer frames of the same
    video, deblock-all moves boxes, and every level says what it did to clips
    and samples."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(media_dir / "basic.mp4", corpus / "basic.mp4")
    shutil.copy(media_dir / "basic.mp4.truth.json", corpus / "basic.mp4.truth.json")
    out = tmp_path / "decode.json"
    res = subprocess.run([sys.executable, "-m", "facecut.bench", str(corpus), "--provider", "cpu", "--repeats", "1",
                          "--min-face", "60", "--stages", "decode-options", "--json", str(out)],
                         capture_output=True, text=True, timeout=600, cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    d = json.loads(out.read_text())["figures"]["decode_options"]
    assert set(d) == {"off", "deblock-noref", "deblock-all", "ref-frames"}
    off = d["off"]
    assert off["box_iou_mean"] == 1.0 and off["sample_shift_max_frames"] == 0 and off["clips_unchanged"]
    assert off["cuts_found"] > 0 and off["cuts_missed"] == 0 and off["decode_speedup"] == 1.0
    assert d["ref-frames"]["frames_decoded"] < off["frames_decoded"]
    assert d["deblock-all"]["box_iou_mean"] < 1.0
    for v in d.values():
        assert v["clips"] > 0 and v["clips_same_as_off"] <= v["clips"] and v["decode_speedup"] > 0
        assert v["sample_shift_max_frames"] is not None
    assert "--fast-decode levels" in res.stderr


@pytest.mark.slow
def test_bench_puts_hardware_decode_next_to_software(media_dir, tmp_path):
    """--hwaccel: the decode figure has software and hardware rows from the same run,
    and the JSON says whether the device decodes here (why not, when it does not)."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(media_dir / "basic.mp4", corpus / "basic.mp4")
    out = tmp_path / "hw.json"
    cmd = [sys.executable, "-m", "facecut.bench", str(corpus), "--provider", "cpu", "--stages", "decode",
           "--decoder-counts", "1", "--hwaccel", "auto", "--json", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads(out.read_text())
    rows = data["figures"]["decode"].values()
    assert {r["hwaccel"] for r in rows} == {"none", "auto"} and len(rows) == 4
    hw = data["hwaccel"]
    assert hw["asked"] == "auto" and isinstance(hw["works"], bool)
    assert hw["works"] or (hw["reason"] and "hardware decode" in res.stderr)
