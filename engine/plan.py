"""The plan of a work folder: every scanned video scored (facecut.score), the
clips grouped into people (facecut.people), the options that shaped it.

A pure function of the logs and the options, except for what it keeps from the
plan already in the folder: the people ids, so ``person:K`` stays K, and what
cut wrote for clips that are still planned (same id: same source and span), so
a re-score does not undo a cut.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter

import msgspec
import numpy as np

from facecut.config import ScoreConfig
from facecut.errors import ConfigError
from facecut.logio import read_first
from facecut.people import PersonFilter, group_people
from facecut.records import CUT_FIELDS, LogHeader, LogRecord, Plan, SourcePlan, VideoInfo
from facecut.resume import log_status
from facecut.score import REASONS, rounded, score_video
from facecut.workdir import WorkDir

log = logging.getLogger(__name__)


def plan_from_work(work: WorkDir, cfg: ScoreConfig | None = None, *, identity=None) -> Plan:
    """The plan of every scanned video in ``work``: reads scan.json and each log
    once. Videos not (completely) analysed are listed as ``pending``, failed ones
    with their reason. ``identity``: a path (image, folder, ``.fsz``), ``person:K``
    (a people group of this work folder), an :class:`facecut.identity.Identity`,
    or None for ``cfg.identity``. With embeddings, the clips are grouped into
    people (facecut.people), ids kept from the plan already in ``work``."""

    cfg = cfg or ScoreConfig()
    scan = work.load_scan()
    videos = [v for v in scan.videos if v.status != "duplicate"]  # a duplicate's twin is planned
    # Headers only (the first frame of each log): the model and settings the plan
    # records, and what --identity needs. Then one video's records at a time:
    # memory stays bounded however many hours were analysed.
    headers = [h for h in (_header(work, v) for v in videos) if h is not None]
    before = _previous_plan(work)
    previous = before.people if before is not None else []
    wanted = identity if identity is not None else cfg.identity
    if isinstance(wanted, str) and wanted.startswith("person:"):
        ident = _person_filter(work, videos, cfg, wanted, previous)
    else:
        ident = _identity(wanted, headers, cfg)
    _warn_min_face(headers, cfg)
    sources, clips, faces = _plan_videos(work, videos, cfg, ident)
    ids, people = group_people(faces, cfg.people_threshold, previous)
    for c in clips:
        c.person = ids.get(c.id)
    params = plan_params(cfg, headers, ident if ident is not None else wanted)
    if before is not None and "cut" in before.params:  # clips already cut stay cut (same id: same span)
        params["cut"] = before.params["cut"]
        done = {c.id: c for c in before.clips if c.file}
        for c in clips:
            if c.id in done:
                for name in CUT_FIELDS:
                    setattr(c, name, getattr(done[c.id], name))
    return Plan(
        created=time.time(),
        input_dir=scan.input_dir,
        model=headers[0].model if headers else "",
        params=params,
        sources=sources,
        clips=clips,
        rejected=rejected_counts(sources),
        people=people,
    )


def _plan_videos(work: WorkDir, videos: list[VideoInfo], cfg: ScoreConfig, ident):
    sources, clips, faces = [], [], []
    for info in videos:
        status, reason, records = log_status(work, info)
        if records is None:
            sources.append(
                SourcePlan(path=info.path, key=info.key, status=status, reason=reason,
                           duration=rounded(info.duration), fingerprint=info.fingerprint, raw_path=info.raw_path,
                           size=info.size, mtime_ns=info.mtime_ns)
            )
            continue
        src, cl = score_video(info, records, cfg, work=work, identity=ident, faces=faces)
        del records
        sources.append(src)
        clips += cl
    return sources, clips, faces


def _previous_plan(work: WorkDir) -> Plan | None:
    """The plan already in ``work``: its people ids and cut clips are kept."""
    if not work.plan_json.exists():
        return None
    try:
        return work.load_plan()
    except ConfigError as ex:
        log.warning("starting the plan afresh: %s", ex)
        return None


def _person_filter(work: WorkDir, videos, cfg: ScoreConfig, wanted: str, previous) -> PersonFilter:
    """``--identity person:K``: person K of the groups the batch makes without it."""
    try:
        k = int(wanted.split(":", 1)[1])
    except ValueError:
        raise ConfigError(f"--identity {wanted}: expected person:N, N a people group number") from None
    _, _, faces = _plan_videos(work, videos, cfg, None)
    if not faces:
        raise ConfigError(f"--identity {wanted}: people groups need an embedding model "
                          "(--model buffalo_l, or scrfd with a recogniser in its folder)")
    _, people = group_people(faces, cfg.people_threshold, previous)
    match = next((p for p in people if p.id == k and p.clips), None)
    if match is None:
        raise ConfigError(f"--identity {wanted}: no such people group with clips (there are "
                          f"{', '.join(f'person:{p.id}' for p in people if p.clips)})")
    others = [p.centroid for p in people if p.id != k and p.clips]
    return PersonFilter(path=wanted, reference=np.asarray(match.centroid, np.float64),
                        threshold=cfg.people_threshold, faces=match.clips,
                        others=np.asarray(others, np.float64) if others else None)


def _header(work: WorkDir, info: VideoInfo) -> LogHeader | None:
    """The log header of a scanned video analysed from this very file (None: none)."""
    if info.status != "ok":
        return None
    h = read_first(work.log_path(info.key), LogRecord)
    return h if isinstance(h, LogHeader) and h.fingerprint == info.fingerprint else None


def rejected_counts(sources: list[SourcePlan]) -> dict[str, int]:
    """Rejected tracks by reason, every reason listed (0 included), in REASONS order."""
    c = Counter(t.reason for s in sources for t in s.tracks if t.status == "rejected")
    return {r: c.get(r, 0) for r in REASONS}


def plan_params(cfg: ScoreConfig, headers, identity=None) -> dict:
    """Every option that shaped the plan: the score and track options, the
    identity reference (an Identity, or the path asked for), and the analysis
    settings from the logs."""
    params = msgspec.to_builtins(cfg)
    if isinstance(identity, (str, os.PathLike)):  # asked for, nothing analysed to filter yet
        params["identity"] = str(identity)
    elif identity is not None:
        params["identity"] = identity.path
        params["identity_faces"] = identity.faces
    if headers:
        h = headers[0]
        params["analysis"] = {
            "fps": h.fps, "max_side": h.max_side, "model": h.model,
            "model_params": msgspec.json.decode(h.model_params) if h.model_params else {},
            "detector": h.detector,
            "detector_params": msgspec.json.decode(h.detector_params) if h.detector_params else {},
        }
    return params


def _identity(value, headers, cfg: ScoreConfig):
    if value is None:
        return None
    from facecut.identity import Identity, build_identity

    if isinstance(value, Identity | PersonFilter):
        return value
    if not headers:
        return None  # nothing analysed yet: no track to compare (and no model to embed with)
    models = sorted({h.model for h in headers})
    if len(models) > 1:
        raise ConfigError(
            f"--identity: the logs in this work folder come from several models ({', '.join(models)})"
        )
    return build_identity(
        value, models[0], threshold=cfg.identity_threshold,
        model_dir=cfg.model_dir, provider=cfg.provider,
    )


def _warn_min_face(headers, cfg: ScoreConfig) -> None:
    for h in headers[:1]:
        try:
            analysed = float(msgspec.json.decode(h.model_params).get("min_face", 0))
        except (msgspec.DecodeError, AttributeError, TypeError, ValueError):
            return
        if cfg.min_face < analysed:
            log.warning(
                "--min-face %g is below the analysis' %g: faces smaller than the analysis' gate may be "
                "missing from the logs (re-analyse to lower it)", cfg.min_face, analysed,
            )
