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
