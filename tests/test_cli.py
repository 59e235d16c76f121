"""The CLI surface: commands, env vars, exit codes."""

from __future__ import annotations

from click.testing import CliRunner

from facecut.cli import main

COMMANDS = ["run", "scan", "analyze", "track", "score", "cut", "report", "status", "bench", "doctor", "demo"]


def test_help_lists_every_command():
    res = CliRunner().invoke(main, ["--help"])
    assert res.exit_code == 0
    for cmd in COMMANDS:
        assert f"  {cmd} " in res.output, cmd


def test_every_command_has_help():
    for cmd in COMMANDS:
        res = CliRunner().invoke(main, [cmd, "--help"])
        assert res.exit_code == 0, (cmd, res.output)


def test_options_show_their_env_var():
    res = CliRunner().invoke(main, ["scan", "--help"])
    for var in ["FACECUT_WORK", "FACECUT_FILTER_FROM", "FACECUT_SKIP_PATTERN"]:
        assert var in res.output


def test_usage_error_is_exit_2(tmp_path):
    res = CliRunner().invoke(main, ["scan", str(tmp_path / "missing"), "-w", str(tmp_path)])
    assert res.exit_code == 2


def test_python_dash_m_engine():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "facecut", "--version"], capture_output=True, text=True, check=True)
    assert "facecut" in out.stdout


def test_model_opt_is_parsed_and_checked_before_anything_starts(tmp_path):
    from facecut.cli.options import model_options

    assert model_options(["min_size_ratio=0.85", "max_rows=64", "exact=true", "thresholds=0.6,0.7,0.8",
                          "name=buffalo"]) == {"min_size_ratio": 0.85, "max_rows": 64, "exact": True,
                                               "thresholds": [0.6, 0.7, 0.8], "name": "buffalo"}
    res = CliRunner().invoke(main, ["analyze", "-w", str(tmp_path), "--provider", "cpu", "--model-opt", "bogus=1"])
    assert res.exit_code == 2 and "bogus" in res.output and "min_size_ratio" in res.output  # names what there is
    res = CliRunner().invoke(main, ["analyze", "-w", str(tmp_path), "--provider", "cpu", "--model-opt", "threads=4"])
    assert res.exit_code == 2 and "--infer-threads" in res.output
    res = CliRunner().invoke(main, ["analyze", "-w", str(tmp_path), "--model-opt", "min_size_ratio"])
    assert res.exit_code == 2 and "KEY=VALUE" in res.output
    assert not (tmp_path / "analysis").exists() and not (tmp_path / "logs").exists()  # refused before any work
