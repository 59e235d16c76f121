"""What the commands share besides their options: exit codes from errors, the
work folder's lock, logs that keep names on one line, and printed tables.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
from pathlib import Path

import click

from facecut.errors import EXIT_INTERRUPTED, EXIT_OK, FacecutError

log = logging.getLogger("facecut")



class OneLineNames(logging.Filter):
    """Names stay on their log line: the text of a record whose message is one
    line, and every string, path or exception argument, goes through
    ``fsio.display_name`` (no newline, escape sequence or undecodable byte of a
    file name reaches a log). A message written over several lines on purpose
    (a worker's traceback) is left alone."""

    def filter(self, record: logging.LogRecord) -> bool:
        from facecut.fsio import display_name

        if isinstance(record.msg, str) and "\n" not in record.msg:
            record.msg = display_name(record.msg)
            if isinstance(record.args, tuple):
                record.args = tuple(display_name(str(a)) if isinstance(a, str | os.PathLike | BaseException) else a
                                    for a in record.args)
        return True

_ONE_LINE = OneLineNames()


def handle_errors(fn):
    """Map facecut errors to exit codes; Ctrl-C to 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            code = fn(*args, **kwargs)
        except FacecutError as ex:
            click.echo(f"error: {ex}", err=True)
            sys.exit(ex.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        sys.exit(code or EXIT_OK)

    return wrapper


def writes_work(name: str):
    """Hold WORK's lock (facecut.worklock) while the command runs: one writer per
    work folder; a second one exits 2 saying who holds it."""

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            from facecut.worklock import WorkLock

            with WorkLock(Path(kwargs["work"]), f"facecut {name}"):
                return fn(*args, **kwargs)

        return wrapper

    return deco


def _scan_progress(every: float = 2.0):
    """A scan progress callback printing 'scan: N/M files probed' at most every few seconds."""
    last = [time.perf_counter()]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last[0] >= every or (done == total and total >= 200):
            last[0] = now
            click.echo(f"scan: {done}/{total} files probed", err=True)

    return progress


def _print_scan(result) -> None:
    from facecut.dashboard import hms, shown
    from facecut.fsio import ignored_summary
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=shown(f"scan of {result.input_dir}"), title_justify="left")
    for col, kw in [
        ("file", {"no_wrap": True}),
        ("status", {}),
        ("duration", {"justify": "right"}),
        ("size", {}),
        ("fps", {"justify": "right"}),
        ("codec", {}),
        ("notes / reason", {}),
    ]:
        table.add_column(col, **kw)
    hours = 0.0
    for v in result.videos:
        if v.status == "ok":
            hours += v.duration / 3600
            w, h = v.display_size
            notes = ", ".join(
                n
                for n in [
                    f"rot {v.rotation}" if v.rotation else "",
                    "VFR" if v.vfr else "",
                    f"audio {len(v.audio)}" if v.audio else "no audio",
                    f"SAR {v.sar}" if v.sar != "1:1" else "",
                ]
                if n
            )
            table.add_row(
                shown(v.path), Text("ok", "green"), hms(v.duration), f"{w}x{h}",
                f"{v.fps:.3f}".rstrip("0").rstrip("."), shown(v.codec), shown(notes),
            )
        elif v.status == "duplicate":
            table.add_row(shown(v.path), Text("duplicate", "yellow"), hms(v.duration), "", "", shown(v.codec),
                          shown(v.reason))
        else:
            table.add_row(shown(v.path), Text("failed", "red"), "", "", "", "", shown(v.reason))
    failed = sum(v.status == "failed" for v in result.videos)
    dups = sum(v.status == "duplicate" for v in result.videos)
    console = Console()
    console.print(table)
    ignored = ignored_summary(result.ignored)
    console.print(shown(
        f"{len(result.videos)} files, {len(result.videos) - failed - dups} ok ({hours:.2f} h of video), "
        f"{failed} failed, " + (f"{dups} duplicate(s) not analysed again, " if dups else "")
        + f"{len(result.skipped)} skipped by filter/pattern" + (f", {ignored}" if ignored else "")
    ))


def _reporter(no_dashboard: bool, json_progress: bool):
    from facecut.dashboard import Reporter

    if json_progress:
        return Reporter("json")
    return Reporter("plain" if no_dashboard else "auto")


def _log_to_work(work: Path, command: str) -> None:
    """Also log to WORK/logs/<command>-<time>.log (INFO and up)."""
    import time

    from facecut.workdir import WorkDir

    logs = WorkDir(work).ensure().logs_dir
    handler = logging.FileHandler(logs / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}.log", encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.addFilter(_ONE_LINE)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO:
        for h in root.handlers:
            if h is not handler and h.level == logging.NOTSET:
                h.setLevel(root.level)
        root.setLevel(logging.INFO)


def _print_cut(result, streamed: dict[str, int] | None = None) -> None:
    """One line per source saying what happened to its clips. ``streamed``: clips
    `run` cut per source while the analysis was still running (the final pass
    finds them there: not failures, not leftovers of an earlier run)."""
    from facecut.fsio import display_name

    streamed = streamed or {}
    for sc in result.sources:
        early = min(streamed.get(sc.source, 0), sc.skipped)
        counts = [(sc.written, "written"), (early, "cut while analysing"),
                  (sc.skipped - early, "already there"), (sc.failed, "failed")]
        said = ", ".join(f"{n} {what}" for n, what in counts if n)
        if sc.status == "skipped" and early in (0, sc.skipped):  # nothing to do: every clip is there
            line = f"{_clips(sc.clips)}, " + ("cut while analysing" if early else "already there")
        else:
            line = ("" if sc.status == "skipped" else f"{sc.status}: ") + f"{_clips(sc.clips)}: {said or 'none'}"
        click.echo(display_name(f"{sc.source}: {line}" + (f" ({sc.reason})" if sc.reason else "")), err=True)
        for note in sc.notes:
            click.echo(f"  note: {display_name(note)}", err=True)
        for cid, why in sc.failures.items():
            click.echo(f"  clip {display_name(cid)}: {display_name(why)}", err=True)


def _clips(n: int) -> str:
    return f"{n} clip" + ("" if n == 1 else "s")
