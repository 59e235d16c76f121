"""Shared-memory frame ring: fixed-size slots of decoded pixels.

The coordinator creates the block and is the only one to unlink it (on Windows
the block lives as long as a handle is open, so the creator keeps its handle
for the whole run). Decoder and inference processes attach by name. Slot ids,
never pixels, travel between processes (over pipes, through the coordinator).

Slot layout: a 64-byte header (state, sequence number, height, width) then
``slot_bytes`` of HxWx3 uint8 BGR pixels. The header lets a reader check that
the slot still holds the frame it was told about (``seq``) -- a cheap guard
against a protocol bug silently feeding the wrong pixels to the model.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import sys
import zlib
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np

from facecut.errors import EnvironmentProblem
from facecut.procs import pid_alive

log = logging.getLogger(__name__)

PREFIX = "facecut"
HEADER = 64
FREE, WRITING, READY, READING = 0, 1, 2, 3
_HDR = np.dtype([("state", "<i4"), ("pad", "<i4"), ("seq", "<i8"), ("h", "<i4"), ("w", "<i4")])


def _scope() -> str:
    """Six hex digits naming this PID namespace: containers that share /dev/shm
    but not their PIDs never judge (or unlink) each other's rings by pid."""
    try:
        ident = f"ns{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:  # no /proc (macOS, Windows): one namespace per host
        import socket

        ident = socket.gethostname()
    return f"{zlib.crc32(ident.encode()):08x}"[:6]


def _segment_name(pid: int) -> str:
    # POSIX shm names are short on macOS (31 chars); keep it compact.
    return f"{PREFIX}_{_scope()}_{pid}_{secrets.token_hex(3)}"


def segment_pid(name: str) -> int | None:
    """The creator's pid of a ring segment made in *this* PID namespace, else None."""
    parts = name.split("_")
    if len(parts) != 4 or parts[0] != PREFIX or parts[1] != _scope():
        return None
    try:
        return int(parts[2])
    except ValueError:
        return None


def shm_free_bytes() -> int | None:
    """Free space of /dev/shm on Linux; None where shared memory is not a
    filesystem (Windows: backed by the page file)."""
    if sys.platform.startswith("linux") and Path("/dev/shm").is_dir():
        return shutil.disk_usage("/dev/shm").free
    return None


def remove_stale_segments() -> list[str]:
    """Unlink ring segments left in /dev/shm by facecut runs whose process is gone
    (a SIGKILL of the whole process group skips every cleanup). Linux only:
    on Windows a block disappears with its last handle."""
    removed: list[str] = []
    shm = Path("/dev/shm")
    if not (sys.platform.startswith("linux") and shm.is_dir()):
        return removed
    for p in shm.glob(f"{PREFIX}_*_*"):
        pid = segment_pid(p.name)
        if pid is not None and not pid_alive(pid):
            try:
                p.unlink()
                removed.append(p.name)
            except OSError:
                pass
    if removed:
        log.info("removed %d stale shared-memory segment(s): %s", len(removed), ", ".join(removed))
    return removed


class FrameRing:
    """``slots`` fixed-size frame slots in one shared-memory block.

    Create with :meth:`create` (owner) or :meth:`attach` (children). Pixel views
    are built on demand; nothing here is pickled but the name and sizes.
    """

    def __init__(self, shm: shared_memory.SharedMemory, slots: int, slot_bytes: int, owner: bool):
        self._shm = shm
        self.slots = slots
        self.slot_bytes = slot_bytes
        self.owner = owner
        self.stride = HEADER + slot_bytes
        buf = shm.buf
        self._headers = [
            np.ndarray((1,), dtype=_HDR, buffer=buf, offset=i * self.stride) for i in range(slots)
        ]

    @property
    def name(self) -> str:
        return self._shm.name

    @property
    def spec(self) -> tuple[str, int, int]:
        """What a child needs to attach: (name, slots, slot_bytes)."""
        return self.name, self.slots, self.slot_bytes

    @classmethod
    def create(cls, slots: int, slot_bytes: int) -> "FrameRing":
        if slots < 1 or slot_bytes < 1:
            raise ValueError(f"ring needs slots >= 1 and slot_bytes >= 1, got {slots}, {slot_bytes}")
        slot_bytes = -(-slot_bytes // 64) * 64
        size = slots * (HEADER + slot_bytes)
        free = shm_free_bytes()
        if free is not None and size > 0.9 * free:
            raise EnvironmentProblem(
                f"the frame ring needs {size / 2**20:.0f} MiB of shared memory but /dev/shm has "
                f"{free / 2**20:.0f} MiB free: use fewer --ring-slots or a smaller --max-side, "
                "or enlarge /dev/shm (Docker: --shm-size)"
            )
        try:
            shm = shared_memory.SharedMemory(name=_segment_name(os.getpid()), create=True, size=size)
        except OSError as ex:
            raise EnvironmentProblem(f"cannot create {size / 2**20:.0f} MiB of shared memory: {ex}") from ex
        # /dev/shm is sparse: reserve every page now, so a full tmpfs fails here with
        # a clear error instead of a SIGBUS in a decoder mid-run (or here, when
        # touching the pages is the only way).
        try:
            _reserve(shm, size)
        except OSError as ex:
            shm.close()
            shm.unlink()
            raise EnvironmentProblem(
                f"cannot reserve {size / 2**20:.0f} MiB of shared memory ({ex.strerror or ex}): use fewer "
                "--ring-slots or a smaller --max-side, or enlarge /dev/shm (Docker: --shm-size)"
            ) from ex
        ring = cls(shm, slots, slot_bytes, owner=True)
        for h in ring._headers:
            h["state"] = FREE
        return ring

    @classmethod
    def attach(cls, spec: tuple[str, int, int]) -> "FrameRing":
        name, slots, slot_bytes = spec
        shm = _attach_untracked(name)
        return cls(shm, slots, slot_bytes, owner=False)

    # ------------------------------------------------------------------ slots

    def pixels(self, slot: int, h: int, w: int) -> np.ndarray:
        """HxWx3 uint8 view of a slot's pixel area (no copy)."""
        if h * w * 3 > self.slot_bytes:
            raise ValueError(f"{w}x{h} frame does not fit a {self.slot_bytes}-byte slot")
        off = slot * self.stride + HEADER
        return np.ndarray((h, w, 3), np.uint8, buffer=self._shm.buf, offset=off)

    def mark(self, slot: int, state: int, seq: int | None = None, h: int = 0, w: int = 0) -> None:
        hdr = self._headers[slot]
        if seq is not None:
            hdr["seq"], hdr["h"], hdr["w"] = seq, h, w
        hdr["state"] = state

    def header(self, slot: int) -> tuple[int, int, int, int]:
        """(state, seq, h, w) of a slot."""
        hdr = self._headers[slot][0]
        return int(hdr["state"]), int(hdr["seq"]), int(hdr["h"]), int(hdr["w"])

    def write(self, slot: int, seq: int, image: np.ndarray) -> None:
        """Copy an HxWx3 image into a slot and mark it READY with ``seq``."""
        h, w = image.shape[:2]
        self.mark(slot, WRITING)
        np.copyto(self.pixels(slot, h, w), image)
        self.mark(slot, READY, seq, h, w)

    def read(self, slot: int, seq: int, out: np.ndarray | None = None) -> np.ndarray:
        """Copy a READY slot's pixels out (checking ``seq``) and return the copy."""
        state, got, h, w = self.header(slot)
        if state != READY or got != seq:
            raise RuntimeError(f"ring slot {slot}: expected READY seq {seq}, found state {state} seq {got}")
        self.mark(slot, READING)
        src = self.pixels(slot, h, w)
        if out is None:
            return src.copy()
        np.copyto(out, src)
        return out

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        self._headers = []
        try:
            self._shm.close()
        except BufferError:  # a view still exported somewhere; the OS frees it at exit
            pass

    def unlink(self) -> None:
        """Owner only: remove the block (a no-op on Windows, see module docstring)."""
        if not self.owner:
            raise RuntimeError("only the ring's creator unlinks it")
        try:
            self._shm.unlink()
        except FileNotFoundError:
            pass


def _reserve(shm: shared_memory.SharedMemory, size: int) -> None:
    """Allocate the block's pages up front: posix_fallocate on its /dev/shm file
    where there is one (an error, never a SIGBUS), else touch one byte per page."""
    path = Path("/dev/shm") / shm.name.lstrip("/")
    if hasattr(os, "posix_fallocate") and path.exists():
        fd = os.open(path, os.O_RDWR)
        try:
            os.posix_fallocate(fd, 0, size)
        finally:
            os.close(fd)
        return
    np.ndarray((size,), np.uint8, buffer=shm.buf)[::4096] = 0


def _attach_untracked(name: str) -> shared_memory.SharedMemory:
    """Attach without registering the block with the resource tracker.

    Before Python 3.13 every attach registers the name, and the tracker then
    unlinks (and warns about) a block the child never owned. 3.13 has
    ``track=False`` for exactly this.
    """
    if sys.version_info >= (3, 13):
        return shared_memory.SharedMemory(name=name, track=False)  # type: ignore[call-arg]
    from multiprocessing import resource_tracker

    original = resource_tracker.register
    resource_tracker.register = lambda *a, **k: None  # type: ignore[assignment]
    try:
        return shared_memory.SharedMemory(name=name)
    finally:
        resource_tracker.register = original  # type: ignore[assignment]
