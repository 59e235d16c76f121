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

Every string that comes from a user (file names, reasons, parameters) goes
through ``html.escape``; every path in a URL through ``urllib.parse.quote``.
"""

from __future__ import annotations

import html
import logging
import os
import shutil
import time
from collections import Counter
from pathlib import Path
from urllib.parse import quote


from facecut.fsio import atomic_write_text, ignored_summary, replace_with_retry, temp_name
from facecut.workdir import WorkDir
from facecut.records import Clip, Plan, ScanResult, SourcePlan

log = logging.getLogger(__name__)

# Colours of rejected tracks by reason (records.TrackSummary.reason); anything else: "other".
REASON_COLOURS = {
    "too_small": "#e67e22",
    "pose": "#9b59b6",
    "det_score": "#7f8c8d",
    "too_short": "#f1c40f",
    "too_long": "#e84393",
    "identity": "#c0392b",
}
OTHER_COLOUR = "#34495e"
ACCEPTED_COLOUR = "#27ae60"
CLIP_COLOUR = "#2471a3"

_LANES = 10  # track rows in a timeline; more overlapping tracks share rows
_LANE_H = 9  # px


def e(value) -> str:
    """HTML-escape anything (quotes included: safe inside attributes)."""
    return html.escape(str(value), quote=True)


def _url(rel_posix: str) -> str:
    """A relative POSIX path as an escaped URL attribute value (``#``, ``?``, ``%``
    and spaces in file names must not turn into fragments or queries)."""
    return e(quote(rel_posix, safe="/"))


def _fmt_time(seconds: float) -> str:
    """Seconds as ``h:mm:ss.s`` (``m:ss.s`` under an hour)."""
    seconds = max(0.0, float(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h >= 1:
        return f"{int(h)}:{int(m):02d}:{s:04.1f}"
    return f"{int(m)}:{s:04.1f}"


def _fmt_date(unix: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(unix)) if unix else "?"


def _fmt_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


# --------------------------------------------------------------------------- inputs


def _thumb_source(work: WorkDir, clip: Clip) -> Path | None:
    """The captured thumbnail of a clip, if it exists inside WORK/thumbs."""
    if not clip.thumb:
        return None
    p = Path(clip.thumb)
    p = (p if p.is_absolute() else work.root / p).resolve()
    thumbs = work.thumbs_dir.resolve()
    if not p.is_relative_to(thumbs):
        log.warning("thumbnail outside %s ignored: %s", thumbs, clip.thumb)
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
    """Place every clip's thumbnail under WORK/report/thumbs (same sub-path as
    under WORK/thumbs) and drop stale ones. Returns clip id -> URL relative to
    the report folder."""
    report_thumbs = work.report_dir / "thumbs"
    thumbs_root = work.thumbs_dir.resolve()
    urls: dict[str, str] = {}
    wanted: set[Path] = set()
    for clip in plan.clips:
        src = _thumb_source(work, clip)
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
        urls[clip.id] = "thumbs/" + rel.as_posix()
    if report_thumbs.is_dir():
        for p in sorted(report_thumbs.rglob("*"), reverse=True):  # files before their folders
            if p.is_file() and p not in wanted:
                p.unlink()
            elif p.is_dir() and not any(p.iterdir()):
                p.rmdir()
    return urls


def _clip_link(clip: Clip, out_dir: Path | None, report_dir: Path) -> tuple[str, Path] | None:
    """(URL relative to the report folder, absolute path) of a cut clip's file."""
    if not clip.file or out_dir is None:
        return None
    target = (out_dir / clip.file).resolve()
    try:
        rel = Path(os.path.relpath(target, report_dir)).as_posix()
    except ValueError:  # Windows: another drive has no relative path
        return target.as_uri(), target
    return quote(rel, safe="/"), target


# --------------------------------------------------------------------------- page parts

COLLAPSE_ABOVE = 300  # clips in the whole report: beyond this every source starts collapsed
COLLAPSE_SOURCE = 60  # clips of one source: beyond this that source starts collapsed

# The filter/sort bar. Its script reads only numbers (data-* attributes of the cards)
# and the lower-cased source path through dataset (text, never markup).
_BAR = """<div id="bar" class="meta">sort <select id="sort"><option value="time">source and time</option>
<option value="dur">longest first</option><option value="face">largest face first</option>
<option value="yaw">most frontal first</option></select>
 · at least <input id="mindur" type="number" min="0" step="0.5" value="0"> s
 · face at least <input id="minface" type="number" min="0" step="10" value="0"> px
 · |yaw| at most <input id="maxyaw" type="number" min="0" max="180" step="5" value="180">°
 · source <input id="srcq" type="search" placeholder="part of the file name">
 · <button id="openall" type="button">open all</button> <span id="shown"></span></div>"""

_JS = """(function(){
const $=id=>document.getElementById(id);
const key={dur:c=>-c.dataset.dur,face:c=>-c.dataset.face,yaw:c=>+c.dataset.yaw,time:c=>+c.dataset.start};
function apply(){
 const md=+$('mindur').value||0,mf=+$('minface').value||0,my=$('maxyaw').value===''?180:+$('maxyaw').value;
 const q=$('srcq').value.trim().toLowerCase(),by=key[$('sort').value];let n=0;
 for(const s of document.querySelectorAll('section.src')){
  const hit=!q||s.dataset.name.includes(q);s.hidden=!hit;
  for(const c of s.querySelectorAll('.card')){
   const ok=hit&&+c.dataset.dur>=md&&+c.dataset.face>=mf&&+c.dataset.yaw<=my;c.hidden=!ok;if(ok)n++;}
  const g=s.querySelector('.srcbody>.grid');if(!g)continue;
  const items=[...g.children],first=el=>el.classList.contains('card')?el:el.querySelector('.card');
  items.sort((a,b)=>by(first(a))-by(first(b))||first(a).dataset.start-first(b).dataset.start);
  for(const el of items)g.appendChild(el);}
 $('shown').textContent=n+' clips shown';}
for(const id of ['sort','mindur','minface','maxyaw','srcq'])$(id).addEventListener('input',apply);
$('openall').addEventListener('click',()=>{for(const d of document.querySelectorAll('details.srcbody'))d.open=true;});
apply();
addEventListener('load',()=>{document.documentElement.dataset.loadedMs=Math.round(performance.now());});})();"""

_CSS = """
:root{--fg:#1d2330;--mut:#687083;--bg:#f5f6f8;--card:#fff;--line:#dde1e7}
*{box-sizing:border-box}
body{margin:0;font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header,main{max-width:1400px;margin:0 auto;padding:12px 20px}
h1{font-size:22px;margin:8px 0}h2{font-size:17px;margin:0 0 6px;word-break:break-all}
.meta{color:var(--mut);font-size:12px;word-break:break-all}
.kpis{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}
.kpi{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:8px 14px;min-width:120px}
.kpi b{display:block;font-size:20px}
table{border-collapse:collapse;background:var(--card)}
td,th{border:1px solid var(--line);padding:3px 8px;text-align:left;vertical-align:top}
.src{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:12px 14px;margin:16px 0}
.st{display:inline-block;padding:0 6px;border-radius:3px;font-size:12px;color:#fff;background:#27ae60}
.st-partial{background:#e67e22}.st-failed{background:#c0392b}.st-pending{background:#7f8c8d}
.reason{color:#c0392b}
svg.tl{display:block;width:100%;background:#fafbfc;border:1px solid var(--line);margin:8px 0 4px}
.legend{display:flex;flex-wrap:wrap;gap:12px;font-size:12px;color:var(--mut);margin:4px 0 8px}
.legend i{display:inline-block;width:12px;height:10px;margin-right:4px;vertical-align:-1px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(250px,1fr));gap:10px}
#bar{margin-top:10px;position:sticky;top:0;background:var(--bg);padding:6px 0;z-index:1}
#bar input[type=number]{width:5em}
details.srcbody>summary{cursor:pointer;color:#2471a3;margin:4px 0}
.group{grid-column:1/-1;border:1px dashed var(--line);border-radius:6px;padding:6px}
.group>.meta{margin-bottom:6px}
.card{background:var(--card);border:1px solid var(--line);border-radius:6px;overflow:hidden;
content-visibility:auto;contain-intrinsic-size:auto 250px auto 240px}
.card:target{outline:3px solid #2471a3}
.pic{aspect-ratio:16/9;background:#222;display:flex;align-items:center;justify-content:center;color:#999}
.pic img{width:100%;height:100%;object-fit:contain;display:block}
.card video{width:100%;aspect-ratio:16/9;background:#000;display:block;margin-top:4px}
.card summary{cursor:pointer;color:#2471a3}
.card .body{padding:6px 8px;font-size:12px}
.card .body div{word-break:break-all}
.none{color:var(--mut);font-style:italic}
"""


def _legend(reasons: list[str]) -> str:
    items = [
        ("shot", "#e8ecf1"),
        ("accepted track", ACCEPTED_COLOUR),
        ("clip (click: card)", CLIP_COLOUR),
    ] + [(f"rejected: {r}", REASON_COLOURS.get(r, OTHER_COLOUR)) for r in reasons]
    return (
        '<div class="legend">'
        + "".join(f'<span><i style="background:{c}"></i>{e(name)}</span>' for name, c in items)
        + "</div>"
    )


def _tick_step(span: float) -> float:
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200):
        if span / step <= 10:
            return float(step)
    return 3600.0 * max(1, round(span / 36000))


def _pct(t: float, span: float) -> str:
    return f"{100.0 * min(max(t, 0.0), span) / span:.3f}%"


def _wpct(a: float, b: float, span: float) -> str:
    """Width of [a, b] in percent, at least a sliver so short items stay visible."""
    w = 100.0 * (min(b, span) - max(a, 0.0)) / span
    return f"{max(w, 0.15):.3f}%"


def _lanes(items, n: int) -> list[int]:
    """Greedy interval packing of (start, end) items into ``n`` rows; when all
    rows are busy the row that frees first is shared."""
    ends = [float("-inf")] * n
    out = [0] * len(items)
    for i in sorted(range(len(items)), key=lambda i: (items[i].start, items[i].end)):
        it = items[i]
        free = [r for r in range(n) if ends[r] <= it.start]
        r = free[0] if free else min(range(n), key=ends.__getitem__)
        out[i] = r
        ends[r] = max(ends[r], it.end)
    return out


def _timeline(src: SourcePlan, clips: list[Clip]) -> str:
    """Inline SVG: shots as bands, tracks in rows (accepted green, rejected by
    reason), clips on the bottom row linking to their cards. Positions are
    percentages, so the SVG scales with the page without stretching text."""
    span = max(
        [src.duration]
        + [s.end for s in src.shots]
        + [t.end for t in src.tracks]
        + [c.end for c in clips]
    )
    span = span if span > 0 else 1.0
    lanes = min(_LANES, max(1, len(src.tracks)))
    axis_y, top = 14, 18
    clip_y = top + lanes * _LANE_H + 4
    height = clip_y + 14
    parts = [
        f'<svg class="tl" height="{height}" role="img" xmlns="http://www.w3.org/2000/svg">',
        f"<title>timeline of {e(src.path)}</title>",
    ]
    for s in src.shots:  # alternate shades so neighbouring shots are told apart
        fill = "#e8ecf1" if s.index % 2 == 0 else "#d5dbe3"
        parts.append(
            f'<rect x="{_pct(s.start, span)}" y="{top - 2}" width="{_wpct(s.start, s.end, span)}" '
            f'height="{height - top + 2}" fill="{fill}"><title>shot {s.index}: '
            f"{_fmt_time(s.start)}–{_fmt_time(s.end)}</title></rect>"
        )
    step = _tick_step(span)
    t = 0.0
    while t <= span + 1e-9:
        x = _pct(t, span)
        anchor = "start" if t == 0 else "end" if t > span * 0.97 else "middle"
        parts.append(
            f'<line x1="{x}" x2="{x}" y1="{axis_y - 3}" y2="{axis_y + 2}" stroke="#99a"/>'
            f'<text x="{x}" y="{axis_y - 4}" font-size="9" fill="#667" text-anchor="{anchor}">'
            f"{_fmt_time(t).removesuffix('.0')}</text>"
        )
        t += step
    for tr, lane in zip(src.tracks, _lanes(src.tracks, lanes)):
        if tr.status == "accepted":
            fill, what = ACCEPTED_COLOUR, "accepted"
        else:
            fill, what = (
                REASON_COLOURS.get(tr.reason, OTHER_COLOUR),
                f"rejected: {tr.reason or '?'}",
            )
        parts.append(
            f'<rect x="{_pct(tr.start, span)}" y="{top + lane * _LANE_H}" '
            f'width="{_wpct(tr.start, tr.end, span)}" height="{_LANE_H - 2}" rx="1" fill="{fill}">'
            f"<title>track {tr.id} ({e(what)}), {tr.frames} frames, "
            f"{_fmt_time(tr.start)}–{_fmt_time(tr.end)}</title></rect>"
        )
    for c in clips:
        parts.append(
            f'<a href="#c-{e(c.id)}"><rect x="{_pct(c.start, span)}" y="{clip_y}" '
            f'width="{_wpct(c.start, c.end, span)}" height="10" fill="{CLIP_COLOUR}">'
            f"<title>clip {_fmt_time(c.start)}–{_fmt_time(c.end)} "
            f"({c.end - c.start:.1f} s)</title></rect></a>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _card(clip: Clip, thumb_url: str | None, link: tuple[str, Path] | None) -> str:
    st = clip.stats
    dur = clip.end - clip.start
    if thumb_url:
        pic = (
            f'<div class="pic"><img src="{_url(thumb_url)}" loading="lazy" decoding="async" '
            f'alt="clip at {_fmt_time(clip.start)}"></div>'
        )
    else:
        pic = '<div class="pic">no thumbnail</div>'
    lines = [
        f"<div><b>{dur:.1f} s</b> · {_fmt_time(clip.start)}–{_fmt_time(clip.end)} · shot {clip.shot}</div>",
        (
            f"<div>face {st.face_short_median:.0f} px · yaw {round(st.yaw_range[0]):+d}°…"
            f"{round(st.yaw_range[1]):+d}° · {st.frames} frames</div>"
        ),
    ]
    if clip.parts > 1:
        lines.append(f"<div>part {clip.part} of {clip.parts} (one long shot split at --max-dur)</div>")
    if clip.encoded:
        lines.append(f'<div class="meta">re-encoded: {e(clip.encoded)}</div>')
    if clip.file:
        lead = clip.lead_in or 0.0
        if clip.cut_start is not None and clip.cut_end is not None:
            lines.append(
                f"<div>cut {_fmt_time(clip.cut_start)}–{_fmt_time(clip.cut_end)}"
                f" · lead-in {lead:.2f} s{' · ' + e(clip.container) if clip.container else ''}</div>"
            )
        if link is None:
            lines.append(f'<div class="meta">{e(clip.file)} (output folder unknown)</div>')
        elif link[1].is_file():
            url, target = link
            lines.append(f'<div><a href="{e(url)}">{e(Path(clip.file).name)}</a></div>')
            lines.append(f'<div class="meta">{e(target)}</div>')
            # Inside a closed <details> the player costs nothing until asked for;
            # the media fragment makes it start at the planned first frame.
            lines.append(
                f'<details><summary>preview</summary><video controls preload="none" '
                f'src="{e(url)}#t={lead:.3f}"></video></details>'
            )
        else:
            lines.append(f'<div class="reason">file missing: {e(link[1])}</div>')
    # Numbers only (the filter/sort bar reads them; nothing user-written is in them).
    yaw = max(abs(st.yaw_range[0]), abs(st.yaw_range[1]))
    data = (f'data-start="{clip.start:.3f}" data-dur="{dur:.3f}" data-face="{st.face_short_median:.1f}" '
            f'data-yaw="{yaw:.1f}"')
    return (
        f'<div class="card" id="c-{e(clip.id)}" {data}>{pic}<div class="body">{"".join(lines)}</div></div>'
    )


def _source_section(src: SourcePlan, clips, thumbs, out_dir, report_dir, collapsed: bool = False) -> str:
    n_acc = sum(t.status == "accepted" for t in src.tracks)
    head = (
        f'<section class="src" id="s-{e(src.key)}" data-name="{e(src.path.lower())}"><h2>{e(src.path)} '
        f'<span class="st st-{e(src.status)}">{e(src.status)}</span></h2>'
        f'<div class="meta">{_fmt_duration(src.duration)} · {len(src.shots)} shots · '
        f"{len(src.tracks)} tracks ({n_acc} accepted) · {len(clips)} clips · "
        f"{_fmt_duration(sum(c.end - c.start for c in clips))} accepted</div>"
    )
    if src.reason:
        head += f'<div class="reason">{e(src.reason)}</div>'
    if not (src.shots or src.tracks or clips):  # failed before analysis found anything
        return head + "</section>"
    reasons = sorted({t.reason or "other" for t in src.tracks if t.status == "rejected"})
    body = _timeline(src, clips) + _legend(reasons)
    if clips:
        cards, group = [], None
        for c in clips:
            if group is not None and c.group != group:
                cards.append("</div></div>")
                group = None
            if c.group and group is None:
                group = c.group
                cards.append(f'<div class="group" id="g-{e(c.group)}"><div class="meta">one long shot in '
                             f'{c.parts} parts</div><div class="grid">')
            cards.append(_card(c, thumbs.get(c.id), _clip_link(c, out_dir, report_dir)))
        if group is not None:
            cards.append("</div></div>")
        body += '<div class="grid">' + "".join(cards) + "</div>"
    else:
        body += '<p class="none">no clips from this source</p>'
    # A closed <details> is not laid out: a large batch opens one source at a time.
    return (head + f'<details class="srcbody"{"" if collapsed else " open"}><summary>timeline and '
            f'{len(clips)} clip{"s" if len(clips) != 1 else ""}</summary>' + body + "</details></section>")


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
    ]
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>facecut report: {e(plan.input_dir or work_root)}</title>",
        f"<style>{_CSS}</style></head><body><header>",
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
    if plan.clips:
        out.append(_BAR)
    out.append("</header><main>")
    big = len(plan.clips) > COLLAPSE_ABOVE
    for src in plan.sources:
        clips = by_source.pop(src.path, [])
        out.append(_source_section(src, clips, thumbs, out_dir, report_dir, big or len(clips) > COLLAPSE_SOURCE))
    for path, clips in by_source.items():  # clips whose source is missing from sources
        ghost = SourcePlan(
            path=path, key=clips[0].key, status="ok", reason="source not listed in the plan"
        )
        out.append(_source_section(ghost, clips, thumbs, out_dir, report_dir, big))
    out.append(f"</main><script>{_JS}</script></body></html>\n")
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
