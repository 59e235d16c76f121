"""Worker processes: spawn context, bootstrap, death reasons.

Every worker is started with the ``spawn`` method (the only one on Windows,
the default from Python 3.14 on Linux): expensive objects (ONNX sessions, open
containers) are created inside the child. A worker talks to the coordinator
over its own duplex pipe (no shared queues: a process killed while holding a
``multiprocessing.Queue`` lock hangs everyone else), in the messages of
facecut.protocol. Workers ignore SIGINT; the
coordinator decides when they stop. A worker whose coordinator disappears sees
EOF on its pipe and exits.
"""

from __future__ import annotations

import faulthandler
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from facecut import protocol

CTX = multiprocessing.get_context("spawn")
log = logging.getLogger(__name__)


class CoordinatorGone(Exception):
    """The coordinator's end of the pipe closed or its process died."""


def steady_heap() -> None:
    """Keep this process's heap instead of handing it back and faulting it in again.

    Workers allocate and free the same large arrays (frames, image pyramids, float
    copies) many times a second. By default glibc serves big arrays with fresh
    pages and trims its heap when they are freed, so each new array is paid again
    in page faults the kernel zeroes. Measured in ``analyze`` (720p, 2 inference
    processes): 0.7-1.3 s of system time per inference process, 0.2-0.7 s with
    arrays up to 32 MiB kept on a heap that is not trimmed below 256 MiB. glibc
    only; a no-op elsewhere (Windows, macOS, musl).
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
        libc.mallopt(m_mmap_threshold, 32 * 2**20)  # glibc's maximum
        libc.mallopt(m_trim_threshold, 256 * 2**20)
    except (OSError, AttributeError) as ex:  # not glibc
        log.debug("mallopt not available: %s", ex)


def cap_opencv_threads(n: int) -> None:
    """Give OpenCV's thread pool ``n`` threads in a worker process instead of one per
    core: with every core busy with a process the pool only adds hand-offs
    (measured, MTCNN on 720p with one thread: 33.7 -> 32.1 ms CPU per frame)."""
    import cv2

    cv2.setNumThreads(max(1, int(n)))


def _bootstrap(target: Callable, conn, args: tuple, fault_path: str | None, log_level: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    steady_heap()
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s")
    fault_file = None
    if fault_path:
        # Native crashes (a segfault inside FFmpeg or onnxruntime) leave a trace here.
        fault_file = open(fault_path, "w")
        faulthandler.enable(fault_file)
    try:
        target(conn, *args)
    except (EOFError, BrokenPipeError, ConnectionResetError, CoordinatorGone):
        pass  # the coordinator went away: nothing left to report to
    except BaseException:
        try:
            protocol.send(conn, protocol.Fatal(traceback.format_exc()))
        except Exception:
            pass
        sys.exit(1)
    finally:
        if fault_file is not None:
            faulthandler.disable()
            fault_file.close()
            if fault_path and os.path.getsize(fault_path) == 0:
                os.remove(fault_path)  # nothing crashed: leave no empty trace files


@dataclass
class Worker:
    """The coordinator's handle on one worker process."""

    name: str
    kind: str  # "decoder" | "infer"
    process: Any
    conn: Any
    fault_path: Path | None = None
    state: Any = None  # the coordinator's view: protocol.DecoderState | protocol.InferState

    @property
    def sentinel(self):
        return self.process.sentinel

    def send(self, msg: protocol.Message) -> bool:
        """Send, returning False instead of raising when the worker is gone."""
        try:
            protocol.send(self.conn, msg)
            return True
        except (BrokenPipeError, ConnectionResetError, EOFError, OSError):
            return False

    def death_reason(self) -> str:
        self.process.join(2.0)  # the sentinel fires a moment before exitcode is set
        code = self.process.exitcode
        reason = describe_exitcode(code)
        if self.fault_path and self.fault_path.exists():
            text = self.fault_path.read_text(errors="replace").strip()
            if text:
                first = next((ln for ln in text.splitlines() if ln.startswith("Fatal")), text.splitlines()[0])
                reason += f"; {first.strip()}"
        return reason


def describe_exitcode(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}"
    return f"exited with code {code}"


def start_worker(
    name: str, kind: str, target: Callable, args: tuple = (), *, fault_dir: Path | None = None
) -> Worker:
    parent_conn, child_conn = CTX.Pipe(duplex=True)
    fault_path = Path(fault_dir) / f"{name}.fault" if fault_dir else None
    proc = CTX.Process(
        target=_bootstrap,
        args=(target, child_conn, args, str(fault_path) if fault_path else None, logging.getLogger().level),
        name=name,
        daemon=True,
    )
    proc.start()
    child_conn.close()
    return Worker(name=name, kind=kind, process=proc, conn=parent_conn, fault_path=fault_path)


def stop_workers(workers: list[Worker], timeout: float = 5.0) -> None:
    """Ask politely, then terminate, then kill; always returns."""
    for w in workers:
        w.send(protocol.Stop())
    deadline = timeout
    for w in workers:
        w.process.join(max(0.1, deadline))
    for w in workers:
        if w.process.is_alive():
            w.process.terminate()
    for w in workers:
        w.process.join(2.0)
        if w.process.is_alive():
            w.process.kill()
            w.process.join(2.0)
        try:
            w.conn.close()
        except OSError:
            pass


def recv_or_parent_death(conn, timeout: float | None = None) -> protocol.Message | None:
    """Child side: wait for a message; raise CoordinatorGone when the parent dies.

    Returns None on timeout.
    """
    parent = multiprocessing.parent_process()
    waitables = [conn] + ([parent.sentinel] if parent is not None else [])
    ready = multiprocessing.connection.wait(waitables, timeout)
    if not ready:
        return None
    if conn in ready:
        return protocol.recv(conn)
    raise CoordinatorGone()


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def lower_priority() -> None:
    """Run this process below normal priority (POSIX nice +5; Windows BELOW_NORMAL)."""
    try:
        if os.name == "nt":
            import ctypes

            kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
            kernel32.SetPriorityClass(kernel32.GetCurrentProcess(), 0x00004000)  # BELOW_NORMAL_PRIORITY_CLASS
        else:
            os.nice(5)
    except (OSError, AttributeError) as ex:  # not fatal: only scheduling preference
        log.debug("could not lower priority: %s", ex)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (``os.kill(pid, 0)``
    on POSIX; ``OpenProcess`` on Windows, where ``os.kill`` would terminate it)."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    if os.name == "nt":
        import ctypes

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True
