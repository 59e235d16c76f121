"""The report's clip cards and source sections: HTML fragments from plan
records (pure functions; facecut.report assembles the page).

Every user-derived string goes through :func:`~facecut.reportsvg.e`, every path
in a URL through ``urllib.parse.quote``. The cards' ``data-*`` attributes hold
numbers only: the bar's script (data/report.js) sorts and filters by them and
never reads markup.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

from facecut.records import Clip, SourcePlan
from facecut.reportsvg import e, fmt_time, legend, timeline


def url(rel_posix: str) -> str:
    """A relative POSIX path as an escaped URL attribute value (``#``, ``?``, ``%``
    and spaces in file names must not turn into fragments or queries)."""
    return e(quote(rel_posix, safe="/"))


def fmt_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def clip_link(clip: Clip, out_dir: Path | None, report_dir: Path) -> tuple[str, Path] | None:
    """(URL relative to the report folder, absolute path) of a cut clip's file."""
    if not clip.file or out_dir is None:
        return None
    target = (out_dir / clip.file).resolve()
    try:
        rel = Path(os.path.relpath(target, report_dir)).as_posix()
    except ValueError:  # Windows: another drive has no relative path
        return target.as_uri(), target
    return quote(rel, safe="/"), target


def card(clip: Clip, thumb_url: str | None, link: tuple[str, Path] | None) -> str:
    st = clip.stats
    dur = clip.end - clip.start
    if thumb_url:
        pic = (
            f'<div class="pic"><img src="{url(thumb_url)}" loading="lazy" decoding="async" '
            f'alt="clip at {fmt_time(clip.start)}"></div>'
        )
    else:
        pic = '<div class="pic">no thumbnail</div>'
    lines = [
        f"<div><b>{dur:.1f} s</b> · {fmt_time(clip.start)}–{fmt_time(clip.end)} · shot {clip.shot}</div>",
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
                f"<div>cut {fmt_time(clip.cut_start)}–{fmt_time(clip.cut_end)}"
                f" · lead-in {lead:.2f} s{' · ' + e(clip.container) if clip.container else ''}</div>"
            )
        if link is None:
            lines.append(f'<div class="meta">{e(clip.file)} (output folder unknown)</div>')
        elif link[1].is_file():
            href, target = link
            lines.append(f'<div><a href="{e(href)}">{e(Path(clip.file).name)}</a></div>')
            lines.append(f'<div class="meta">{e(target)}</div>')
            # Inside a closed <details> the player costs nothing until asked for;
            # the media fragment makes it start at the planned first frame.
            lines.append(
                f'<details><summary>preview</summary><video controls preload="none" '
                f'src="{e(href)}#t={lead:.3f}"></video></details>'
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


def source_section(src: SourcePlan, clips, thumbs, out_dir, report_dir, collapsed: bool = False) -> str:
    n_acc = sum(t.status == "accepted" for t in src.tracks)
    head = (
        f'<section class="src" id="s-{e(src.key)}" data-name="{e(src.path.lower())}"><h2>{e(src.path)} '
        f'<span class="st st-{e(src.status)}">{e(src.status)}</span></h2>'
        f'<div class="meta">{fmt_duration(src.duration)} · {len(src.shots)} shots · '
        f"{len(src.tracks)} tracks ({n_acc} accepted) · {len(clips)} clips · "
        f"{fmt_duration(sum(c.end - c.start for c in clips))} accepted</div>"
    )
    if src.reason:
        head += f'<div class="reason">{e(src.reason)}</div>'
    if not (src.shots or src.tracks or clips):  # failed before analysis found anything
        return head + "</section>"
    reasons = sorted({t.reason or "other" for t in src.tracks if t.status == "rejected"})
    body = timeline(src, clips) + legend(reasons)
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
            cards.append(card(c, thumbs.get(c.id), clip_link(c, out_dir, report_dir)))
        if group is not None:
            cards.append("</div></div>")
        body += '<div class="grid">' + "".join(cards) + "</div>"
    else:
        body += '<p class="none">no clips from this source</p>'
    # A closed <details> is not laid out: a large batch opens one source at a time.
    return (head + f'<details class="srcbody"{"" if collapsed else " open"}><summary>timeline and '
            f'{len(clips)} clip{"s" if len(clips) != 1 else ""}</summary>' + body + "</details></section>")
