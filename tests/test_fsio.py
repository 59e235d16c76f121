"""Work-folder file primitives: atomic writes and the content fingerprint."""

from __future__ import annotations

import pytest

from facecut.fsio import MIB, atomic_path, atomic_write_bytes, fingerprint


def test_a_failed_atomic_write_leaves_neither_the_file_nor_a_temp(tmp_path):
    target = tmp_path / "sub" / "plan.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed mid-write")
    assert not target.exists() and list(target.parent.iterdir()) == []
    atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"new, half")
            raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old"  # the previous version stays whole
    assert [p.name for p in target.parent.iterdir()] == ["plan.json"]


def test_fingerprint_reads_size_head_and_tail(tmp_path):
    size = 3 * MIB
    base = bytearray(b"\0" * size)
    a = tmp_path / "a.bin"
    a.write_bytes(bytes(base))
    tail = bytearray(base)
    tail[-10] = 1  # the last MiB differs
    (tmp_path / "tail.bin").write_bytes(bytes(tail))
    head = bytearray(base)
    head[10] = 1
    (tmp_path / "head.bin").write_bytes(bytes(head))
    middle = bytearray(base)
    middle[size // 2] = 1  # only the middle: not read (a copy keeps its fingerprint cheaply)
    (tmp_path / "middle.bin").write_bytes(bytes(middle))
    (tmp_path / "longer.bin").write_bytes(bytes(base) + b"\0")
    fp = fingerprint(a)
    assert fingerprint(tmp_path / "tail.bin") != fp and fingerprint(tmp_path / "head.bin") != fp
    assert fingerprint(tmp_path / "longer.bin") != fp
    assert fingerprint(tmp_path / "middle.bin") == fp
    assert fp.startswith(f"{size:x}-")


def test_marking_a_folder_removes_its_marker_half_written_by_a_dead_run(tmp_path):
    """A run killed while writing OUT's marker left `..facecut-output.<pid>.tmp`
    in OUT for good (seen in a kill/resume test). The next marking removes it, and
    nothing that is not its own or whose writer lives."""
    import os

    from facecut.fsio import OUT_MARKER, mark_folder

    dead = tmp_path / f".{OUT_MARKER}.999999999.tmp"
    live = tmp_path / f".{OUT_MARKER}.{os.getppid()}.tmp"  # a live process (not this one: its own temp name)
    other = tmp_path / ".notes.txt.999999999.tmp"
    for p in (dead, live, other):
        p.write_text("half")
    mark_folder(tmp_path, OUT_MARKER)
    assert (tmp_path / OUT_MARKER).is_file()
    assert not dead.exists() and live.exists() and other.exists()
