"""The shared-memory frame ring: round trip through a real child process, and its guards."""

from __future__ import annotations

import multiprocessing
import sys
from pathlib import Path

import numpy as np
import pytest

from facecut.errors import EnvironmentProblem
from facecut.ring import FrameRing, segment_pid, shm_free_bytes


def _child_reads(spec, slot, seq, conn):
    ring = FrameRing.attach(spec)
    try:
        conn.send(ring.read(slot, seq).sum())
    finally:
        ring.close()


def test_a_frame_written_here_is_read_in_a_spawned_process():
    ring = FrameRing.create(2, 64 * 48 * 3)
    try:
        img = np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)
        ring.write(1, 7, img)
        ctx = multiprocessing.get_context("spawn")
        a, b = ctx.Pipe()
        p = ctx.Process(target=_child_reads, args=(ring.spec, 1, 7, b))
        p.start()
        assert a.recv() == img.sum()
        p.join(30)
        assert p.exitcode == 0
        assert segment_pid(ring.name) is not None  # named in this PID namespace
    finally:
        ring.close()
        ring.unlink()


def test_guards_refuse_the_wrong_slot_or_size():
    ring = FrameRing.create(2, 32 * 32 * 3)
    try:
        ring.write(0, 1, np.zeros((32, 32, 3), np.uint8))
        with pytest.raises(RuntimeError, match="expected READY seq 2"):
            ring.read(0, 2)  # a stale message: another frame is there now
        with pytest.raises(RuntimeError, match="found state 0"):
            ring.read(1, 1)  # never written
        with pytest.raises(ValueError, match="does not fit"):
            ring.write(1, 3, np.zeros((40, 40, 3), np.uint8))
        with pytest.raises(ValueError):
            FrameRing.create(0, 10)
    finally:
        ring.close()
        ring.unlink()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/dev/shm")
def test_a_ring_larger_than_dev_shm_is_refused_with_advice():
    free = shm_free_bytes()
    before = set(Path("/dev/shm").iterdir())
    with pytest.raises(EnvironmentProblem, match="--ring-slots|--shm-size"):
        FrameRing.create(4, free)  # four slots of all the free space
    assert set(Path("/dev/shm").iterdir()) == before  # nothing left behind
