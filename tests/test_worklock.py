"""One writer per work folder (facecut.worklock): a real second process holds the lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from facecut.errors import EXIT_USAGE
from facecut.worklock import WorkInUse, WorkLock, holder

REPO = Path(__file__).resolve().parents[1]
HOLD = "import sys, time; from facecut.worklock import WorkLock; l = WorkLock(sys.argv[1], 'holder').acquire(); print('held', flush=True); time.sleep(60)"


def _holder(work: Path) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(work)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_second_writer_is_refused_with_who_holds_it(tmp_path):
    p = _holder(tmp_path)
    try:
        with pytest.raises(WorkInUse) as ei:
            WorkLock(tmp_path, "facecut run").acquire()
        msg = str(ei.value)
        assert f"pid {p.pid} on host" in msg and "(holder)" in msg and "since" in msg
        assert ei.value.exit_code == EXIT_USAGE
        assert holder(tmp_path)["pid"] == p.pid  # readers can read who it is
    finally:
        p.kill()
        p.wait()


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_the_lock_dies_with_its_process(tmp_path):
    p = _holder(tmp_path)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    with WorkLock(tmp_path, "after") as lock:  # no stale lock, whatever the file says
        assert holder(tmp_path)["pid"] == os.getpid() and lock.fd is not None
    with WorkLock(tmp_path, "again"):  # released on exit
        pass


def test_release_and_reacquire_in_one_process(tmp_path):
    a = WorkLock(tmp_path).acquire()
    a.release()
    b = WorkLock(tmp_path).acquire()
    p = subprocess.run([sys.executable, "-c", "import sys; from facecut.worklock import WorkLock; WorkLock(sys.argv[1]).acquire()",
                        str(tmp_path)], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert p.returncode != 0 and "is in use by" in p.stderr
    b.release()


@pytest.mark.slow
def test_a_second_run_on_the_same_work_folder_stops_at_once_and_status_still_reads(media_dir, tmp_path):
    work = tmp_path / "w"
    args = ["--provider", "cpu", "--decoders", "1", "--infer-procs", "1", "--no-dashboard"]
    first = subprocess.Popen([sys.executable, "-m", "facecut", "run", str(media_dir), "-o", str(tmp_path / "o"),
                              "-w", str(work), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    try:
        deadline = time.time() + 60
        while not (work / "heartbeat.json").exists():  # the first run is analysing
            if first.poll() is not None or time.time() > deadline:
                pytest.fail(f"hang guard: the first run never started analysing ({first.poll()})")
            time.sleep(0.05)
        second = subprocess.run([sys.executable, "-m", "facecut", "run", str(media_dir), "-o", str(tmp_path / "o2"),
                                 "-w", str(work), *args], capture_output=True, text=True, cwd=REPO, timeout=120)
        assert second.returncode == EXIT_USAGE, second.stderr
        assert f"is in use by pid {first.pid} on host" in second.stderr and "(facecut run)" in second.stderr
        assert not (tmp_path / "o2").exists()
        status = subprocess.run([sys.executable, "-m", "facecut", "status", "-w", str(work)], capture_output=True,
                                text=True, cwd=REPO, timeout=60)
        assert status.returncode == 0, status.stderr
        cut = subprocess.run([sys.executable, "-m", "facecut", "cut", "-w", str(work), "-o", str(tmp_path / "o3")],
                             capture_output=True, text=True, cwd=REPO, timeout=60)
        assert cut.returncode == EXIT_USAGE and "is in use by" in cut.stderr
        out, err = first.communicate(timeout=300)
        assert first.returncode == 0, err
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
