"""One writer per work folder: an exclusive OS lock on ``WORK/.facecut.lock``.

Every command that writes into WORK holds it for its whole run; a second one
stops at once (exit 2) with who holds it: "WORK is in use by pid N on host H
since T (facecut run)". The lock is the operating system's (``flock`` on POSIX,
``msvcrt.locking`` on Windows), so it dies with its process: a killed run leaves
no stale lock, whatever the file still says. Readers (``status``) never take it.

The file holds the holder's description (JSON) for the message; on Windows the
locked byte lies far past it, so other processes can still read it.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from facecut.errors import ConfigError
from facecut.fsio import remove_temp_files
from facecut.workdir import WorkDir

LOCK_NAME = ".facecut.lock"
_WIN_OFFSET = 1 << 20  # the byte locked on Windows (beyond the text, which stays readable)


class WorkInUse(ConfigError):
    """Another live process holds the work folder (exit 2)."""


def _lock(fd: int, take: bool) -> bool:
    """Take (non-blocking) or give back the lock on ``fd``; False when another holds it."""
    if sys.platform == "win32":
        import msvcrt

        os.lseek(fd, _WIN_OFFSET, os.SEEK_SET)
        mode = msvcrt.LK_NBLCK if take else msvcrt.LK_UNLCK
    else:
        import fcntl

        mode = fcntl.LOCK_EX | fcntl.LOCK_NB if take else fcntl.LOCK_UN
    try:
        if sys.platform == "win32":
            msvcrt.locking(fd, mode, 1)
        else:
            fcntl.flock(fd, mode)
    except OSError:  # BlockingIOError: held by another open file (process)
        return False
    return True


def holder(root: Path) -> dict | None:
    """What the lock file says about its last holder (None: no file or unreadable).
    Says nothing about whether that holder still runs: :meth:`WorkLock.acquire` does."""
    try:
        with open(Path(root) / LOCK_NAME, "rb") as f:
            return json.loads(f.read(4096).split(b"\0", 1)[0] or b"null")
    except (OSError, ValueError):
        return None


def describe(info: dict | None) -> str:
    if not info:
        return "another process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    what = f" ({info['command']})" if info.get("command") else ""
    return f"pid {info.get('pid', '?')} on host {info.get('host', '?')} since {since}{what}"


class WorkLock:
    """``with WorkLock(work_root, "facecut run"):`` - exclusive for the block."""

    def __init__(self, root: Path, command: str = "") -> None:
        self.root = Path(root)
        self.path = self.root / LOCK_NAME
        self.command = command
        self.fd: int | None = None

    def acquire(self) -> WorkLock:
        if self.fd is not None:
            return self
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _lock(fd, True):
            os.close(fd)
            raise WorkInUse(f"{self.root} is in use by {describe(holder(self.root))}: "
                            "one facecut command at a time may write to a work folder "
                            "(`facecut status` can read it meanwhile)")
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                "command": self.command}
        data = json.dumps(info).encode()
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, data + b"\0" * max(0, 512 - len(data)))
        self.fd = fd
        wd = WorkDir(self.root)
        # One writer: every temporary file facecut makes in WORK now belongs to a
        # dead one (a marker, a thumbnail, a plan killed mid-write). Only in
        # facecut's own folders: WORK may hold other things of the user's.
        remove_temp_files(self.root)
        for sub in (wd.analysis_dir, wd.thumbs_dir, wd.logs_dir, wd.report_dir):
            remove_temp_files(sub, recursive=True)
        return self

    def release(self) -> None:
        fd, self.fd = self.fd, None
        if fd is None:
            return
        try:
            _lock(fd, False)
        finally:
            os.close(fd)

    def __enter__(self) -> WorkLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
