"""The report's clip cards, source sections and people: HTML fragments from
plan records (pure functions; facecut.report assembles the page).

Every user-derived string goes through :func:`~facecut.reportsvg.e`, every path
in a URL through ``urllib.parse.quote``. The cards' ``data-*`` attributes hold
numbers only: the bar's script (data/report.js) sorts, filters and groups by
them and never reads markup.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from urllib.parse import quote

from facecut.records import Clip, ClipQuality, Person, SourcePlan
from facecut.reportsvg import e, fmt_time, legend, timeline

FACE_SHARE = 0.6  # width of a person's face box in their face window (the rest: hair, chin, context)


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


# --------------------------------------------------------------------------- quality


def _score(q: ClipQuality | None) -> float | None:
    return q.score if q is not None and math.isfinite(q.score) else None


def _badge(score: float) -> str:
    level = "s-hi" if score >= 70 else "s-mid" if score >= 40 else "s-lo"
    return f'<span class="score {level}" title="swap quality, 0-100 (best 100)">{score:.0f}</span>'


_PARTS_TITLE = (
    "face: median short side of the main face, source px; yaw, pitch: median angles (0 = frontal); "
    "sharpness: variance of the Laplacian of the face at 64x64 px; steady: median movement between "
    "samples in face sizes (0 = still); present: samples showing the face; alone: samples without "
    "another sizeable face"
)


def _parts(q: ClipQuality) -> str:
    sharp = "sharpness not measured" if q.sharpness is None else f"sharpness {q.sharpness:.0f}"
    return (
        f'<div class="parts" title="{e(_PARTS_TITLE)}">face {q.face_px:.0f} px · yaw {q.yaw:.0f}° '
        f"pitch {q.pitch:.0f}° · {sharp} · steady {q.stability:.2f} · present {100 * q.presence:.0f} % · "
        f"alone {100 * (1 - q.crowded):.0f} %</div>"
    )


# --------------------------------------------------------------------------- cards


def card(clip: Clip, thumb_url: str | None, link: tuple[str, Path] | None) -> str:
    st = clip.stats
    dur = clip.end - clip.start
    score = _score(clip.quality)
    badge = _badge(score) if score is not None else ""
    if thumb_url:
        pic = (
            f'<div class="pic">{badge}<img src="{url(thumb_url)}" loading="lazy" decoding="async" '
            f'alt="clip at {fmt_time(clip.start)}"></div>'
        )
    else:
        pic = f'<div class="pic">{badge}no thumbnail</div>'
    lines = [
        f"<div><b>{dur:.1f} s</b> · {fmt_time(clip.start)}–{fmt_time(clip.end)} · shot {clip.shot}"
        + (f" · <b>person:{e(clip.person)}</b>" if clip.person is not None else "")
        + "</div>",
        f'<div class="from meta">{e(clip.source)}</div>',  # shown when the cards leave their source
        # the face's size is in the quality line when there is one (said once)
        (f"<div>{'' if clip.quality is not None else f'face {st.face_short_median:.0f} px · '}"
         f"yaw {round(st.yaw_range[0]):+d}°…{round(st.yaw_range[1]):+d}° · {st.frames} frames</div>"),
    ]
    if clip.quality is not None:
        lines.append(_parts(clip.quality))
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
    face = clip.quality.face_px if clip.quality is not None else st.face_short_median  # the size the card shows
    data = f'data-start="{clip.start:.3f}" data-dur="{dur:.3f}" data-face="{face:.1f}" data-yaw="{yaw:.1f}"'
    if score is not None:
        data += f' data-score="{score:.1f}"'
    if clip.person is not None:
        data += f' data-person="{e(clip.person)}"'
    return (
        f'<div class="card" id="c-{e(clip.id)}" {data}>{pic}<div class="body">{"".join(lines)}</div></div>'
    )


def source_section(src: SourcePlan, clips, thumbs, out_dir, report_dir, collapsed: bool = False) -> str:
    """A source: its summary, timeline and clip cards (``thumbs``: a plan's thumb path -> URL)."""
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
            cards.append(card(c, thumbs.get(c.thumb), clip_link(c, out_dir, report_dir)))
        if group is not None:
            cards.append("</div></div>")
        body += '<div class="grid">' + "".join(cards) + "</div>"
    else:
        body += '<p class="none">no clips from this source</p>'
    # A closed <details> is not laid out: a large batch opens one source at a time.
    return (head + f'<details class="srcbody"{"" if collapsed else " open"}><summary>timeline and '
            f'{len(clips)} clip{"s" if len(clips) != 1 else ""}</summary>' + body + "</details></section>")


# --------------------------------------------------------------------------- people


def _crop(box) -> str | None:
    """The face window's picture style: the thumbnail scaled so the face box is
    FACE_SHARE of the window's width, its centre on the window's centre. Pure CSS:
    ``translate`` percentages are of the picture's own size, so the picture's
    aspect ratio need not be known. None: no usable box (the whole picture)."""
    try:
        x, y, w, h = (float(v) for v in box)
    except (TypeError, ValueError):
        return None
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
        return None
    cx, cy = min(max(x + w / 2, 0.0), 1.0), min(max(y + h / 2, 0.0), 1.0)
    zoom = FACE_SHARE / min(max(w, 0.02), 1.0)  # a box of under 2 % would magnify JPEG blocks only
    return f"width:{100 * zoom:.2f}%;transform:translate({-100 * cx:.2f}%,{-100 * cy:.2f}%)"


def _person(p: Person, thumbs: dict[str, str]) -> str:
    name = f"person:{e(p.id)}"
    thumb = thumbs.get(p.face.thumb) if p.face is not None else None
    crop = _crop(p.face.box) if thumb and p.face is not None else None
    if thumb and crop:
        pic = f'<img src="{url(thumb)}" style="{e(crop)}" loading="lazy" decoding="async" alt="face of {name}">'
    elif thumb:
        pic = f'<img class="whole" src="{url(thumb)}" loading="lazy" decoding="async" alt="face of {name}">'
    else:
        pic = "no face"
    return (
        f'<div class="person"><button type="button" class="face" data-pid="{e(p.id)}" aria-pressed="false" '
        f'title="show only the clips of {name} (click again: everyone)">{pic}</button><b>{name}</b>'
        f'<div class="meta">{p.clips} clip{"s" if p.clips != 1 else ""} · {fmt_duration(p.seconds)}</div></div>'
    )


def people_section(people: list[Person], n_clips: int, thumbs: dict[str, str]) -> str:
    """One face per people group; without groups (a detector-only model) a line
    saying what gives them; nothing when there are no clips."""
    if people:
        return (
            f'<section class="panel" id="people"><h2>People <span class="meta">{len(people)} '
            f"group{'s' if len(people) != 1 else ''} · a face shows only that person's clips</span></h2>"
            '<div class="faces">' + "".join(_person(p, thumbs) for p in people) + "</div></section>"
        )
    if n_clips:
        return (
            '<section class="panel" id="people"><h2>People</h2><p class="none">people groups need an '
            "embedding model: analyse with --model buffalo_l, or --model scrfd with a recogniser in its "
            "folder</p></section>"
        )
    return ""


def person_options(people: list[Person]) -> str:
    """The bar's person select: one option per people group."""
    return "".join(
        f'<option value="{e(p.id)}">person:{e(p.id)} ({p.clips} clip{"s" if p.clips != 1 else ""})</option>'
        for p in people
    )


def buckets(people: list[Person]) -> str:
    """The empty containers the bar's script moves cards into when grouping
    otherwise than by source: one grid for all, and one per person (plus one for
    clips without a group) when there are people."""
    out = ['<section class="bucket" id="all" hidden><h2>all clips</h2><div class="grid"></div></section>']
    for p in people:
        out.append(
            f'<section class="bucket" id="p-{e(p.id)}" data-pid="{e(p.id)}" hidden><h2>person:{e(p.id)} '
            f'<span class="meta">{p.clips} clips · {fmt_duration(p.seconds)}</span></h2><div class="grid"></div>'
            "</section>"
        )
    if people:
        out.append('<section class="bucket" id="p-none" hidden><h2>no people group <span class="meta">'
                   "(no embedding for the main face)</span></h2><div class=\"grid\"></div></section>")
    return "".join(out)
