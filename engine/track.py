"""Track: link the faces of one video's log into tracks, within each shot.

A pure function of the log records and a :class:`~facecut.config.TrackConfig`;
nothing is decoded or detected again. Units: times are seconds relative to the
video's first frame (``LogHeader.t0``), as in the log; boxes are source pixels.

Linking, sample by sample (never across a shot cut):

1. a face joins the open track whose last box overlaps it most (IoU >= ``iou``),
   greedily, best pair first; with embeddings, never a track whose mean
   embedding is less similar than ``stitch_sim`` (two people crossing);
2. faces left over are *stitched* to open tracks left over: by cosine similarity
   of embeddings (>= ``stitch_sim``) when the face and the track both carry them,
   else by position and size continuity (centre shift <= ``stitch_shift`` face
   sizes, size ratio <= ``stitch_size``). This catches a fast move and a short
   gap in detection alike;
3. every face still left starts a new track. A track stays open while the time
   since its last detection, less one sample interval, is at most ``max_gap``.

Faces are kept in one columnar :class:`FaceTable` per video (numpy arrays, built
once from the records); a :class:`Track` is a list of rows into it, so scoring
can work on whole arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from facecut.config import TrackConfig
from facecut.records import Cut, Done, LogHeader, Sample, Shot
from facecut.resume import log_status
from facecut.videolog import shots_from_cuts

_EPS = 1e-6


# --------------------------------------------------------------------------- the log as arrays


@dataclass(eq=False)
class FaceTable:
    """Every face of one video's log, one row each, in log order.

    ``sample`` is the row's sample index (into :class:`VideoLog`'s sample arrays);
    ``box`` is (n, 4) x1 y1 x2 y2 and ``short`` the box's short side, source
    pixels; ``yaw``/``pitch`` degrees; ``emb`` is (n, d) float32 L2-normalised
    with NaN rows for faces without an embedding, or None when no face has one.
    """

    sample: np.ndarray
    box: np.ndarray
    score: np.ndarray
    yaw: np.ndarray
    pitch: np.ndarray
    short: np.ndarray
    emb: np.ndarray | None
    sharp: np.ndarray | None = None  # Face.sharp per row, -1 where it was not measured

    def __len__(self) -> int:
        return len(self.sample)

    @classmethod
    def from_samples(cls, samples: list[Sample]) -> FaceTable:
        faces = [f for s in samples for f in s.faces]
        counts = np.fromiter((len(s.faces) for s in samples), np.int64, len(samples))
        n = len(faces)
        if not n:
            z = np.zeros(0)
            return cls(np.zeros(0, np.int64), np.zeros((0, 4)), z, z, z, z, None, z)
        box = np.array([f.box for f in faces], dtype=np.float64).reshape(n, 4)
        return cls(
            sample=np.repeat(np.arange(len(samples)), counts),
            box=box,
            score=np.fromiter((f.score for f in faces), np.float64, n),
            yaw=np.fromiter((f.yaw for f in faces), np.float64, n),
            pitch=np.fromiter((f.pitch for f in faces), np.float64, n),
            short=np.fromiter((f.short for f in faces), np.float64, n),
            emb=_embeddings([f.emb for f in faces]),
            sharp=np.fromiter((f.sharp for f in faces), np.float64, n),
        )


def _embeddings(raw: list[bytes | None]) -> np.ndarray | None:
    """(n, d) float32 from float16 bytes; NaN rows where a face has none."""
    have = [i for i, e in enumerate(raw) if e]
    if not have:
        return None
    d = len(raw[have[0]]) // 2
    if any(len(raw[i]) != 2 * d for i in have):
        return None  # mixed embedding sizes: not one model's output, ignore them
    out = np.full((len(raw), d), np.nan, np.float32)
    out[have] = np.frombuffer(b"".join(raw[i] for i in have), "<f2").reshape(len(have), d)
    return out


@dataclass(eq=False)
class VideoLog:
    """One video's log records as arrays: samples, faces, shots.

    ``k`` is each sample's grid index (the frame displayed at ``k / fps``), ``time``
    the sampled frame's own time; ``shot`` the shot index of each sample (by its
    frame time: a cut's frame is the first of the new shot). ``duration`` is the
    Done record's, else the last sample's time plus one interval.
    """

    header: LogHeader | None
    done: Done | None
    cuts: list[Cut]
    k: np.ndarray
    time: np.ndarray
    shot: np.ndarray
    faces: FaceTable
    shots: list[Shot]
    fps: float
    duration: float
    pts: np.ndarray | None = None  # each sample's frame pts (stream time base)

    @property
    def dt(self) -> float:
        """Sample interval, seconds."""
        return 1.0 / self.fps

    @classmethod
    def from_records(cls, records) -> VideoLog:
        header = done = None
        cuts: list[Cut] = []
        samples: list[Sample] = []
        for r in records:
            t = type(r)
            if t is Sample:
                samples.append(r)
            elif t is Cut:
                cuts.append(r)
            elif t is LogHeader:
                header = r
            elif t is Done:
                done = r
        fps = header.fps if header is not None and header.fps > 0 else 2.0
        k = np.fromiter((s.k for s in samples), np.int64, len(samples))
        time = np.fromiter((s.time for s in samples), np.float64, len(samples))
        if done is not None and done.duration > 0:
            duration = done.duration
        else:
            duration = float(time[-1]) + 1.0 / fps if len(time) else 0.0
        shots = shots_from_cuts([c.time for c in cuts], duration)
        inner = np.array([s.start for s in shots[1:]], np.float64)
        shot = np.minimum(np.searchsorted(inner, time, side="right"), len(shots) - 1)
        pts = np.fromiter((s.pts for s in samples), np.int64, len(samples))
        return cls(header, done, cuts, k, time, shot, FaceTable.from_samples(samples), shots, fps, duration, pts)


# --------------------------------------------------------------------------- tracks


@dataclass(eq=False)
class Track:
    """A face followed through one shot: ``rows`` index the video's FaceTable
    (one row per sample, in time order). ``id`` is unique per video, in order of
    first appearance."""

    id: int
    shot: int
    rows: np.ndarray
    video: VideoLog = field(repr=False)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def k(self) -> np.ndarray:
        """Grid indices of the track's samples."""
        return self.video.k[self.video.faces.sample[self.rows]]

    @property
    def times(self) -> np.ndarray:
        """Frame times of the track's samples, seconds."""
        return self.video.time[self.video.faces.sample[self.rows]]

    @property
    def start(self) -> float:
        return float(self.times[0])

    @property
    def end(self) -> float:
        return float(self.times[-1])

    def column(self, name: str) -> np.ndarray:
        """A FaceTable column for the track's rows (``box``, ``yaw``, ``short``, ...)."""
        col = getattr(self.video.faces, name)
        return None if col is None else col[self.rows]


@dataclass(eq=False)
class _Open:
    """A track being built: rows so far, last box, running embedding sum."""

    id: int
    shot: int
    rows: list[int]
    box: list[float]  # x1 y1 x2 y2
    last_t: float
    emb_sum: np.ndarray | None
    emb_dir: np.ndarray | None = None  # emb_sum, L2-normalised (kept up to date)

    def add(self, row: int, box: list[float], t: float, emb: np.ndarray | None) -> None:
        self.rows.append(row)
        self.box, self.last_t = box, t
        if emb is not None:
            self.emb_sum = emb.copy() if self.emb_sum is None else self.emb_sum + emb
            self.emb_dir = self.emb_sum / max(float(np.linalg.norm(self.emb_sum)), 1e-12)


def _iou(a, b) -> float:
    """IoU of two boxes given as sequences x1 y1 x2 y2 (plain floats: the
    per-sample loop compares a handful of boxes, where numpy's call overhead
    would dominate)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / max((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter, 1e-9)


def greedy_pairs(scored: list[tuple[float, int, int]], least: float) -> list[tuple[int, int]]:
    """Pairs (row, col) from (score, row, col) triples by descending score, each
    row and column used once, only scores >= ``least``. Greedy is exact enough for
    the few faces a frame holds, and plain to read."""
    used_r: set[int] = set()
    used_c: set[int] = set()
    out = []
    for sc, r, c in sorted(scored, key=lambda x: -x[0]):
        if sc < least:
            break
        if r in used_r or c in used_c:
            continue
        used_r.add(r)
        used_c.add(c)
        out.append((r, c))
    return out


def _similarity(tracks: list[_Open], embs: np.ndarray) -> np.ndarray:
    """(m, n) cosine similarity of each track's mean embedding to each face's;
    NaN where either side has none."""
    dirs = [t.emb_dir for t in tracks]
    if all(d is not None for d in dirs):
        return np.stack(dirs) @ embs.T
    out = np.full((len(tracks), len(embs)), np.nan)
    for i, d in enumerate(dirs):
        if d is not None:
            out[i] = embs @ d
    return out


def _stitch_scores(tracks: list[_Open], boxes: np.ndarray, embs: np.ndarray | None, cfg: TrackConfig):
    """(m, n) stitching scores, higher is better, -inf where not allowed:
    10 + similarity when both sides have embeddings, else minus the centre shift
    in face sizes."""
    m, n = len(tracks), len(boxes)
    score = np.full((m, n), -np.inf)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    size = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    for i, t in enumerate(tracks):
        tb = np.asarray(t.box)
        t_centre = (tb[:2] + tb[2:]) / 2
        t_size = min(tb[2] - tb[0], tb[3] - tb[1])
        if embs is not None and t.emb_dir is not None:
            sim = _similarity([t], embs)[0]
            have = np.isfinite(sim)
            ok = have & (sim >= cfg.stitch_sim)
            # similarity in [-1, 1] lifted above every shift score (<= 0), so an
            # identity match wins over mere proximity
            score[i, ok] = 10.0 + sim[ok]
            if have.all():
                continue
            cols = ~have
        else:
            cols = np.ones(n, bool)
        shift = np.linalg.norm(centre - t_centre, axis=1) / np.maximum((size + t_size) / 2, 1e-9)
        ratio = np.maximum(size, t_size) / np.maximum(np.minimum(size, t_size), 1e-9)
        ok = cols & (shift <= cfg.stitch_shift) & (ratio <= cfg.stitch_size)
        score[i, ok] = -shift[ok]
    return score


def link(video: VideoLog, cfg: TrackConfig) -> list[Track]:
    """Tracks of one video (see the module docstring), ordered by id."""
    faces = video.faces
    if not len(faces):
        return []
    dt = video.dt
    # face rows of sample i: off[i]:off[i + 1]
    off = np.searchsorted(faces.sample, np.arange(len(video.k) + 1)).tolist()
    boxes_all = faces.box.tolist()
    times, shots = video.time.tolist(), video.shot.tolist()
    finished: list[_Open] = []
    open_: list[_Open] = []
    next_id = 0
    keep = cfg.max_gap + dt + _EPS
    emb_all = faces.emb
    for i in np.flatnonzero(np.diff(off)).tolist():
        t, shot = times[i], shots[i]
        if open_:
            alive = [o for o in open_ if o.shot == shot and t - o.last_t <= keep]
            if len(alive) != len(open_):
                finished += [o for o in open_ if o.shot != shot or t - o.last_t > keep]
                open_ = alive
        lo, hi = off[i], off[i + 1]
        boxes = boxes_all[lo:hi]
        embs = emb_all[lo:hi] if emb_all is not None else None
        match: dict[int, int] = {}  # face col -> open index
        if open_:
            scored = [(_iou(o.box, b), r, c) for r, o in enumerate(open_) for c, b in enumerate(boxes)]
            if embs is not None:
                # an overlap never links two faces the embeddings tell apart
                sim = _similarity(open_, embs)
                scored = [x for x in scored if not sim[x[1], x[2]] < cfg.stitch_sim]
            match = {c: r for r, c in greedy_pairs(scored, cfg.iou)}
            if len(match) < min(len(open_), len(boxes)):
                free_t = [r for r in range(len(open_)) if r not in match.values()]
                free_f = [c for c in range(len(boxes)) if c not in match]
                sub = _stitch_scores(
                    [open_[r] for r in free_t], np.array([boxes[c] for c in free_f]),
                    None if embs is None else embs[free_f], cfg,
                )
                scored = [(float(sub[r, c]), int(r), int(c)) for r, c in zip(*np.nonzero(np.isfinite(sub)))]
                for r, c in greedy_pairs(scored, -np.inf):
                    match[free_f[c]] = free_t[r]
        for c, b in enumerate(boxes):
            row = lo + c
            e = embs[c] if embs is not None and np.isfinite(embs[c]).all() else None
            if c in match:
                open_[match[c]].add(row, b, t, e)
            else:
                o = _Open(next_id, shot, [], b, t, None)
                o.add(row, b, t, e)
                open_.append(o)
                next_id += 1
    finished += open_
    finished.sort(key=lambda o: o.id)
    return [Track(o.id, o.shot, np.array(o.rows, np.int64), video) for o in finished]


def track_video(records, cfg: TrackConfig | None = None) -> list[Track]:
    """Tracks of one video's log records (header, samples, cuts, done)."""
    return link(VideoLog.from_records(records), cfg or TrackConfig())


def summarise(video: VideoLog, tracks: list[Track]) -> dict:
    """Counts for ``facecut track``: shots, samples, faces, tracks, median track
    length (seconds, first to last detection plus one interval)."""
    lengths = [t.end - t.start + video.dt for t in tracks]
    return {
        "shots": len(video.shots),
        "samples": len(video.k),
        "faces": len(video.faces),
        "tracks": len(tracks),
        "median_track_s": float(np.median(lengths)) if lengths else 0.0,
    }


# --------------------------------------------------------------------------- work folder


def track_work(work, cfg: TrackConfig | None = None) -> list[dict]:
    """``facecut track``: one row per scanned video with its status and, for
    analysed ones, :func:`summarise` counts. Reads each log once; writes nothing."""

    cfg = cfg or TrackConfig()
    rows = []
    for info in work.load_scan().videos:
        status, reason, records = log_status(work, info)
        row = {"path": info.path, "status": status, "reason": reason}
        if records is not None:
            video = VideoLog.from_records(records)
            row.update(summarise(video, link(video, cfg)))
        rows.append(row)
    return rows
