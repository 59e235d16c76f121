"""What a person (or a script) sees of a run: rich renderables built from
``RunStats`` snapshots, a live dashboard on a terminal, plain timestamped lines
elsewhere, JSON lines for scripts, and the summary table at the end.

The dashboard only reads snapshots the coordinator publishes; it never drives
the engine, and workers never render.

Anything user-derived (file names, reasons that quote them) reaches rich only as
``Text`` made by ``shown``: never parsed as markup or emoji codes, one line.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Callable

import msgspec
from rich.cells import cell_len
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from facecut.fsio import display_name
from facecut.stats import RunStats


def hms(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(round(max(0.0, seconds)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _short(path: str, width: int = 38) -> str:
    """``path``'s end in at most ``width`` terminal cells (wide characters count two)."""
    if cell_len(path) <= width:
        return path
    tail = path[-(width - 1):]
    while cell_len(tail) > width - 1:
        tail = tail[1:]
    return "…" + tail


def shown(text: str, style: str = "") -> Text:
    """User-derived text for a rich table or panel: literal (no markup, no emoji
    codes) and on one line (``fsio.display_name``)."""
    return Text(display_name(text), style=style)


def _middle(name: str, width: int) -> str:
    """``name`` in at most ``width`` cells, its start and end kept (``host:port decoder-0``)."""
    if cell_len(name) <= width:
        return name
    head, tail = name[: (width - 1) // 2], name[-(width - 1 - (width - 1) // 2):]
    while cell_len(head) + cell_len(tail) > width - 1:
        head, tail = (head[:-1], tail) if cell_len(head) >= cell_len(tail) else (head, tail[1:])
    return head + "…" + tail


def _table(title: str, columns: list[tuple[str, str]], rows: list[list[str]], width: int,
           path_col: int | None = None, drop: tuple[int, ...] = ()) -> Table:
    """A dashboard table laid out for ``width`` cells. Figures keep their width
    (never cut); the first column (worker names) keeps its start and end within a
    quarter of the width; the columns in ``drop`` are left out, in that order, while
    the rest would not fit; column ``path_col`` holds user-derived paths and takes
    what is left, showing each path's end (the file name), literally."""
    if path_col is not None:
        rows = [[display_name(v) if c == path_col else v for c, v in enumerate(r)] for r in rows]
    widths = [max([cell_len(h), *(cell_len(r[c]) for r in rows)]) for c, (h, _) in enumerate(columns)]
    widths[0] = min(widths[0], max(12, width // 4))
    keep = list(range(len(columns)))

    def need() -> int:
        return sum(8 if c == path_col else widths[c] for c in keep) + 2 * len(keep)

    for c in drop:
        if need() <= width:
            break
        keep.remove(c)
    if path_col is not None:
        rest = width - need() + 8
        widths[path_col] = max(8, min(widths[path_col], rest))
    t = Table(title=title, title_justify="left", box=None, padding=(0, 1))
    for c in keep:
        header, just = columns[c]
        t.add_column(header, justify=just, no_wrap=True, min_width=widths[c], max_width=widths[c],
                     overflow="ellipsis")
    for r in rows:
        t.add_row(*(shown(_short(r[c], widths[c])) if c == path_col else
                    _middle(r[c], widths[c]) if c == 0 else r[c] for c in keep))
    return t


class _Dashboard:
    """The dashboard of one snapshot, laid out for the width it is printed in."""

    def __init__(self, snap: RunStats) -> None:
        self.snap = snap

    def __rich_console__(self, console, options):
        yield _layout(self.snap, options.max_width)


def render(snap: RunStats) -> _Dashboard:
    """The dashboard for one snapshot (pure: the same snapshot and width give the same text)."""
    return _Dashboard(snap)


def _layout(snap: RunStats, width: int) -> Group:
    done = snap.videos_done + snap.videos_partial + snap.videos_failed
    head = Text.assemble(
        (f"facecut {snap.stage}", "bold"),
        f"  elapsed {hms(snap.elapsed)}",
        f"  speed {snap.speed:.1f}x real time",
        f"  ETA {hms(snap.eta_s)}",
    )
    batch = Text.assemble(
        "videos ", (f"{done}/{snap.videos_total}", "bold"),
        f" finished ({snap.videos_done} ok, {snap.videos_partial} partial, ",
        (f"{snap.videos_failed} failed", "red" if snap.videos_failed else ""),
        f")   video {snap.video_seconds_done / 3600:.2f}/{snap.video_seconds_total / 3600:.2f} h",
        f"   samples {snap.samples_written}   faces {snap.faces_found}",
    )

    dec = _table("decoders", [("", "left"), ("video", "left"), ("position", "right"), ("decode/s", "right"),
                              ("sample/s", "right"), ("ring full", "right"), ("CPU", "right")], [
        [d.name, d.video or "-", f"{hms(d.position)}/{hms(d.duration)}" if d.video else "idle",
         f"{d.decode_fps:.0f}", f"{d.sample_fps:.1f}", f"{d.blocked_s:.1f}s", f"{d.cpu_s:.1f}s"]
        for d in snap.decoders], width, path_col=1, drop=(4, 3, 5))
    inf = _table("inference", [("", "left"), ("provider", "left"), ("model", "left"), ("frames/s", "right"),
                               ("faces/s", "right"), ("fill", "right"), ("ring empty", "right"), ("CPU", "right")], [
        [i.name, i.provider.replace("ExecutionProvider", ""), i.model, f"{i.fps:.1f}", f"{i.faces_per_s:.1f}",
         f"{100 * i.batch_fill:.0f}%", f"{i.starved_s:.1f}s", f"{i.cpu_s:.1f}s"] for i in snap.infer], width,
        drop=(4, 1, 5, 6))

    r = snap.ring
    bar = ProgressBar(total=max(1, r.slots), completed=r.ready + r.at_infer, width=30)
    ring = Table.grid(padding=(0, 1))
    ring.add_row(
        Text("ring"), bar,
        Text(f"{r.ready} ready, {r.at_infer} in inference, {r.at_decoders} at decoders, {r.free} free"
             f" of {r.slots} x {r.slot_mib:.1f} MiB"),
    )
    bottleneck = Text.assemble("bottleneck ", (snap.bottleneck or "-", "bold"))

    parts = [head, batch, dec, inf, ring, bottleneck]
    later = []
    if snap.tracks is not None:
        later.append(f"tracks {snap.tracks}")
    if snap.segments is not None:
        later.append(f"accepted segments {snap.segments}")
    if snap.clips_cut is not None:
        later.append(f"clips cut {snap.clips_cut}/{snap.clips_total or 0}")
    if snap.report:
        later.append(f"report {display_name(snap.report)}")
    if later:
        parts.append(Text("   ".join(later)))
    if snap.warnings:
        w = Text("\n".join(_short(display_name(x), 110) for x in snap.warnings[-4:]), style="yellow")
        parts.append(Panel(w, title="warnings", title_align="left", border_style="yellow"))
    return Group(*parts)


def plain_line(snap: RunStats) -> str:
    done = snap.videos_done + snap.videos_partial + snap.videos_failed
    fps = sum(i.fps for i in snap.infer)
    return (
        f"{time.strftime('%H:%M:%S')} {snap.stage}: videos {done}/{snap.videos_total}"
        f" ({snap.videos_failed} failed)  {snap.video_seconds_done / 60:.1f}/{snap.video_seconds_total / 60:.1f} min"
        f"  {snap.speed:.1f}x  infer {fps:.1f} fps  ring {snap.ring.ready}/{snap.ring.slots}"
        f"  {snap.bottleneck or '-'}  ETA {hms(snap.eta_s)}"
    )


class Reporter:
    """Receives snapshots; shows them as a live dashboard, plain lines or JSON lines.

    mode: "live" (a terminal), "plain" (lines every ``every`` seconds to stderr),
    "json" (JSON lines to stdout, about once a second), "quiet".
    """

    def __init__(self, mode: str = "auto", *, every: float = 10.0, console: Console | None = None) -> None:
        if mode == "auto":
            mode = "live" if sys.stderr.isatty() else "plain"
        self.mode = mode
        self.every = every if mode == "plain" else 1.0
        self.console = console or Console(stderr=True)
        self.snap: RunStats | None = None
        self._last = 0.0
        self._live: Live | None = None
        self._handlers: list[tuple[logging.Handler, int]] = []

    def __enter__(self) -> "Reporter":
        if self.mode == "live":
            self._live = Live(get_renderable=self._renderable, console=self.console, refresh_per_second=4,
                              transient=False, redirect_stderr=False, redirect_stdout=False)
            self._live.__enter__()
            # Log records would tear the layout: while live, stderr handlers only
            # take errors; warnings are shown in the dashboard's panel.
            for h in logging.getLogger().handlers:
                if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) in (sys.stderr, sys.stdout):
                    self._handlers.append((h, h.level))
                    h.setLevel(logging.ERROR)
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)
            self._live = None
        for h, level in self._handlers:
            h.setLevel(level)
        self._handlers.clear()

    def _renderable(self):
        return render(self.snap) if self.snap is not None else Text("starting…")

    def __call__(self, snap: RunStats) -> None:
        self.snap = snap
        if self.mode in ("live", "quiet"):
            return
        if snap.time - self._last < self.every:
            return
        self._last = snap.time
        if self.mode == "json":
            sys.stdout.write(msgspec.json.encode(snap).decode() + "\n")
            sys.stdout.flush()
        else:
            self.console.print(plain_line(snap), highlight=False, soft_wrap=True)

    def final(self, snap: RunStats | None) -> None:
        """Show the last snapshot once more (so the summary matches the end state)."""
        if snap is not None:
            self._last = 0.0
            self(snap)


def summary_table(rows: list[dict], title: str = "summary") -> Table:
    """Per source: status, duration, clips, reason; then totals."""
    t = Table(title=title, title_justify="left")
    for col, just in [("source", "left"), ("status", "left"), ("duration", "right"), ("clips", "right"),
                      ("clip time", "right"), ("reason", "left")]:
        t.add_column(col, justify=just, overflow="fold" if col == "reason" else "ellipsis",
                     no_wrap=col != "reason")
    colour = {"ok": "green", "partial": "yellow", "failed": "red", "pending": "dim", "skipped": "dim"}
    tot_d = tot_c = tot_s = 0.0
    for r in rows:
        st = r.get("status", "")
        t.add_row(shown(r["source"]), Text(st, colour.get(st, "")),
                  hms(r.get("duration", 0.0)), str(r.get("clips", 0)), hms(r.get("clip_seconds", 0.0)),
                  shown(r.get("reason", "")))
        tot_d += r.get("duration", 0.0)
        tot_c += r.get("clips", 0)
        tot_s += r.get("clip_seconds", 0.0)
    t.add_section()
    share = f" ({100 * tot_s / tot_d:.1f}% of input)" if tot_d else ""
    t.add_row(f"{len(rows)} sources", "", hms(tot_d), str(int(tot_c)), hms(tot_s), share)
    return t


def print_json_lines(objs, out=None) -> None:
    out = out or sys.stdout
    for o in objs:
        out.write(msgspec.json.encode(o).decode() + "\n")


StatsCallback = Callable[[RunStats], None]
