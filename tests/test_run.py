"""`facecut run` and `facecut demo`: the whole chain, resumable, on generated media."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest
from click.testing import CliRunner

from facecut.cli import main
from facecut.videolog import read_log_state
from facecut.fsio import output_folder, read_json, video_key
from facecut.workdir import WorkDir
from facecut.records import Plan

REPO = Path(__file__).resolve().parents[1]
ARGS = ["--provider", "cpu", "--decoders", "1", "--infer-procs", "1", "--no-dashboard"]


def plan_of(work: Path) -> Plan:
    return read_json(WorkDir(work).plan_json, Plan)


def spans(plan: Plan) -> list[tuple]:
    return sorted((c.id, c.source, c.start, c.end) for c in plan.clips)


@pytest.fixture(scope="module")
def finished(media_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    res = CliRunner().invoke(main, ["run", str(media_dir), "-o", str(root / "out"), "-w", str(root / "work"), *ARGS])
    return root, res


def test_run_writes_clips_plan_and_report(finished):
    root, res = finished
    assert res.exit_code == 0, res.output
    plan = plan_of(root / "work")
    assert plan.clips and all(c.file for c in plan.clips)
    for c in plan.clips:
        clip = root / "out" / c.file
        with av.open(str(clip)) as f:
            assert f.streams.video and f.streams.audio
        assert clip.parent.name == output_folder(c.source)
    report = root / "work" / "report" / "index.html"
    assert report.exists() and f"report: {report}" in res.output


def test_finished_batch_rerun_analyses_and_cuts_nothing(finished, media_dir):
    root, _ = finished
    logs = {p: p.stat().st_mtime_ns for p in (root / "work" / "analysis").glob("*.fclog")}
    clips = {p: p.stat().st_mtime_ns for p in (root / "out").rglob("*.mp4")}
    before = spans(plan_of(root / "work"))
    res = CliRunner().invoke(main, ["run", str(media_dir), "-o", str(root / "out"), "-w", str(root / "work"), *ARGS])
    assert res.exit_code == 0, res.output
    assert {p: p.stat().st_mtime_ns for p in logs} == logs
    assert {p: p.stat().st_mtime_ns for p in (root / "out").rglob("*.mp4")} == clips
    assert spans(plan_of(root / "work")) == before


def _plan_without_times(work: Path) -> dict:
    plan = json.loads(WorkDir(work).plan_json.read_bytes())
    plan.pop("created")
    plan["params"]["cut"].pop("out_dir")
    return plan


def test_streamed_run_gives_the_plan_of_the_stage_by_stage_path(finished, media_dir, tmp_path):
    """`run` cuts each video while the others are analysed; the plan is the one
    scan + analyze + score + cut give, clip for clip, cut field for cut field."""
    root, _ = finished
    work, out = tmp_path / "w", tmp_path / "o"
    runner = CliRunner()
    for cmd in (["scan", str(media_dir), "-w", str(work)],
                ["analyze", "-w", str(work), *ARGS],
                ["score", "-w", str(work), "--provider", "cpu"],
                ["cut", "-w", str(work), "-o", str(out)]):
        res = runner.invoke(main, cmd)
        assert res.exit_code == 0, (cmd, res.output)
    assert _plan_without_times(work) == _plan_without_times(root / "work")


def test_a_streamed_run_opens_no_clip_again_to_check_it(media_dir, tmp_path, monkeypatch):
    """Cut bookkeeping is O(clips): the final pass finds every clip streaming wrote
    in the run's cache instead of opening it (it used to re-open every earlier
    clip after every video: quadratic)."""
    import facecut.cut.files as cut  # _existing looks read_clip_tag up there

    opened = []
    real = cut.read_clip_tag
    monkeypatch.setattr(cut, "read_clip_tag", lambda path: opened.append(path) or real(path))
    res = CliRunner().invoke(main, ["run", str(media_dir), "-o", str(tmp_path / "o"), "-w", str(tmp_path / "w"),
                                    *ARGS])
    assert res.exit_code == 0, res.output
    assert plan_of(tmp_path / "w").clips and opened == []


def test_track_report_and_status_watch_on_a_finished_batch(finished, tmp_path):
    root, _ = finished
    work = root / "work"
    res = CliRunner().invoke(main, ["track", "-w", str(work), "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert {r["path"] for r in rows} >= {"basic.mp4", "rotated.mp4"}
    index = work / "report" / "index.html"
    index.unlink()
    res = CliRunner().invoke(main, ["report", "-w", str(work)])
    assert res.exit_code == 0 and index.is_file(), res.output
    # status --watch refreshes until interrupted (Ctrl-C: exit 130)
    proc = subprocess.Popen([sys.executable, "-m", "facecut", "status", "-w", str(work), "--json", "--watch",
                             "--interval", "0.2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    lines = [proc.stdout.readline() for _ in range(3)]
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130
    snaps = [json.loads(x) for x in lines]
    assert all(s["videos"] and not s["alive"] for s in snaps)


def test_rescore_with_other_gates_only_changes_the_plan(finished, media_dir):
    root, _ = finished
    work = root / "work"
    logs = {p: p.stat().st_mtime_ns for p in (work / "analysis").glob("*")}
    res = CliRunner().invoke(main, ["score", "-w", str(work), "--max-yaw", "25"])
    assert res.exit_code == 0, res.output
    assert {p: p.stat().st_mtime_ns for p in logs} == logs
    assert plan_of(work).rejected.get("pose", 0) >= 1
    res = CliRunner().invoke(main, ["score", "-w", str(work)])  # back to the defaults for the other tests
    assert res.exit_code == 0


def test_dry_run_says_what_would_be_processed(finished, media_dir, tmp_path):
    root, _ = finished
    res = CliRunner().invoke(main, ["run", str(media_dir), "-o", str(root / "out"), "-w", str(root / "work"),
                                    "--dry-run", "--skip-pattern", "^sub/"])
    assert res.exit_code == 0, res.output
    assert "0 video(s) to analyse" in res.output and "3 already done" in res.output
    assert "1 skipped" in res.output and "sub/nofaces.mkv" in res.output
    res = CliRunner().invoke(main, ["run", str(media_dir), "-o", str(tmp_path / "o"), "--dry-run"])
    assert "4 video(s) to analyse" in res.output and not (tmp_path / "o").exists()


def test_env_vars_pin_a_batch(finished, media_dir, tmp_path):
    env = {"FACECUT_WORK": str(tmp_path / "w"), "FACECUT_SKIP_PATTERN": "^(?!basic)", "FACECUT_MAX_DUR": "2.5", "FACECUT_LONG": "reject",
           "FACECUT_WRITE_SIDECAR": "1", "FACECUT_PROVIDER": "cpu", "FACECUT_DECODERS": "1",
           "FACECUT_INFER_PROCS": "1", "FACECUT_NO_DASHBOARD": "1"}
    res = CliRunner().invoke(main, ["run", str(media_dir), "-o", str(tmp_path / "o")], env=env)
    assert res.exit_code == 0, res.output
    plan = plan_of(tmp_path / "w")
    assert [s.path for s in plan.sources] == ["basic.mp4"]
    assert plan.params["max_dur"] == 2.5 and plan.rejected.get("too_long", 0) >= 1
    assert all(c.end - c.start <= 2.5 for c in plan.clips)
    assert all((tmp_path / "o" / c.file).with_suffix(".json").exists() for c in plan.clips)


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_killed_run_resumes_to_the_same_plan(finished, media_dir, tmp_path):
    root, _ = finished
    out, work = tmp_path / "out", tmp_path / "work"
    cmd = [sys.executable, "-m", "facecut", "run", str(media_dir), "-o", str(out), "-w", str(work), *ARGS,
           "--batch", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            cwd=REPO)
    log = WorkDir(work).log_path(video_key("rotated.mp4"))  # the second video in sorted order
    deadline = time.time() + 120
    while not (log.exists() and read_log_state(log).samples >= 2):
        assert proc.poll() is None
        if time.time() > deadline:  # a hang guard: never carry on as if the kill landed mid-video
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("the run never reached the second video")
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert read_log_state(log).done is None
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert spans(plan_of(work)) == spans(plan_of(root / "work"))
    assert not list(out.rglob(".*tmp*")) and not list(out.rglob("*.tmp"))
    for c in plan_of(work).clips:
        assert (out / c.file).exists()


def test_demo_runs_the_whole_chain(tmp_path):
    res = CliRunner().invoke(main, ["demo", "-o", str(tmp_path / "demo"), "--json-progress"])
    assert res.exit_code == 0, res.output
    plan = plan_of(tmp_path / "demo" / "work")
    assert len(plan.clips) >= 6 and all(c.file for c in plan.clips)
    assert (tmp_path / "demo" / "work" / "report" / "index.html").exists()
    assert "report:" in res.output
    json.loads(next(line for line in res.output.splitlines() if line.startswith("{")))
