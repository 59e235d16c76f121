"""doctor on this machine (CPU onnxruntime): real sessions, real files."""

from __future__ import annotations

import json

from click.testing import CliRunner

from facecut.cli import main


def test_doctor_reports_cpu_provider_and_embedded_model():
    res = CliRunner().invoke(main, ["doctor"])
    assert res.exit_code == 0, res.output
    assert "CPUExecutionProvider" in res.output
    assert "mtcnn" in res.output and "buffalo_l" in res.output


def test_doctor_json_and_missing_buffalo_folder(tmp_path):
    res = CliRunner().invoke(main, ["doctor", "--json", "--model-dir", str(tmp_path / "nope")])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["providers"]["auto"] == "CPUExecutionProvider"
    assert data["providers"]["used"]["cpu"] == "CPUExecutionProvider"
    by_name = {b["name"]: b for b in data["backends"]}
    assert by_name["mtcnn"]["ok"] and all(p.endswith(".onnx") for p in by_name["mtcnn"]["files"].values())
    assert not by_name["buffalo_l"]["ok"] and "det_10g.onnx" in json.dumps(by_name["buffalo_l"])
    checks = {c["check"]: c["status"] for c in data["checks"]}
    assert checks["onnxruntime flavour"] == "ok" and checks["OpenCV"] == "ok"
    rewrite = next(c for c in data["checks"] if c["check"] == "CPU graph rewrite")
    assert rewrite["status"] == "ok" and rewrite["detail"].startswith("on: ")
