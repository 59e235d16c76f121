"""Stage 8, report: one self-contained HTML page from ``WORK/plan.json`` and the
thumbnails the analysis captured.

Writes ``WORK/report/index.html`` (atomically) and ``WORK/report/thumbs/``
(hard links to, else copies of, ``WORK/thumbs/<key>/<k>.jpg``). The page opens
from disk without a server: every link is relative to the report folder, CSS
is inline, nothing is fetched from the network, and the sources are never
decoded a second time.

Works before ``cut`` (clips have no ``file`` yet: no links, no previews) and
after (a link and a ``<video preload="none">`` preview per clip, starting at
the lead-in through a media fragment ``#t=<lead_in>``). Built for batches of
hundreds of clips: thumbnails are ``loading="lazy"``, videos load nothing
until played, and off-screen cards skip layout (``content-visibility``).

Clips are ranked by their swap quality (``Clip.quality``: a score badge and its
parts in words; best first by default), and when the analysis model gave
embeddings the page opens with the people groups (``Plan.people``): a face per
person, cropped from a synced thumbnail in CSS alone. The bar (data/report_bar.html,
data/report.js) filters, sorts and groups cards by source, by person or not at
all; its initial state can be given in the query string
(``index.html?group=none&minscore=60``). Older plans (no quality, no people)
render as before. Cards, sections and people: facecut.reportcards.

Every string that comes from a user (file names, reasons, parameters) goes
through ``html.escape``; every path in a URL through ``urllib.parse.quote``.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections import Counter
from importlib.resources import files
from pathlib import Path

from facecut.fsio import atomic_write_text, ignored_summary, replace_with_retry, temp_name
from facecut.records import Clip, Plan, ScanResult, SourcePlan
from facecut.reportcards import buckets, people_section, person_options, source_section
from facecut.reportsvg import OTHER_COLOUR, REASON_COLOURS, e
from facecut.workdir import WorkDir

log = logging.getLogger(__name__)


def _fmt_date(unix: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(unix)) if unix else "?"


# --------------------------------------------------------------------------- inputs


def _thumb_source(work: WorkDir, thumb: str | None) -> Path | None:
    """A captured thumbnail (a plan's path, relative to WORK), if it exists inside WORK/thumbs."""
    if not thumb:
        return None
    p = Path(thumb)
    p = (p if p.is_absolute() else work.root / p).resolve()
    thumbs = work.thumbs_dir.resolve()
    if not p.is_relative_to(thumbs):
        log.warning("thumbnail outside %s ignored: %s", thumbs, thumb)
        return None
    return p if p.is_file() else None


def _place(src: Path, dst: Path) -> None:
    """Make ``dst`` hold ``src``'s bytes: a hard link when the filesystem allows
    (no copy), else a copy; atomically, so a reader never sees half a JPEG."""
    if dst.exists():
        try:
            if os.path.samefile(src, dst):
                return
        except OSError:
            pass
        s, d = src.stat(), dst.stat()
        if s.st_size == d.st_size and s.st_mtime_ns <= d.st_mtime_ns:
            return  # an earlier copy of the same thumbnail
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(dst)
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copy2(src, tmp)
        replace_with_retry(tmp, dst)
    finally:
        if tmp.exists():
            tmp.unlink()


def _sync_thumbs(work: WorkDir, plan: Plan) -> dict[str, str]:
    """Place every thumbnail the page shows (each clip's, each person's face)
    under WORK/report/thumbs (same sub-path as under WORK/thumbs) and drop stale
    ones. Returns the plan's thumbnail path -> URL relative to the report folder."""
    report_thumbs = work.report_dir / "thumbs"
    thumbs_root = work.thumbs_dir.resolve()
    urls: dict[str, str] = {}
    wanted: set[Path] = set()
    shown = [c.thumb for c in plan.clips] + [p.face.thumb for p in plan.people if p.face is not None]
    for thumb in dict.fromkeys(t for t in shown if t):
        src = _thumb_source(work, thumb)
        if src is None:
            continue
        rel = src.relative_to(thumbs_root)
        dst = report_thumbs / rel
        try:
            _place(src, dst)
        except OSError as ex:
            log.warning("cannot place thumbnail %s: %s", src, ex)
            continue
        wanted.add(dst)
        urls[thumb] = "thumbs/" + rel.as_posix()
    if report_thumbs.is_dir():
        for p in sorted(report_thumbs.rglob("*"), reverse=True):  # files before their folders
            if p.is_file() and p not in wanted:
                p.unlink()
            elif p.is_dir() and not any(p.iterdir()):
                p.rmdir()
    return urls


# --------------------------------------------------------------------------- page parts

COLLAPSE_ABOVE = 300  # clips in the whole report: beyond this every source starts collapsed
COLLAPSE_SOURCE = 60  # clips of one source: beyond this that source starts collapsed

# The page's style, and its filter/sort bar with the script behind it (engine/data/).
# The script reads only numbers (data-* attributes of the cards and faces) and the
# lower-cased source path through dataset (text, never markup).
def _asset(name: str) -> str:
    return (files("facecut.data") / name).read_text(encoding="utf-8").strip()


def render(
    plan: Plan,
    *,
    scan: ScanResult | None,
    thumbs: dict[str, str],
    out_dir: Path | None,
    report_dir: Path,
    work_root: Path,
) -> str:
    """The whole page as a string (pure: touches no files except to check that
    clip files exist)."""
    by_source: dict[str, list[Clip]] = {}
    for c in sorted(plan.clips, key=lambda c: (c.source, c.start)):
        by_source.setdefault(c.source, []).append(c)
    in_plan = {s.path for s in plan.sources}
    scan_failed = [
        v for v in (scan.videos if scan else []) if v.status in ("failed", "duplicate") and v.path not in in_plan
    ]

    counted = [s for s in plan.sources if s.status in ("ok", "partial")]
    input_s = sum(s.duration for s in counted)
    accepted_s = sum(c.end - c.start for c in plan.clips)
    share = accepted_s / input_s if input_s > 0 else 0.0
    rejected = Counter({r: n for r, n in plan.rejected.items() if n})
    if not rejected:  # older plans: count from the track summaries
        rejected = Counter(
            t.reason or "other" for s in plan.sources for t in s.tracks if t.status == "rejected"
        )
    reasons = sorted(rejected)
    problems = [
        (s.path, s.status, s.reason) for s in plan.sources if s.status in ("failed", "partial")
    ]
    problems += [(v.path, v.status, v.reason) for v in scan_failed]
    n_cut = sum(1 for c in plan.clips if c.file)

    kpis = [
        ("inputs", f"{len(plan.sources) + len(scan_failed)}"),
        ("input hours", f"{input_s / 3600:.2f}"),
        ("clips", f"{len(plan.clips)}" + (f" ({n_cut} cut)" if n_cut else "")),
        ("accepted minutes", f"{accepted_s / 60:.1f}"),
        ("share of input", f"{100 * share:.1f}%"),
        ("rejected tracks", f"{sum(rejected.values())}"),
        ("errors", f"{len(problems)}"),
    ] + ([("people", f"{len(plan.people)}")] if plan.people else [])
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>facecut report: {e(plan.input_dir or work_root)}</title>",
        f"<style>{_asset('report.css')}</style></head><body><header>",
        "<h1>facecut report</h1>",
        (
            f'<div class="meta">input {e(plan.input_dir or "?")} · work {e(work_root)}'
            f" · output {e(out_dir) if out_dir else 'not known (clips not linked)'}"
            f" · model {e(plan.model or '?')} · plan of {e(_fmt_date(plan.created))}"
            f" · report of {e(_fmt_date(time.time()))}</div>"
        ),
        '<div class="kpis">'
        + "".join(f'<div class="kpi">{e(k)}<b>{e(v)}</b></div>' for k, v in kpis)
        + "</div>",
    ]
    ignored = ignored_summary(scan.ignored) if scan else ""
    if ignored:  # files in the input folder that are not videos by their extension
        out.append(f'<div class="meta" id="ignored">{e(ignored)}</div>')
    if rejected:
        out.append(
            "<table><tr><th>rejected because</th><th>tracks</th></tr>"
            + "".join(
                f'<tr><td><i style="display:inline-block;width:10px;height:10px;background:'
                f'{REASON_COLOURS.get(r, OTHER_COLOUR)}"></i> {e(r)}</td><td>{rejected[r]}</td></tr>'
                for r in reasons
            )
            + "</table>"
        )
    if problems:
        out.append(
            '<h2 style="margin-top:14px">failed and partial inputs</h2>'
            '<table id="problems"><tr><th>file</th><th>status</th><th>reason</th></tr>'
            + "".join(
                f'<tr><td>{e(p)}</td><td><span class="st st-{e(st)}">{e(st)}</span></td>'
                f'<td class="reason">{e(r or "?")}</td></tr>'
                for p, st, r in problems
            )
            + "</table>"
        )
    if plan.clips:  # the filter/sort bar, its person select listing the people groups
        out.append(_asset("report_bar.html").replace("<!--people-->", person_options(plan.people)))
    out.append("</header><main>")
    out.append(people_section(plan.people, len(plan.clips), thumbs))
    big = len(plan.clips) > COLLAPSE_ABOVE
    for src in plan.sources:
        clips = by_source.pop(src.path, [])
        out.append(source_section(src, clips, thumbs, out_dir, report_dir, big or len(clips) > COLLAPSE_SOURCE))
    for path, clips in by_source.items():  # clips whose source is missing from sources
        ghost = SourcePlan(
            path=path, key=clips[0].key, status="ok", reason="source not listed in the plan"
        )
        out.append(source_section(ghost, clips, thumbs, out_dir, report_dir, big))
    if plan.clips:
        out.append(buckets(plan.people))
    out.append(f"</main><script>{_asset('report.js')}</script></body></html>\n")
    return "\n".join(out)


def write_report(work: WorkDir, out_dir: Path | None = None) -> Path:
    """Write ``WORK/report/index.html`` and ``WORK/report/thumbs/``; return the page's path.

    ``out_dir``: the folder ``cut`` wrote clips to (``Clip.file`` is relative to
    it). Without it, ``plan.params["out_dir"]`` is used when the plan records
    one; otherwise the page lists clip files without links.
    """
    plan = work.load_plan()
    if out_dir is None:
        cut = plan.params.get("cut")
        recorded = cut.get("out_dir") if isinstance(cut, dict) else plan.params.get("out_dir")
        if isinstance(recorded, str):
            out_dir = Path(recorded)
    out_dir = Path(out_dir).expanduser().resolve() if out_dir is not None else None
    report_dir = work.report_dir
    report_dir.mkdir(parents=True, exist_ok=True)
    thumbs = _sync_thumbs(work, plan)
    page = render(
        plan,
        scan=work.load_scan(required=False),
        thumbs=thumbs,
        out_dir=out_dir,
        report_dir=report_dir.resolve(),
        work_root=work.root,
    )
    index = report_dir / "index.html"
    atomic_write_text(index, page)
    return index
