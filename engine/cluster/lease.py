"""One writer per video log across machines: the lease file, taking it over from
a holder that is gone, and fencing the log before a takeover from another machine.
(See facecut.cluster for the design.)
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

from facecut.errors import FacecutError
from facecut.fsio import replace_with_retry

log = logging.getLogger(__name__)

LEASE_TTL = 120.0  # s without a refresh after which a lease is stale (clocks must agree within this)


class LeaseHeld(FacecutError):
    """Another live process is analysing this video."""


class LeaseLost(FacecutError):
    """Another task took this video's lease over: stop writing."""


def _proc_created(pid: int) -> float | None:
    """Start time of process ``pid`` on this machine; None when it is gone (or a zombie)."""
    import psutil  # a dependency of distributed

    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return None
        return p.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def holder_alive(holder: dict, age: float, registered: Callable[[dict], bool] | None = None) -> str | None:
    """Why the lease ``holder`` (written ``age`` s ago) may still be writing, or None
    when it is certainly or presumably gone. ``registered(holder)``: whether the
    scheduler still lists its worker with that process (None: unknown, assume so)."""
    if age > LEASE_TTL:
        return None
    who = f"pid {holder.get('pid')} on {holder.get('host')} (worker {holder.get('worker')})"
    if holder.get("host") == socket.gethostname():
        created = _proc_created(int(holder.get("pid", 0)))
        if created is None or abs(created - float(holder.get("created", created))) > 1.0:
            return None  # exited, or the pid now belongs to another process
        return f"{who} is alive and refreshed the lease {age:.0f}s ago"
    if registered is not None and not registered(holder):
        return None
    return f"{who} is still in the cluster and refreshed the lease {age:.0f}s ago"


class Lease:
    """``WORK/analysis/<key>.lease``: who may write this video's log."""

    def __init__(self, path: Path, me: dict) -> None:
        self.path, self.me = Path(path), me
        self.held = False
        self.took_over: dict | None = None

    def _read(self) -> tuple[dict | None, float]:
        try:
            age = time.time() - self.path.stat().st_mtime
            text = self.path.read_text()
        except FileNotFoundError:
            return None, -1.0
        except OSError:
            return {}, 0.0
        try:
            return json.loads(text), age
        except ValueError:
            return {}, age  # being written (or its writer died right after creating it)

    def acquire(self, registered: Callable[[dict], bool] | None = None) -> None:
        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder, age = self._read()
                if age < 0:
                    continue  # released meanwhile
                if not holder and age < 10:
                    time.sleep(0.2)  # created, content not written yet
                    continue
                why = holder_alive(holder or {}, age, registered)
                if why:
                    raise LeaseHeld(f"{self.me['video']} is being analysed by {why}; if that process is gone, "
                                    f"wait {LEASE_TTL:.0f}s or delete {self.path}") from None
                tomb = self.path.with_name(f"{self.path.name}.stale-{self.me['token']}")
                try:
                    os.rename(self.path, tomb)  # only one contender wins the rename
                except FileNotFoundError:
                    continue
                tomb.unlink(missing_ok=True)
                self.took_over = holder or {}
                continue
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps({**self.me, "acquired": time.time()}))
                f.flush()
                os.fsync(f.fileno())
            self.held = True
            return
        raise LeaseHeld(f"could not take the lease {self.path} (contended)")

    def check(self, refresh: bool) -> None:
        """Raise :class:`LeaseLost` unless this task still holds the lease; touch it."""
        holder, _ = self._read()
        if holder is not None and holder == {}:
            return  # unreadable for a moment: check again next time
        if holder is None or holder.get("token") != self.me["token"]:
            self.held = False
            raise LeaseLost(f"{self.me['video']}: another task took the lease over; stopping this one")
        if refresh:
            os.utime(self.path)

    def release(self) -> None:
        if self.held:
            holder, _ = self._read()
            if holder and holder.get("token") == self.me["token"]:
                self.path.unlink(missing_ok=True)
            self.held = False


def fence(log_path: Path) -> None:
    """Copy the log and rename the copy over it, so a process still holding the old
    file cannot add to the one we resume (raise LeaseHeld where the OS refuses)."""
    if not log_path.exists():
        return
    tmp = log_path.with_name(f".{log_path.name}.fence-{os.getpid()}")
    shutil.copyfile(log_path, tmp)
    try:
        replace_with_retry(tmp, log_path)
    except PermissionError as ex:
        tmp.unlink(missing_ok=True)
        raise LeaseHeld(f"{log_path} is still open in another process; not taking it over") from ex
