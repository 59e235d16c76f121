"""facecut.logio: framing, torn-tail repair, corruption detection, kill safety, logdump.

Real files in tmp_path, no mocks. The records here are the tests' own tagged
Structs (tag field "t"), one array_like union and one map-like Struct, because
msgspec cannot decode a union that mixes the two.
"""

from __future__ import annotations

import json
import multiprocessing
import struct
import time
from pathlib import Path

import msgspec
import pytest
from msgspec import Struct

from facecut.errors import LogCorruption
from facecut.logio import MAGIC, LogView, LogWriter, iter_frames, iter_records, read_records
from facecut.tools import logdump


class Sample(Struct, tag="s", tag_field="t", array_like=True, gc=False, frozen=True):
    video: str
    seq: int
    emb: bytes | None = None


class Done(Struct, tag="d", tag_field="t", array_like=True, frozen=True):
    video: str
    samples: int


class Meta(Struct, tag="m", tag_field="t", frozen=True):  # map-like
    name: str
    blob: bytes = b""


Rec = Sample | Done


def sample(i: int, video: str = "a.mp4") -> Sample:
    return Sample(video, i, bytes([i % 256]) * (16 + i % 7))


def make_log(path: Path, records: list, batch: int = 50) -> list[int]:
    """Write ``records`` in flushed batches; return each frame's byte offset."""
    offsets = []
    with LogWriter(path) as w:
        for i, rec in enumerate(records):
            offsets.append(w.offset + w.pending_bytes)
            w.append(rec)
            if i % batch == batch - 1:
                w.flush()
    return offsets


def frame_at(data: bytes, offset: int) -> tuple[int, int]:
    """(length, crc) of the frame header at ``offset``."""
    return struct.unpack_from("<II", data, offset)


# --------------------------------------------------------------------------- basics


def test_roundtrip_many_records(tmp_path: Path) -> None:
    recs = [sample(i, f"v{i % 3}.mp4") for i in range(3000)]
    recs += [Done(f"v{k}.mp4", 1000) for k in range(3)]
    path = tmp_path / "deep" / "er" / "faces.log"  # parent folders are created
    make_log(path, recs, batch=97)

    assert path.read_bytes()[:8] == MAGIC
    assert read_records(path, Rec) == recs
    assert list(iter_records(path, Rec)) == recs
    frames = list(iter_frames(path))
    assert all(type(f) is bytes for f in frames)
    assert [msgspec.msgpack.decode(f, type=Rec) for f in frames] == recs


def test_map_like_struct_and_empty_log(tmp_path: Path) -> None:
    path = tmp_path / "meta.log"
    with LogWriter(path) as w:
        assert w.offset == len(MAGIC)
    assert path.read_bytes() == MAGIC
    assert read_records(path, Meta) == []
    metas = [Meta("x", b"\x00\x01"), Meta("y")]
    with LogWriter(path) as w:
        for m in metas:
            w.append(m)
    assert read_records(path, Meta) == metas


def test_append_after_reopen(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    make_log(path, [sample(i) for i in range(10)])
    size = path.stat().st_size
    with LogWriter(path) as w:
        assert w.truncated_bytes == 0
        assert w.offset == size
        w.append(Done("a.mp4", 12))
        w.append(sample(10))
        assert w.pending_bytes > 0
        assert path.stat().st_size == size  # buffered only
        w.flush()
        assert w.pending_bytes == 0
        assert w.offset == path.stat().st_size > size
        w.append(sample(11))
    assert read_records(path, Rec) == [sample(i) for i in range(10)] + [
        Done("a.mp4", 12),
        sample(10),
        sample(11),
    ]


def test_append_raw_equals_append(tmp_path: Path) -> None:
    recs = [sample(i) for i in range(40)] + [Done("a.mp4", 40)]
    a, b, c = tmp_path / "a.log", tmp_path / "b.log", tmp_path / "c.log"
    make_log(a, recs)
    enc = msgspec.msgpack.Encoder()
    with LogWriter(b) as w:
        for r in recs:
            w.append_raw(enc.encode(r))
    # The coordinator's path: payloads from another log (or process) framed unchanged.
    with LogWriter(c, fsync=True) as w:
        for i, payload in enumerate(iter_frames(a)):
            w.append_raw(memoryview(payload) if i % 2 else bytearray(payload))
    assert a.read_bytes() == b.read_bytes() == c.read_bytes()


def test_writer_api_edges(tmp_path: Path) -> None:
    path = tmp_path / "e.log"
    w = LogWriter(path)
    with pytest.raises(ValueError, match="payload"):
        w.append_raw(b"")
    w.append(sample(1))
    w.close()
    w.close()  # idempotent
    assert w.closed
    with pytest.raises(ValueError, match="closed"):
        w.append(sample(2))
    with pytest.raises(ValueError, match="closed"):
        w.flush()
    assert read_records(path, Rec) == [sample(1)]

    # Leaving the block by an exception still commits complete records.
    with pytest.raises(RuntimeError), LogWriter(path) as w:
        w.append(sample(2))
        raise RuntimeError("boom")
    assert read_records(path, Rec) == [sample(1), sample(2)]


def test_missing_file_and_wrong_magic(tmp_path: Path) -> None:
    missing = tmp_path / "nope.log"
    with pytest.raises(FileNotFoundError):
        read_records(missing, Rec)
    with pytest.raises(FileNotFoundError):
        iter_frames(missing)  # raised at call time, not at first next()
    with pytest.raises(FileNotFoundError):
        iter_records(missing, Rec)

    for content in (b"FCLOG02\n" + b"\0" * 20, b"{}\n", b"hello world, not a log"):
        bad = tmp_path / "bad.log"
        bad.write_bytes(content)
        with pytest.raises(LogCorruption, match="not a facecut log"):
            read_records(bad, Rec)
        with pytest.raises(LogCorruption, match="not a facecut log"):
            iter_frames(bad)
        with pytest.raises(LogCorruption, match="not a facecut log"):
            LogWriter(bad)
        assert bad.read_bytes() == content  # untouched


def test_interrupted_creation_is_repaired(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    for cut in range(len(MAGIC)):
        path.write_bytes(MAGIC[:cut])
        assert read_records(path, Rec) == []
        with LogWriter(path) as w:
            assert w.truncated_bytes == cut
            w.append(sample(cut))
        assert read_records(path, Rec) == [sample(cut)]


def test_record_of_wrong_type_names_offset(tmp_path: Path) -> None:
    path = tmp_path / "m.log"
    offsets = make_log(path, [sample(0), Done("a.mp4", 1), sample(2)])
    with pytest.raises(LogCorruption, match=f"offset {offsets[1]}.*does not decode"):
        read_records(path, Sample)
    it = iter_records(path, Sample)
    assert next(it) == sample(0)
    with pytest.raises(LogCorruption, match=f"offset {offsets[1]}"):
        next(it)


# --------------------------------------------------------------------------- repair


def test_torn_tail_at_every_cut_point_is_truncated(tmp_path: Path) -> None:
    full = tmp_path / "full.log"
    recs = [sample(i) for i in range(30)]
    offsets = make_log(full, recs, batch=7)
    data = full.read_bytes()
    last = offsets[-1]
    assert len(data) - last > 20

    path = tmp_path / "torn.log"
    for cut in range(last, len(data)):  # every cut point inside the last frame
        path.write_bytes(data[:cut])
        # Readers skip the torn tail without complaint and without touching the file.
        assert read_records(path, Rec) == recs[:-1]
        assert path.stat().st_size == cut
        with LogWriter(path) as w:
            assert w.truncated_bytes == cut - last
            assert w.offset == last
            assert path.stat().st_size == last
            w.append(Done("a.mp4", 29))
        assert read_records(path, Rec) == recs[:-1] + [Done("a.mp4", 29)]
        with LogWriter(path) as w:  # and the repaired file is clean
            assert w.truncated_bytes == 0


def test_torn_batch_keeps_its_complete_frames(tmp_path: Path) -> None:
    """A write cut short mid-batch: the complete frames of that batch survive."""
    full = tmp_path / "full.log"
    recs = [sample(i) for i in range(20)]
    offsets = make_log(full, recs, batch=20)  # one single write
    data = full.read_bytes()
    path = tmp_path / "torn.log"
    path.write_bytes(data[: offsets[13] + 5])
    with LogWriter(path) as w:
        assert w.offset == offsets[13]
    assert read_records(path, Rec) == recs[:13]


@pytest.mark.parametrize("where", ["payload", "crc", "length+1"])
def test_bad_last_frame_is_truncated(tmp_path: Path, where: str) -> None:
    path = tmp_path / "x.log"
    recs = [sample(i) for i in range(8)]
    offsets = make_log(path, recs)
    data = bytearray(path.read_bytes())
    last = offsets[-1]
    if where == "payload":
        data[-1] ^= 0x40
    elif where == "crc":
        data[last + 5] ^= 0x01
    else:  # a length one too large points past the end of the file
        n, crc = frame_at(data, last)
        struct.pack_into("<II", data, last, n + 1, crc)
    path.write_bytes(bytes(data))
    assert read_records(path, Rec) == recs[:-1]
    with LogWriter(path) as w:
        assert w.truncated_bytes == len(data) - last
        w.append(sample(99))
    assert read_records(path, Rec) == recs[:-1] + [sample(99)]


def test_zero_filled_tail_is_truncated(tmp_path: Path) -> None:
    """What a power loss can leave after an unsynced append: zeros, not frames."""
    path = tmp_path / "z.log"
    recs = [sample(i) for i in range(5)]
    make_log(path, recs)
    size = path.stat().st_size
    with path.open("ab") as f:
        f.write(b"\0" * 4096)
    assert read_records(path, Rec) == recs
    with LogWriter(path) as w:
        assert w.truncated_bytes == 4096
        assert w.offset == size


def _damage_cases(data: bytes, offsets: list[int]) -> dict[str, tuple[int, bytes]]:
    """Damage to frame 10 of 20 (followed by 9 valid frames): name -> (offset, file)."""
    k = offsets[10]
    n, _ = frame_at(data, k)
    cases = {}
    flipped = bytearray(data)
    flipped[k + 8 + n // 2] ^= 0x10
    cases["payload bit flip"] = (k, bytes(flipped))
    bad_crc = bytearray(data)
    bad_crc[k + 4] ^= 0x01
    cases["crc bit flip"] = (k, bytes(bad_crc))
    # Lengths that would make everything after look like a tail to cut.
    for name, length in [
        ("length past eof", len(data) - k),
        ("length huge", 0xFFFFFFF0),
        ("length zero", 0),
        ("length short", n - 3),
    ]:
        d = bytearray(data)
        struct.pack_into("<I", d, k, length)
        cases[name] = (k, bytes(d))
    zeros = bytearray(data)
    zeros[k : offsets[12]] = bytes(offsets[12] - k)  # two frames wiped, later ones intact
    cases["lost pages"] = (k, bytes(zeros))
    return cases


def test_damage_in_the_middle_raises(tmp_path: Path) -> None:
    src = tmp_path / "src.log"
    recs = [sample(i) for i in range(20)]
    offsets = make_log(src, recs)
    path = tmp_path / "x.log"
    for name, (offset, content) in _damage_cases(src.read_bytes(), offsets).items():
        path.write_bytes(content)
        pattern = f"{path.name}.*byte offset {offset}"
        with pytest.raises(LogCorruption, match=pattern):
            read_records(path, Rec)
        frames = iter_frames(path)
        assert [next(frames) for _ in range(10)] == list(iter_frames(src))[:10], name
        with pytest.raises(LogCorruption, match=pattern):
            next(frames)
        with pytest.raises(LogCorruption, match=pattern):
            LogWriter(path)
        assert path.read_bytes() == content, f"{name}: the writer must not modify a damaged log"


def test_view_reports_torn_bytes(tmp_path: Path) -> None:
    path = tmp_path / "v.log"
    offsets = make_log(path, [sample(i) for i in range(3)])
    path.write_bytes(path.read_bytes()[:-2])
    view = LogView.read(path)
    with pytest.raises(RuntimeError):
        view.torn_bytes  # noqa: B018 (unknown before iterating)
    assert [o for o, _ in view] == offsets[:2]
    assert view.end == offsets[2]
    assert view.torn_bytes == path.stat().st_size - offsets[2]


def test_failed_flush_is_rolled_back_and_retried(tmp_path: Path) -> None:
    """A write that fails halfway (here: file size limit) leaves no partial batch."""
    resource = pytest.importorskip("resource")  # POSIX
    import signal

    path = tmp_path / "full.log"
    with LogWriter(path) as w:
        w.append(sample(0))
        w.flush()
        committed = w.offset
        for i in range(1, 200):
            w.append(sample(i))
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
        try:
            resource.setrlimit(resource.RLIMIT_FSIZE, (committed + 1000, hard))
            with pytest.raises(OSError):
                w.flush()  # writes up to the limit, then fails
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            signal.signal(signal.SIGXFSZ, old_handler)
        assert path.stat().st_size == committed == w.offset  # the partial batch was cut back
        assert read_records(path, Rec) == [sample(0)]
        w.flush()  # the records were kept: retrying succeeds
    assert read_records(path, Rec) == [sample(i) for i in range(200)]


# --------------------------------------------------------------------------- kill -9


BATCH = 200
EMB = bytes(range(256)) * 4  # 1 KiB per record: batches of ~200 KiB, torn writes likely


def _writer_child(path: str, flushed) -> None:  # flushed: a shared mp.Value
    """Appends numbered records in flushed batches until killed."""
    with LogWriter(Path(path)) as w:
        seq = 0
        while True:
            for _ in range(BATCH):
                w.append(Sample("k.mp4", seq, EMB))
                seq += 1
            w.flush()
            flushed.value = seq  # only after the batch reached the OS


def test_killed_writer_leaves_every_flushed_batch(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    path = tmp_path / "kill.log"
    for _round in range(3):  # later rounds append to the repaired log
        before = read_records(path, Rec) if path.exists() else []
        flushed = ctx.Value("q", 0, lock=False)
        proc = ctx.Process(target=_writer_child, args=(str(path), flushed), daemon=True)
        proc.start()
        try:
            deadline = time.monotonic() + 60
            while flushed.value < 5 * BATCH and proc.is_alive():
                assert time.monotonic() < deadline, "child never flushed"
                time.sleep(0.002)
            assert proc.is_alive(), f"child exited early with {proc.exitcode}"
            proc.kill()  # SIGKILL on POSIX, TerminateProcess on Windows
        finally:
            proc.join(10)
        assert proc.exitcode is not None and proc.exitcode != 0
        committed = flushed.value

        got = read_records(path, Rec)
        new = got[len(before) :]
        assert got[: len(before)] == before
        assert [r.seq for r in new] == list(range(len(new)))  # contiguous, nothing lost
        assert len(new) >= committed
        assert all(r.emb == EMB for r in new)

        with LogWriter(path) as w:
            assert w.offset == path.stat().st_size
            w.append(Done("k.mp4", len(new)))
        assert read_records(path, Rec) == got + [Done("k.mp4", len(new))]


# --------------------------------------------------------------------------- logdump


def _mixed_log(path: Path) -> None:
    with LogWriter(path) as w:
        for i in range(5):
            w.append(sample(i))
        w.append(Done("a.mp4", 5))
        w.append(Meta("run", b"\x01\x02\x03"))
        w.append_raw(msgspec.msgpack.encode([1, 2, 3]))  # an int first element is a tag too
        w.append_raw(msgspec.msgpack.encode({"x": 1}))  # untagged map
        w.append_raw(b"\xc1")  # intact frame, invalid msgpack


def test_logdump_prints_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "d.log"
    _mixed_log(path)
    assert logdump.main([str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 10
    assert "  s  ['s', 'a.mp4', 0, <16 bytes>]" in lines[0]
    assert "  d  ['d', 'a.mp4', 5]" in lines[5]
    assert "  m  {'t': 'm', 'name': 'run', 'blob': <3 bytes>}" in lines[6]
    assert "  1  [1, 2, 3]" in lines[7]
    assert "  -  {'x': 1}" in lines[8]
    assert "undecodable 1 bytes" in lines[9]

    assert logdump.main([str(path), "--json", "--tail", "6"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["tag"] for r in rows] == ["s", "d", "m", 1, None, None]
    assert "undecodable" in rows[-1]["error"] and rows[-1]["record"] is None
    assert rows[0]["record"] == ["s", "a.mp4", 4, "<20 bytes>"]
    assert rows[2]["record"] == {"t": "m", "name": "run", "blob": "<3 bytes>"}
    assert rows[0]["offset"] > 8


def test_logdump_stats_and_torn_tail(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "d.log"
    _mixed_log(path)
    content = path.read_bytes()[:-4]  # tear the last frame
    path.write_bytes(content)

    assert logdump.main([str(path), "--stats"]) == 0
    out = capsys.readouterr().out
    assert f"file size   {len(content)} bytes" in out
    assert "records     9 " in out
    assert "torn tail   5 bytes at byte offset" in out
    assert "  s  5" in out and "  d  1" in out and "  m  1" in out
    assert path.read_bytes() == content  # read-only

    assert logdump.main([str(path), "--stats", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["by_tag"] == {"s": 5, "-": 1, "1": 1, "d": 1, "m": 1}
    assert stats["torn_tail_bytes"] == 5 and stats["size"] == len(content)

    assert logdump.main([str(path), "--tail", "1"]) == 0
    captured = capsys.readouterr()
    assert captured.out.count("\n") == 1 and "{'x': 1}" in captured.out
    assert "torn tail" in captured.err


def test_logdump_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert logdump.main([str(tmp_path / "missing.log")]) == 2
    assert "no such file" in capsys.readouterr().err

    path = tmp_path / "bad.log"
    offsets = make_log(path, [sample(i) for i in range(6)])
    data = bytearray(path.read_bytes())
    data[offsets[3] + 9] ^= 0xFF
    path.write_bytes(bytes(data))
    assert logdump.main([str(path)]) == LogCorruption.exit_code
    captured = capsys.readouterr()
    assert captured.out.count("\n") == 3  # records before the damage are shown
    assert f"byte offset {offsets[3]}" in captured.err
