"""Dump or summarise a facecut append-only log (``facecut.logio`` format).

    python -m facecut.tools.logdump PATH [--json] [--tail N] [--stats]

Records are decoded generically (``msgspec.msgpack.decode``), so any payload is
shown, whatever its Struct; bytes fields (embeddings) print as ``<N bytes>``.
The tag is the ``"t"`` key of a map record or the first element of an array
record (``array_like`` Structs) when it is a string or an integer.

``--stats`` prints the file size, record counts by tag and any torn tail; it
prints records only when ``--tail`` is given too. The file is never modified: a
torn tail is reported, not repaired (the next ``LogWriter`` does that).

Exit codes: 0 fine (a torn tail included), 2 usage or missing file, 4 damage in
the middle of the log (records before it are still printed).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter, deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TextIO

import msgspec

from facecut.errors import EXIT_OK, EXIT_USAGE, LogCorruption
from facecut.logio import LogView

TAG_FIELD = "t"
UNTAGGED = "-"
UNDECODABLE = "?"


class _Bytes:
    """Stands in for a bytes value in the human-readable output."""

    __slots__ = ("n",)

    def __init__(self, n: int) -> None:
        self.n = n

    def __repr__(self) -> str:
        return f"<{self.n} bytes>"


def _sanitize(obj: Any, blob: Callable[[int], Any], json: bool) -> Any:
    """Replace bytes (and msgpack extensions) with short placeholders, recursively."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return blob(len(obj))
    if isinstance(obj, list):
        return [_sanitize(v, blob, json) for v in obj]
    if isinstance(obj, dict):
        return {
            (str(k) if json and not isinstance(k, str) else k): _sanitize(v, blob, json)
            for k, v in obj.items()
        }
    if isinstance(obj, msgspec.msgpack.Ext):
        return f"<ext {obj.code}: {len(obj.data)} bytes>"
    return obj


def tag_of(obj: Any) -> str | int | None:
    """The record tag: ``obj["t"]`` for a map, the first element for an array."""
    if isinstance(obj, dict):
        tag = obj.get(TAG_FIELD)
    elif isinstance(obj, list) and obj:
        tag = obj[0]
    else:
        return None
    if isinstance(tag, str) or (isinstance(tag, int) and not isinstance(tag, bool)):
        return tag
    return None


def _decode(payload: memoryview) -> tuple[Any, str | int | None, str | None]:
    """(object, tag, error) for one payload; undecodable payloads are reported, not fatal."""
    try:
        obj = msgspec.msgpack.decode(payload)
    except msgspec.DecodeError as ex:
        return None, None, str(ex)
    return obj, tag_of(obj), None


def _print_records(entries: Iterable[tuple[int, memoryview]], as_json: bool, out: TextIO) -> None:
    for offset, payload in entries:
        obj, tag, error = _decode(payload)
        if as_json:
            record = _sanitize(obj, lambda n: f"<{n} bytes>", json=True)
            line: dict[str, Any] = {"offset": offset, "tag": tag, "record": record}
            if error is not None:
                line["error"] = f"undecodable {len(payload)} bytes: {error}"
            out.write(msgspec.json.encode(line).decode() + "\n")
        elif error is not None:
            out.write(f"{offset:>12}  {UNDECODABLE}  <undecodable {len(payload)} bytes: {error}>\n")
        else:
            shown = UNTAGGED if tag is None else tag
            out.write(f"{offset:>12}  {shown}  {_sanitize(obj, _Bytes, json=False)!r}\n")


def _print_stats(
    path: Path,
    view: LogView,
    records: int,
    payload_bytes: int,
    by_tag: Counter[str],
    as_json: bool,
    out: TextIO,
) -> None:
    end = view.end if view.end is not None else 0
    torn = view.size - end
    ranked = dict(sorted(by_tag.items(), key=lambda kv: (-kv[1], kv[0])))
    if as_json:
        stats = {
            "path": str(path),
            "size": view.size,
            "records": records,
            "payload_bytes": payload_bytes,
            "valid_end": end,
            "torn_tail_bytes": torn,
            "by_tag": ranked,
        }
        out.write(msgspec.json.encode(stats).decode() + "\n")
        return
    out.write(f"path        {path}\n")
    out.write(f"file size   {view.size} bytes\n")
    out.write(f"records     {records} ({payload_bytes} payload bytes, valid up to byte {end})\n")
    if torn:
        out.write(
            f"torn tail   {torn} bytes at byte offset {end} (the next LogWriter truncates "
            f"them; file not modified)\n"
        )
    else:
        out.write("torn tail   none\n")
    out.write("by tag\n")
    width = max((len(t) for t in ranked), default=0)
    out.writelines(f"  {tag:<{width}}  {count}\n" for tag, count in ranked.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m facecut.tools.logdump",
        description="Print the records of a facecut log, or summarise it (read-only).",
    )
    parser.add_argument("path", type=Path, help="log file")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--tail", type=int, metavar="N", help="only the last N records")
    parser.add_argument("--stats", action="store_true", help="counts by tag, file size, torn tail")
    args = parser.parse_args(argv)
    if args.tail is not None and args.tail < 0:
        parser.error(f"--tail expects N >= 0, got {args.tail}")
    out = sys.stdout

    try:
        view = LogView.read(args.path)
    except FileNotFoundError:
        print(f"error: {args.path}: no such file", file=sys.stderr)
        return EXIT_USAGE
    except LogCorruption as ex:
        print(f"error: {ex}", file=sys.stderr)
        return ex.exit_code

    stream = not args.stats and args.tail is None
    kept: deque[tuple[int, memoryview]] = deque(maxlen=args.tail or 0)
    by_tag: Counter[str] = Counter()
    records = payload_bytes = 0
    failure: LogCorruption | None = None
    try:
        for offset, payload in view:
            records += 1
            payload_bytes += len(payload)
            if stream:
                _print_records([(offset, payload)], args.json, out)
            elif args.tail:
                kept.append((offset, payload))
            if args.stats:
                _, tag, error = _decode(payload)
                by_tag[UNDECODABLE if error else UNTAGGED if tag is None else str(tag)] += 1
    except LogCorruption as ex:
        failure = ex

    _print_records(kept, args.json, out)
    if args.stats and failure is None:
        _print_stats(args.path, view, records, payload_bytes, by_tag, args.json, out)
    elif not args.stats and failure is None and view.torn_bytes:
        print(
            f"note: {view.torn_bytes} bytes of torn tail at byte offset {view.end} not shown",
            file=sys.stderr,
        )
    if failure is not None:
        print(f"error: {failure}", file=sys.stderr)
        return failure.exit_code
    return EXIT_OK


if __name__ == "__main__":
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. `| head`: stop quietly, as other CLI tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 1
    sys.exit(code)
