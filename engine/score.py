"""Score: quality gates over face tracks, segments, and the clip plan.

A pure function of the analysis logs plus :class:`~facecut.config.ScoreConfig`
(re-running with other gates never decodes or detects again). Times are seconds
relative to the source's first frame (``SourcePlan.t0`` seconds of stream time).

Per track (:mod:`facecut.track`), in this order; the first rule that rejects a
track names its reason:

1. **gates**: a detection passes when its short side >= ``min_face``, |yaw| <=
   ``max_yaw``, |pitch| <= ``max_pitch`` and detector score >= ``min_det_score``.
   Fewer than ``track_gate`` of the track's detections passing rejects it as
   ``too_small``, ``pose`` or ``det_score``, whichever gate failed most often.
2. **segments**: passing detections form segments; a failing or undetected
   stretch shorter than ``bridge_gap`` between two of them is bridged. Segment
   bounds snap to the shot's cut when the first/last passing sample is within
   one sample interval of it (cuts are frame-accurate, samples are not),
   otherwise they extend half a sample interval, never past the shot. Segments
   shorter than ``min_dur`` or longer than ``max_dur`` (probably a missed cut)
   are dropped; a track left without segments is ``too_short`` (or ``too_long``).
3. **identity** (``--identity``): the mean embedding of the track's passing
   detections must lie within ``identity_threshold`` (cosine distance) of the
   reference; otherwise ``identity``.

Accepted segments of one shot closer than ``merge_gap`` (or overlapping: two
faces at once) are fused into one clip, unless the result would exceed
``max_dur``. Clips never cross a cut. Clip ids come from the source fingerprint
and the span (``fsio.clip_id``), so a re-run gives the same ids.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

import msgspec
import numpy as np

from facecut.config import ScoreConfig
from facecut.fsio import clip_id
from facecut.workdir import WorkDir
from facecut.people import ClipFace
from facecut.quality import clip_quality
from facecut.records import Clip, ClipQuality, ClipStats, PersonFace, SourcePlan, TrackSummary, VideoInfo
from facecut.track import Track, VideoLog, link

log = logging.getLogger(__name__)

REASONS = ("too_small", "pose", "det_score", "too_short", "too_long", "identity")
_EPS = 1e-6


@dataclass
class _Segment:
    shot: int
    k0: int  # first and last passing grid index
    k1: int
    start: float  # seconds
    end: float
    tracks: list[int]
    rows: np.ndarray  # face rows of the tracks (for stats)
    split: bool = False  # a part of a segment longer than max_dur


# --------------------------------------------------------------------------- gates


def _passes(video: VideoLog, cfg: ScoreConfig) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per-face pass mask over the whole FaceTable, and the fail mask of each gate."""
    f = video.faces
    fails = {
        "too_small": f.short < cfg.min_face,
        "pose": (np.abs(f.yaw) > cfg.max_yaw) | (np.abs(f.pitch) > cfg.max_pitch),
        "det_score": f.score < cfg.min_det_score,
    }
    ok = ~(fails["too_small"] | fails["pose"] | fails["det_score"])
    return ok, fails


def span(video: VideoLog, shot: int, k0: int, k1: int) -> tuple[float, float]:
    """Seconds covered by samples k0..k1 of ``shot``: snapped to a cut within one
    sample interval, else half an interval wider, never past the shot."""
    sh = video.shots[shot]
    dt = video.dt
    g0, g1 = k0 * dt, k1 * dt  # the grid times the samples show
    start = sh.start if g0 - sh.start <= dt + _EPS else max(sh.start, g0 - dt / 2)
    end = sh.end if sh.end - g1 <= dt + _EPS else min(sh.end, g1 + dt / 2)
    return start, end


def _segments(video: VideoLog, tr: Track, ok: np.ndarray, cfg: ScoreConfig) -> list[tuple[int, int]]:
    """(k0, k1) of the track's passing runs, bridging stretches < bridge_gap."""
    k = tr.k[ok]
    if not len(k):
        return []
    missing = (np.diff(k) - 1) * video.dt  # seconds between passing samples, not covered
    breaks = np.flatnonzero(missing >= cfg.bridge_gap - _EPS)
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [len(k) - 1]])
    return [(int(k[a]), int(k[b])) for a, b in zip(starts, ends)]


def _judge(
    video: VideoLog, tr: Track, ok_all, fails, cfg: ScoreConfig, identity
) -> tuple[str, list[_Segment]]:
    """(reason or "", accepted segments) of one track."""
    ok = ok_all[tr.rows]
    if ok.mean() < cfg.track_gate - _EPS:
        counts = {r: int(m[tr.rows].sum()) for r, m in fails.items()}
        return max(counts, key=lambda r: counts[r]), []  # ties: dict order (size, pose, score)
    kept, too_long = [], False
    for k0, k1 in _segments(video, tr, ok, cfg):
        start, end = span(video, tr.shot, k0, k1)
        if end - start > cfg.max_dur + _EPS:
            if cfg.long == "reject":
                too_long = True
                continue
            kept += _split(video, tr, ok_all, _Segment(tr.shot, k0, k1, start, end, [tr.id], tr.rows), cfg)
        elif end - start >= cfg.min_dur - _EPS:
            kept.append(_Segment(tr.shot, k0, k1, start, end, [tr.id], tr.rows))
    if not kept:
        return ("too_long" if too_long else "too_short"), []
    if identity is not None and not identity.accepts(tr.column("emb"), ok):
        return "identity", []
    return "", kept


def _split(video: VideoLog, tr: Track, ok_all: np.ndarray, seg: _Segment, cfg: ScoreConfig) -> list[_Segment]:
    """A segment longer than max_dur as n = ceil(len / max_dur) near-equal parts.

    Each boundary may move by up to half the slack (max_dur - len / n, so no part
    exceeds max_dur) to the sampled moment where the face is worst (lowest
    detector score; no passing face counts as worst), so a part rather starts or
    ends where the face turns away or blurs than in the middle of a good stretch."""
    length = seg.end - seg.start
    n = math.ceil(length / cfg.max_dur - _EPS)
    even = length / n
    room = max(0.0, (cfg.max_dur - even) / 2 - video.dt)
    f = video.faces
    rows = tr.rows
    ks = video.k[f.sample[rows]]
    g = ks * video.dt
    quality = np.where(ok_all[rows], f.score[rows], -1.0)
    bounds = [seg.start]
    for i in range(1, n):
        b = seg.start + i * even
        near = np.flatnonzero(np.abs(g - b) <= room + _EPS)
        if len(near):
            worst = near[np.argmin(quality[near] + 1e-9 * np.abs(g[near] - b))]  # ties: nearest
            b = float(g[worst])
        bounds.append(max(bounds[-1], b))
    bounds.append(seg.end)
    group = len(bounds) - 1
    parts = []
    for i in range(group):
        a, b = bounds[i], bounds[i + 1]
        if b - a <= _EPS:
            continue
        inside = (g >= a - _EPS) & (g <= b + _EPS)
        k0 = int(ks[inside].min()) if inside.any() else seg.k0
        k1 = int(ks[inside].max()) if inside.any() else seg.k1
        parts.append(_Segment(seg.shot, k0, k1, a, b, list(seg.tracks), rows, split=True))
    return parts


def _merge(segments: list[_Segment], cfg: ScoreConfig) -> list[_Segment]:
    """Fuse segments of one shot closer than merge_gap (or overlapping), unless
    the fused span would exceed max_dur."""
    out: list[_Segment] = []
    for s in sorted(segments, key=lambda s: (s.shot, s.start, s.end)):
        last = out[-1] if out else None
        if (
            last is not None
            and last.shot == s.shot
            and not (last.split and s.split)  # parts of one long segment stay apart
            and s.start - last.end < cfg.merge_gap - _EPS
            and max(last.end, s.end) - last.start <= cfg.max_dur + _EPS
        ):
            last.end = max(last.end, s.end)
            last.k0, last.k1 = min(last.k0, s.k0), max(last.k1, s.k1)
            last.tracks = sorted(set(last.tracks) | set(s.tracks))
            last.rows = np.union1d(last.rows, s.rows)  # (one track's split segments share rows)
        else:
            out.append(_Segment(s.shot, s.k0, s.k1, s.start, s.end, list(s.tracks), s.rows, s.split))
    return out


# --------------------------------------------------------------------------- one video


def _stats(video: VideoLog, seg: _Segment, ok_all: np.ndarray) -> ClipStats:
    """Statistics over the detections of the clip's tracks inside its span."""
    f = video.faces
    rows = seg.rows
    g = video.k[f.sample[rows]] * video.dt
    rows = rows[(g >= seg.start - _EPS) & (g <= seg.end + _EPS)]
    if not len(rows):  # cannot happen (a segment holds its passing samples); stay safe
        return ClipStats(frames=0, face_short_median=0.0, yaw_range=(0.0, 0.0))
    good = rows[ok_all[rows]]
    return ClipStats(
        frames=int(len(np.unique(f.sample[good]))),
        face_short_median=round(float(np.median(f.short[rows])), 1),
        yaw_range=(round(float(f.yaw[rows].min()), 1), round(float(f.yaw[rows].max()), 1)),
        pitch_range=(round(float(f.pitch[rows].min()), 1), round(float(f.pitch[rows].max()), 1)),
        det_score_median=round(float(np.median(f.score[rows])), 4),
    )


@dataclass
class _Main:
    """The main face of each sample of a clip's span: its main track's (the track
    of the clip with the largest median face, then the most samples)."""

    rows: np.ndarray  # face rows, in sample order
    n_span: int  # samples in the span
    crowded: int  # of them, those with another face at least half the main face's size


def _main_faces(video: VideoLog, seg: _Segment, tracks: dict[int, Track]) -> _Main:
    f = video.faces
    g = video.k * video.dt  # grid time of each sample
    in_span = (g >= seg.start - _EPS) & (g < seg.end - _EPS)
    main = np.zeros(0, np.int64)
    best = (-1.0, -1)
    for tid in seg.tracks:  # two faces at once (fused segments): the larger one's track
        rows = tracks[tid].rows
        rows = rows[in_span[f.sample[rows]]]
        key = (float(np.median(f.short[rows])), len(rows)) if len(rows) else (-1.0, -1)
        if key > best:
            best, main = key, rows
    main = main[np.argsort(f.sample[main], kind="stable")]
    others = np.setdiff1d(np.flatnonzero(in_span[f.sample]), main)  # the clip's other tracks count too
    main_short = dict(zip(f.sample[main].tolist(), f.short[main].tolist()))
    crowded = {s for s, sh in zip(f.sample[others].tolist(), f.short[others].tolist())
               if sh >= 0.5 * main_short.get(s, float("inf"))}
    return _Main(main, int(in_span.sum()), len(crowded))


def _quality(video: VideoLog, m: _Main) -> ClipQuality:
    """The clip's quality parts (facecut.quality) over the samples of its span."""
    f = video.faces
    sharp = f.sharp if f.sharp is not None else np.full(len(f), -1.0)
    r = m.rows
    return clip_quality(
        {"short": f.short[r], "yaw": f.yaw[r], "pitch": f.pitch[r], "sharp": sharp[r], "box": f.box[r]},
        m.n_span, m.crowded,
    )


def _clip_face(video: VideoLog, m: _Main, clip: Clip, order: int, thumbs: "_Thumbs",
               size: tuple[int, int]) -> ClipFace | None:
    """What people grouping needs of a clip (None: its faces have no embeddings)."""
    f = video.faces
    if f.emb is None or not len(m.rows):
        return None
    embs = f.emb[m.rows]
    have = np.isfinite(embs).all(axis=1)
    if not have.any():
        return None
    mean = embs[have].astype(np.float64).mean(axis=0)
    mean /= max(np.linalg.norm(mean), 1e-12)
    face, best = None, -1.0
    w, h = size
    for r in m.rows:  # the face to show: the best one that has a thumbnail
        k = int(video.k[f.sample[r]])
        thumb = thumbs.at(k)
        goodness = f.short[r] * max(0.0, 1 - abs(f.yaw[r]) / 90) * max(0.0, 1 - abs(f.pitch[r]) / 90)
        if thumb is not None and goodness > best and w > 0 and h > 0:
            x1, y1, x2, y2 = (float(v) for v in f.box[r])
            box = (max(0.0, x1 / w), max(0.0, y1 / h), min(1.0, (x2 - x1) / w), min(1.0, (y2 - y1) / h))
            face, best = PersonFace(clip=clip.id, thumb=thumb, box=tuple(round(v, 4) for v in box)), goodness
    return ClipFace(clip=clip.id, order=order, emb=mean, weight=int(have.sum()), seconds=clip.end - clip.start,
                    face=face, face_quality=best)


class _Thumbs:
    """Thumbnails captured during analysis: WORK/thumbs/<key>/<k:07d>.jpg."""

    def __init__(self, work: WorkDir | None, key: str):
        self.key = key
        ks = []
        if work is not None:
            try:
                with os.scandir(work.thumbs_dir / key) as it:
                    names = [e.name[:-4] for e in it if e.name.endswith(".jpg")]
                ks = [int(n) for n in names if n.isdigit()]
            except FileNotFoundError:
                pass
        self.k = np.array(sorted(ks), np.int64)

    def at(self, k: int) -> str | None:
        """The thumbnail of sample ``k``, if one was captured."""
        i = int(np.searchsorted(self.k, k))
        return f"thumbs/{self.key}/{k:07d}.jpg" if i < len(self.k) and self.k[i] == k else None

    def nearest(self, video: VideoLog, clip_span: tuple[float, float],
                shot_span: tuple[float, float]) -> str | None:
        """The thumbnail nearest the clip's middle: inside the clip if any, else
        inside its shot, else None (a frame of another shot would mislead)."""
        if not len(self.k):
            return None
        g = self.k * video.dt
        mid = (clip_span[0] + clip_span[1]) / 2
        for lo, hi in (clip_span, shot_span):
            inside = np.flatnonzero((g >= lo - _EPS) & (g < hi - _EPS))
            if len(inside):
                best = inside[np.argmin(np.abs(g[inside] - mid))]
                return f"thumbs/{self.key}/{int(self.k[best]):07d}.jpg"
        return None


def score_video(
    info: VideoInfo,
    records,
    cfg: ScoreConfig,
    *,
    work: WorkDir | None = None,
    identity=None,
    faces: list[ClipFace] | None = None,
) -> tuple[SourcePlan, list[Clip]]:
    """Plan one analysed video: its SourcePlan (shots, every track with its
    verdict) and its clips. ``records``: the video's log records; an unfinished
    or failed log gives a pending/failed SourcePlan without clips. ``work``: to find thumbnails (None: no thumbnails). ``identity``: an
    :class:`facecut.identity.Identity` or None. ``faces``: a list that gets the
    :class:`facecut.people.ClipFace` of each clip with embeddings (people groups).
    ``facecut.pipeline`` calls this per
    finished video (streaming); :func:`plan_from_work` calls it for every video.
    """
    video = VideoLog.from_records(records)
    key = info.key
    h, done = video.header, video.done
    if done is None or done.status == "failed":  # as plan_from_work lists them: no clips
        return SourcePlan(
            path=info.path, key=key, status="pending" if done is None else "failed",
            reason="analysis not finished" if done is None else done.reason,
            duration=rounded(info.duration), fingerprint=info.fingerprint, raw_path=info.raw_path,
            size=info.size, mtime_ns=info.mtime_ns,
        ), []
    tracks = link(video, cfg.track)
    ok_all, fails = _passes(video, cfg)
    summaries: list[TrackSummary] = []
    accepted: list[_Segment] = []
    for tr in tracks:
        reason, segs = _judge(video, tr, ok_all, fails, cfg, identity)
        k = tr.k
        start, end = span(video, tr.shot, int(k[0]), int(k[-1]))
        summaries.append(
            TrackSummary(
                id=tr.id, shot=tr.shot, start=rounded(start), end=rounded(end), frames=len(tr),
                status="rejected" if reason else "accepted", reason=reason,
            )
        )
        accepted += segs
    thumbs = _Thumbs(work, key)
    by_id = {tr.id: tr for tr in tracks}
    fp = h.fingerprint if h is not None else info.fingerprint
    clips = []
    merged = _merge(accepted, cfg)
    groups: list[list[Clip]] = []
    for i, seg in enumerate(merged):
        start, end = rounded(seg.start), rounded(seg.end)
        main = _main_faces(video, seg, by_id)
        sh = video.shots[seg.shot]
        clips.append(
            Clip(
                id=clip_id(fp, start, end), source=info.path, key=key, start=start, end=end,
                shot=seg.shot,
                tracks=seg.tracks, stats=_stats(video, seg, ok_all), quality=_quality(video, main),
                thumb=thumbs.nearest(video, (seg.start, seg.end), (sh.start, sh.end)),
            )
        )
        if faces is not None:
            cf = _clip_face(video, main, clips[-1], len(faces), thumbs, info.display_size)
            if cf is not None:
                faces.append(cf)
        prev = merged[i - 1] if i else None
        if seg.split and prev is not None and prev.split and prev.shot == seg.shot \
                and abs(prev.end - seg.start) <= _EPS:
            groups[-1].append(clips[-1])
        elif seg.split:
            groups.append([clips[-1]])
    for parts in groups:  # the parts of one long segment: one group in plan and report
        for n, c in enumerate(parts, 1):
            c.part, c.parts, c.group = n, len(parts), parts[0].id
    source = SourcePlan(
        path=info.path, key=key, status=done.status, reason=done.reason,
        duration=rounded(video.duration), fingerprint=fp, t0=h.t0 if h is not None else 0.0,
        shots=[msgspec.structs.replace(s, start=rounded(s.start), end=rounded(s.end)) for s in video.shots],
        tracks=summaries, raw_path=info.raw_path,
        **({"size": info.size, "mtime_ns": info.mtime_ns} if fp == info.fingerprint else {}),
    )
    return source, clips


def rounded(x: float) -> float:
    """Seconds rounded to the microsecond (plan.json stays readable)."""
    return round(float(x), 6)
