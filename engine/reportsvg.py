"""The report's per-source timeline: shots, tracks (accepted, or rejected by
reason, in colour) and clips as one inline SVG, with its legend; and the two
helpers every part of the report uses (escaping, times)."""

from __future__ import annotations

import html

from facecut.records import Clip, SourcePlan

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


def fmt_time(seconds: float) -> str:
    """Seconds as ``h:mm:ss.s`` (``m:ss.s`` under an hour)."""
    seconds = max(0.0, float(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h >= 1:
        return f"{int(h)}:{int(m):02d}:{s:04.1f}"
    return f"{int(m)}:{s:04.1f}"


def legend(reasons: list[str]) -> str:
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


def timeline(src: SourcePlan, clips: list[Clip]) -> str:
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
            f"{fmt_time(s.start)}–{fmt_time(s.end)}</title></rect>"
        )
    step = _tick_step(span)
    t = 0.0
    while t <= span + 1e-9:
        x = _pct(t, span)
        anchor = "start" if t == 0 else "end" if t > span * 0.97 else "middle"
        parts.append(
            f'<line x1="{x}" x2="{x}" y1="{axis_y - 3}" y2="{axis_y + 2}" stroke="#99a"/>'
            f'<text x="{x}" y="{axis_y - 4}" font-size="9" fill="#667" text-anchor="{anchor}">'
            f"{fmt_time(t).removesuffix('.0')}</text>"
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
            f"{fmt_time(tr.start)}–{fmt_time(tr.end)}</title></rect>"
        )
    for c in clips:
        parts.append(
            f'<a href="#c-{e(c.id)}"><rect x="{_pct(c.start, span)}" y="{clip_y}" '
            f'width="{_wpct(c.start, c.end, span)}" height="10" fill="{CLIP_COLOUR}">'
            f"<title>clip {fmt_time(c.start)}–{fmt_time(c.end)} "
            f"({c.end - c.start:.1f} s)</title></rect></a>"
        )
    parts.append("</svg>")
    return "".join(parts)
