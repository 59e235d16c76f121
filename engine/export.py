"""Handing the plan to the swap tools: a CSV of it, the best clips in one folder,
a person's best faces as a roop-unleashed face set.

* :func:`write_plan_csv` (``facecut score --csv FILE``): one row per clip with
  its score and parts, person and file.
* :func:`pick_clips` (``facecut pick``): the cut clips chosen by score (``--top
  N`` and/or ``--min-score S``, optionally one ``--person``), best first,
  copied or hard-linked (``--link``) into one folder as ``<rank>_<clip id>.<ext>``
  for roop-unleashed's or FaceFusion's batch mode, with ``picked.csv`` saying
  what was picked. Idempotent: the same command again changes nothing; a pick
  with other options removes the files an earlier pick put there (those listed
  in its ``picked.csv``) and nothing else.
* :func:`write_faceset` (``facecut faceset person:K -o face.fsz``): the person's
  best faces (largest, most frontal, sharpest, spread over their clips) cropped
  from the source frames, as roop-unleashed saves a face set: a zip of
  ``0.png``, ``1.png``, ... face crops with room around each face (roop detects
  the face in each picture again when it loads the set, as facecut's
  ``--identity`` does).

Everything is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facecut.errors import ConfigError
from facecut.fsio import OUT_MARKER, atomic_path, atomic_write_text, mark_folder, replace_with_retry, temp_name
from facecut.records import Clip, Plan
from facecut.workdir import WorkDir

log = logging.getLogger(__name__)

COLUMNS = ["rank", "score", "person", "file", "source", "start", "end", "duration", "face_px", "yaw", "pitch",
           "sharpness", "stability", "presence", "crowded", "id"]
PICKED = "picked.csv"


def _row(rank: int, clip: Clip, file: str) -> dict:
    q = clip.quality
    return {
        "rank": rank, "score": q.score if q else "", "person": "" if clip.person is None else clip.person,
        "file": file, "source": clip.source, "start": f"{clip.start:.3f}", "end": f"{clip.end:.3f}",
        "duration": f"{clip.end - clip.start:.3f}",
        **{k: ("" if q is None or getattr(q, k) is None else getattr(q, k))
           for k in ("face_px", "yaw", "pitch", "sharpness", "stability", "presence", "crowded")},
        "id": clip.id,
    }


def best_first(clips: list[Clip]) -> list[Clip]:
    """Clips by score, best first (unscored last); ties by source and time."""
    return sorted(clips, key=lambda c: (-(c.quality.score if c.quality else -1.0), c.source, c.start))


def _csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def write_plan_csv(plan: Plan, path: Path) -> int:
    """The whole plan as CSV, best first; returns the number of clips."""
    rows = [_row(i, c, c.file or "") for i, c in enumerate(best_first(plan.clips), 1)]
    atomic_write_text(Path(path), _csv_text(rows))
    return len(rows)


# --------------------------------------------------------------------------- pick


@dataclass
class PickResult:
    folder: Path
    picked: list[str] = field(default_factory=list)  # file names in the folder, best first
    written: int = 0  # files copied or linked by this call
    kept: int = 0  # already there from an earlier pick
    removed: list[str] = field(default_factory=list)  # an earlier pick's files no longer picked
    linked: bool = False


def _state(a: Path, b: Path) -> str:
    """What ``b`` is of ``a``: "link" (the same file), "copy" (same size and time), or ""."""
    try:
        sa, sb = a.stat(), b.stat()
    except OSError:
        return ""
    if os.path.samestat(sa, sb):
        return "link"
    return "copy" if sa.st_size == sb.st_size and sa.st_mtime_ns == sb.st_mtime_ns else ""


def pick_clips(work: WorkDir, folder: Path, *, top: int | None = None, min_score: float | None = None,
               person: int | None = None, link: bool = False, out_dir: Path | None = None) -> PickResult:
    """Copy (``link``: hard-link, copying where the file system cannot) the chosen
    cut clips into ``folder``; see the module doc. ``out_dir``: where the clips
    are (default: the output folder plan.json records)."""
    if top is None and min_score is None:
        raise ConfigError("pick: say how many (--top N) and/or how good (--min-score S)")
    plan = work.load_plan()
    if out_dir is None:
        try:
            out_dir = Path(plan.params["cut"]["out_dir"])
        except (KeyError, TypeError):
            raise ConfigError("pick: no clips cut yet (run `facecut cut` first, or give -o OUT of the cut)") from None
    if plan.clips and all(c.quality is None for c in plan.clips):
        raise ConfigError("pick: this plan has no quality scores (written before them): run `facecut score` again")
    chosen = [c for c in best_first(plan.clips) if c.file and c.quality is not None
              and (min_score is None or c.quality.score >= min_score) and (person is None or c.person == person)]
    if top is not None:
        chosen = chosen[:top]
    missing = [str(Path(out_dir) / c.file) for c in chosen if not (Path(out_dir) / c.file).is_file()]
    if missing:  # before anything is written: a pick is all or nothing
        raise ConfigError(f"pick: {len(missing)} clip file(s) missing, e.g. {missing[0]} (cut again to write them)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    mark_folder(folder, OUT_MARKER)  # a scan of a folder holding it skips it
    before = _earlier_pick(folder)
    res = PickResult(folder=folder, linked=link)
    rows = []
    linkable: bool | None = None  # whether this folder takes hard links, asked once
    for rank, clip in enumerate(chosen, 1):
        src = Path(out_dir) / clip.file
        name = f"{rank:03d}_{Path(clip.file).name}"
        dst = folder / name
        state = _state(src, dst)
        if link and state == "copy" and linkable is None:
            linkable = _can_link(src, folder)
        if state == ("link" if link else "copy") or (link and state == "copy" and not linkable):
            res.kept += 1  # (a copy where links are impossible is what --link makes there)
        else:
            _place(src, dst, link)
            res.written += 1
        res.picked.append(name)
        rows.append(_row(rank, clip, name))
    for name in sorted(before - set(res.picked)):
        (folder / name).unlink(missing_ok=True)
        res.removed.append(name)
    atomic_write_text(folder / PICKED, _csv_text(rows))
    return res


_PICKED_NAME = re.compile(r"^\d{3,}_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.(?:mp4|mkv)$")


def _earlier_pick(folder: Path) -> set[str]:
    """The files an earlier pick put in ``folder``: those its picked.csv lists that
    have a pick's own name (``<rank>_<clip id>.<ext>``), so an edited list can
    never make a pick delete anything else."""
    try:
        with open(folder / PICKED, newline="", encoding="utf-8") as f:
            return {r["file"] for r in csv.DictReader(f) if _PICKED_NAME.match(r.get("file") or "")}
    except (OSError, csv.Error, UnicodeDecodeError):
        return set()


def _can_link(src: Path, folder: Path) -> bool:
    probe = temp_name(folder / "link-probe")
    try:
        os.link(src, probe)
    except OSError:
        return False
    probe.unlink(missing_ok=True)
    return True


def _place(src: Path, dst: Path, link: bool) -> None:
    tmp = temp_name(dst)
    try:
        if link:
            try:
                os.link(src, tmp)
            except OSError as ex:  # another file system, FAT, a share without links
                log.warning("pick: cannot hard-link %s (%s): copying", src.name, ex)
                shutil.copy2(src, tmp)
        else:
            shutil.copy2(src, tmp)
        replace_with_retry(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------- face set


@dataclass
class _Shot:
    clip: Clip
    pts: int
    time: float  # seconds relative to the source's first frame
    box: tuple[float, float, float, float]
    goodness: float


FACESET_SIDE = 512  # px: longest side of a face-set picture
MARGIN = 0.6  # face sizes of room on each side of the face (roop finds the face again)


def write_faceset(work: WorkDir, who: str, out: Path, *, count: int = 8) -> int:
    """Write person ``who`` (``person:K``)'s best ``count`` faces as a face set at
    ``out``; returns how many pictures it holds."""
    from facecut.track import VideoLog

    try:
        k = int(who.split(":", 1)[1]) if who.startswith("person:") else int(who)
    except ValueError:
        raise ConfigError(f"faceset: expected person:N, got {who!r}") from None
    plan = work.load_plan()
    if not plan.people:
        raise ConfigError("faceset: this plan has no people groups (they need an embedding model: "
                          "--model buffalo_l, or scrfd with a recogniser in its folder)")
    person = next((p for p in plan.people if p.id == k), None)
    if person is None:
        raise ConfigError(f"faceset: no person:{k} (there are {', '.join(f'person:{p.id}' for p in plan.people)})")
    centroid = np.asarray(person.centroid, np.float64)
    threshold = float(plan.params.get("people_threshold", 0.6))
    candidates: list[_Shot] = []
    from facecut.logio import read_records
    from facecut.records import LogRecord

    theirs = [c for c in plan.clips if c.person == k]
    for key in dict.fromkeys(c.key for c in theirs):  # each log read once
        log_path = work.log_path(key)
        if not log_path.exists():
            log.warning("faceset: no analysis log %s", log_path.name)
            continue
        video = VideoLog.from_records(read_records(log_path, LogRecord))
        for clip in (c for c in theirs if c.key == key):
            candidates += _faces_of(video, clip, centroid, threshold)
    chosen = _spread(candidates, count)
    if not chosen:
        raise ConfigError(f"faceset: no usable face of person:{k} found in the logs")
    scan = work.load_scan()
    infos = {v.path: v for v in scan.videos}
    crops = []
    for source in dict.fromkeys(s.clip.source for s in chosen):
        shots = [s for s in chosen if s.clip.source == source]
        info = infos.get(source)
        if info is None:
            log.warning("faceset: %s is no longer in the scan: its faces are left out", source)
            continue
        try:
            crops += _crops(info.fs_path(scan.input_dir), info.stream_index, shots)
        except ConfigError as ex:  # one unreadable source: the others still give faces
            log.warning("%s", ex)
    if not crops:
        raise ConfigError(f"faceset: no face of person:{k} could be decoded from the sources")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:
        for i, png in enumerate(crops):
            z.writestr(f"{i}.png", png)
    return len(crops)


def _faces_of(video, clip: Clip, centroid: np.ndarray, threshold: float) -> list[_Shot]:
    """The person's face in each sample of the clip's span (nearest the group mean)."""
    f = video.faces
    if f.emb is None or not len(f):
        return []
    g = video.k[f.sample] * video.dt
    rows = np.flatnonzero((g >= clip.start) & (g < clip.end) & np.isfinite(f.emb).all(axis=1))
    out = []
    sharp = f.sharp if f.sharp is not None else np.full(len(f), -1.0)
    for r in rows:
        if 1.0 - float(f.emb[r].astype(np.float64) @ centroid) > threshold:
            continue
        s = int(f.sample[r])
        goodness = (f.short[r] * max(0.0, 1 - abs(f.yaw[r]) / 60) * max(0.0, 1 - abs(f.pitch[r]) / 60)
                    * (1.0 if sharp[r] < 0 else min(1.0, np.log10(max(sharp[r], 1.0)) / 2.7)))
        out.append(_Shot(clip, int(video.pts[s]), float(video.time[s]), tuple(f.box[r]), goodness))
    return out


def _spread(shots: list[_Shot], count: int) -> list[_Shot]:
    """The best ``count``, at least 1 s apart within a clip, taking from every clip
    in turn before a clip gives a second one."""
    ranked = sorted(shots, key=lambda s: -s.goodness)
    chosen: list[_Shot] = []
    for round_ in range(count):
        taken_clips: set[str] = set()
        for s in ranked:
            if len(chosen) >= count:
                break
            if s in chosen or s.goodness <= 0 or s.clip.id in taken_clips:
                continue
            if any(c.clip.id == s.clip.id and abs(c.time - s.time) < 1.0 for c in chosen):
                continue
            chosen.append(s)
            taken_clips.add(s.clip.id)
        if len(chosen) >= count or not taken_clips:
            break
    return chosen


def _crops(path: Path, stream_index: int, shots: list[_Shot]) -> list[bytes]:
    """PNG face crops of ``shots`` (one source), decoded at their exact frames."""
    import av
    import cv2

    from facecut.decode import frame_to_bgr

    out = []
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as ex:
        raise ConfigError(f"faceset: cannot read the source {path}: {ex}") from ex
    with container:
        stream = container.streams[stream_index]
        for s in sorted(shots, key=lambda s: s.pts):
            frame = None
            container.seek(s.pts, stream=stream, backward=True)
            for fr in container.decode(stream):
                if fr.pts is not None and fr.pts >= s.pts:
                    frame = fr
                    break
            if frame is None:
                log.warning("faceset: %s: no frame at pts %d", path.name, s.pts)
                continue
            img, _ = frame_to_bgr(frame, 0)
            out.append(_crop_png(img, s.box, cv2))
    return out


def _crop_png(img: np.ndarray, box, cv2) -> bytes:
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1) * (1 + 2 * MARGIN)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    a, b = int(round(cx - side / 2)), int(round(cy - side / 2))
    n = int(round(side))
    h, w = img.shape[:2]
    pad = max(0, -a, -b, a + n - w, b + n - h)
    if pad:
        img = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        a, b = a + pad, b + pad
    crop = img[b:b + n, a:a + n]
    if n > FACESET_SIDE:
        crop = cv2.resize(crop, (FACESET_SIDE, FACESET_SIDE), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".png", crop)
    if not ok:
        raise ConfigError("faceset: could not encode a face picture")
    return data.tobytes()
