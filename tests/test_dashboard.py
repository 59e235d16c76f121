"""What a person sees: the dashboard from snapshots, plain and JSON progress,
the live dashboard under a pseudo-terminal, and `status` on running, finished
and killed batches."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console
from rich.table import Table

from facecut.cli import main
from facecut.videolog import read_log_state
from facecut.dashboard import Reporter, plain_line, render, summary_table
from facecut.fsio import video_key
from facecut.workdir import WorkDir
from facecut.scan import scan
from facecut.stats import DecoderStats, InferStats, RingStats, RunStats

REPO = Path(__file__).resolve().parents[1]


def snapshot(**kw) -> RunStats:
    base = dict(
        time=time.time(), elapsed=125.0,
        decoders=[DecoderStats(name="decoder-0", video="trip/day1.mp4", position=61.0, duration=3600.0,
                               decode_fps=412.0, sample_fps=27.5, blocked_s=12.5, cpu_s=97.25)],
        infer=[InferStats(name="infer-0", model="mtcnn", provider="CPUExecutionProvider", fps=25.25,
                          faces_per_s=20.5, batch_fill=0.93, starved_s=1.2, cpu_s=240.5)],
        ring=RingStats(slots=22, free=2, at_decoders=2, ready=10, at_infer=8, slot_mib=2.6),
        bottleneck="inference-bound (decoders wait for free ring slots)",
        videos_total=13, videos_done=3, videos_failed=1, video_seconds_total=22248.0,
        video_seconds_done=4000.0, speed=32.1, eta_s=568.0, samples_written=3000, faces_found=2500,
        warnings=["bad.mp4: failed: no decodable video frame"],
    )
    base.update(kw)
    return RunStats(**base)


def rendered(renderable, width: int = 140) -> str:
    console = Console(record=True, width=width)
    console.print(renderable)
    return console.export_text()


def test_dashboard_shows_the_figures_of_the_snapshot():
    text = rendered(render(snapshot()))
    for expected in ["trip/day1.mp4", "0:01:01/1:00:00", "412", "27.5", "12.5s", "97.2s",  # decoder
                     "CPU", "mtcnn", "25.2", "20.5", "93%", "1.2s", "240.5s",  # inference
                     "10 ready", "8 in inference", "of 22",  # ring
                     "inference-bound", "4/13", "1 failed", "1.11/6.18 h", "ETA 0:09:28", "32.1x",
                     "bad.mp4: failed"]:
        assert expected in text, expected


@pytest.mark.parametrize("width", [60, 80, 100])
def test_a_narrow_terminal_keeps_names_and_figures_whole(width):
    """The layout fits the width by itself (measured on a wider console, which
    would show what a terminal crops): worker names keep their start and end,
    positions and CPU are never cut, a long path shows its end (wide characters
    count two cells), lesser columns go first."""
    from facecut.dashboard import _layout

    decs = [DecoderStats(name="render-node-07.studio.lan:40123 decoder-0", video="a folder/" + "long name " * 8
                         + "day1.mp4", position=61.0, duration=3600.0, decode_fps=412.0, sample_fps=27.5,
                         blocked_s=12.5, cpu_s=97.25),
            DecoderStats(name="decoder-1", video="旅行/東京の夜景とても長い名前の動画ファイル.mkv", position=5.0,
                         duration=60.0, cpu_s=1.5)]
    infs = [InferStats(name="render-node-07.studio.lan:40123 infer-0", model="buffalo_l",
                       provider="CUDAExecutionProvider", fps=25.25, faces_per_s=20.5, batch_fill=0.93, starved_s=1.2,
                       cpu_s=1240.5)]
    snap = snapshot(decoders=decs, infer=infs)
    tables = [r for r in _layout(snap, width).renderables if isinstance(r, Table) and r.title]
    assert len(tables) == 2 and all(Console(width=1000).measure(t).maximum <= width for t in tables)
    text = rendered(render(snap), width=width)
    for expected in ["render-", "decoder-1", "0:01:01/1:00:00", "0:00:05/0:01:00", "97.2s", "1.5s", "1240.5s",
                     "25.2", "…", "day1.mp4", ".mkv", "buffalo_l"]:
        assert expected in text, expected
    if width < 100:
        assert "sample/s" not in text  # the first column to go
    else:
        assert "CUDA" in text and "93%" in text and "20.5" in text
    wide = rendered(render(snapshot(decoders=decs)), width=200)
    assert "a folder/long name" in wide and "東京の夜景" in wide  # room enough: the whole path


def test_later_stages_appear_when_they_run():
    text = rendered(render(snapshot(tracks=40, segments=12, clips_cut=5, clips_total=12, report="/w/report/index.html")))
    assert "tracks 40" in text and "accepted segments 12" in text and "clips cut 5/12" in text
    assert "/w/report/index.html" in text


def test_long_warnings_do_not_break_the_layout():
    text = rendered(render(snapshot(warnings=["x" * 500] * 10)), width=100)
    assert max(len(line) for line in text.splitlines()) <= 100


def test_plain_line_and_summary_table():
    line = plain_line(snapshot())
    assert "videos 4/13" in line and "32.1x" in line and "ETA 0:09:28" in line
    text = rendered(summary_table([
        {"source": "a.mp4", "status": "ok", "duration": 3600, "clips": 12, "clip_seconds": 600},
        {"source": "b.mp4", "status": "failed", "duration": 0, "clips": 0, "reason": "truncated"},
    ]))
    assert "a.mp4" in text and "truncated" in text and "16.7% of input" in text and "2 sources" in text


def test_json_reporter_writes_parsable_lines(capsys):
    r = Reporter("json")
    r(snapshot(time=1000.0))
    r(snapshot(time=1000.2))  # within a second: not repeated
    r(snapshot(time=1002.0))
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    assert json.loads(lines[0])["videos_total"] == 13


# --------------------------------------------------------------------------- real runs


@pytest.fixture()
def work(media_dir, tmp_path) -> Path:
    w = tmp_path / "work"
    WorkDir(w).save_scan(scan(media_dir))
    return w


ARGS = ["--provider", "cpu", "--decoders", "1", "--infer-procs", "1", "--min-face", "60"]


def test_not_a_terminal_prints_plain_lines_and_json_progress_parses(work):
    out = subprocess.run([sys.executable, "-m", "facecut", "analyze", "-w", str(work), *ARGS, "--json-progress"],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr
    snaps = [json.loads(line) for line in out.stdout.splitlines()]
    assert snaps and snaps[-1]["videos_done"] == 4 and snaps[-1]["samples_written"] > 0
    assert "\x1b[" not in out.stderr  # no terminal control codes when not a terminal
    again = subprocess.run([sys.executable, "-m", "facecut", "analyze", "-w", str(work), *ARGS, "--no-dashboard"],
                           capture_output=True, text=True, timeout=300, cwd=REPO)
    assert again.returncode == 0 and "analysed" in again.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="pty is POSIX")
def test_live_dashboard_under_a_pseudo_terminal(work):
    import pty
    import select

    pid, fd = pty.fork()
    if pid == 0:  # child: the real command on a terminal
        os.chdir(REPO)
        os.environ["COLUMNS"], os.environ["LINES"] = "140", "50"
        os.execv(sys.executable, [sys.executable, "-m", "facecut", "analyze", "-w", str(work), *ARGS])
    chunks = []
    deadline = time.time() + 300
    while time.time() < deadline:
        r, _, _ = select.select([fd], [], [], 1.0)
        if r:
            try:
                data = os.read(fd, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
    _, status = os.waitpid(pid, 0)
    text = b"".join(chunks).decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text[-2000:]
    assert "decoders" in text and "inference" in text and "bottleneck" in text  # the live layout
    assert "\x1b[" in text  # drawn with terminal control codes
    assert "analysed in" in text and "4 sources" in text  # the summary at the end


def test_status_of_finished_and_killed_batches(work, tmp_path):
    res = CliRunner().invoke(main, ["status", "-w", str(work), "--json"])
    assert res.exit_code == 0
    st = json.loads(res.output)
    assert not st["alive"] and st["pending"] == 4  # scanned, nothing analysed yet

    from facecut.config import AnalyzeConfig
    from facecut.coordinator import analyze

    analyze(WorkDir(work), AnalyzeConfig(provider="cpu", decoders=1, infer_procs=1, min_face=60))
    res = CliRunner().invoke(main, ["status", "-w", str(work)])
    assert "not running" in res.output and "finished" in res.output and "4 ok" in res.output


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_status_of_a_running_then_killed_batch(tmp_path):
    from facecut.tools.make_media import Shot, make_video

    media = tmp_path / "m"
    shots = [Shot("face", 5.0, "astronaut", face_px=130), Shot("noface", 3.0, "coffee")] * 8
    make_video(media / "long.mp4", shots, seed=9)
    w = tmp_path / "w"
    WorkDir(w).save_scan(scan(media))
    # --fps 8: many samples, so the run is still going when we look at it
    proc = subprocess.Popen([sys.executable, "-m", "facecut", "analyze", "-w", str(w), *ARGS, "--batch", "1",
                             "--fps", "8", "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, cwd=REPO)
    try:
        log = WorkDir(w).log_path(video_key("long.mp4"))
        deadline = time.time() + 120
        st = None
        while time.time() < deadline:  # wait cheaply for the run to be under way
            if log.exists() and read_log_state(log).samples > 3:
                break
            time.sleep(0.05)
        while time.time() < deadline:
            out = subprocess.run([sys.executable, "-m", "facecut", "status", "-w", str(w), "--json"],
                                 capture_output=True, text=True, cwd=REPO)
            st = json.loads(out.stdout)
            if st["alive"] and log.exists() and st["videos"][0]["status"] == "running" and st["videos"][0]["samples"] > 3:
                break
            time.sleep(0.3)
        assert st and st["alive"] and st["pid"] == proc.pid and st["videos"][0]["status"] == "running", st
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    out = subprocess.run([sys.executable, "-m", "facecut", "status", "-w", str(w)], capture_output=True, text=True,
                         cwd=REPO)
    assert "not running" in out.stdout and "1 video(s) left" in out.stdout and "interrupted" in out.stdout
