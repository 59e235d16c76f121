"""What a work folder's logs say about each scanned video, and what a run does with it.

``plan_run`` decides, per scanned video, whether it is finished (skipped),
resumes after its log's committed prefix, or starts; a local run and the
cluster client use it alike, so both make the same decisions and refuse the
same mismatched settings. ``log_status`` is the later stages' reading of the
same logs (track, score): ok/partial with the records, pending, or failed.

Resume rule: a video's log is a committed prefix (facecut.videolog). A new job
continues after the last committed sample: one seek to the keyframe before the
last logged cut (the shot detector restarts at that cut, exactly as it was right
after detecting it), no further seeks; with timestamps that are not monotonic it
decodes from the start and drops what is already committed.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from facecut.config import AnalyzeConfig, comparable_params
from facecut.errors import ConfigError, LogCorruption
from facecut.fsio import replace_with_retry
from facecut.workdir import WorkDir
from facecut.logio import read_first
from facecut.protocol import DecodeJob
from facecut.records import LogHeader, LogRecord, ScanResult, VideoInfo
from facecut.scan import probe
from facecut.videolog import LogState, VideoRun, finished_state, read_log_state, write_markers

log = logging.getLogger(__name__)


@dataclass
class ResumePlan:
    """The videos of a run and what is left to do."""

    work: WorkDir
    cfg: AnalyzeConfig
    input_dir: Path
    videos: list[VideoRun] = field(default_factory=list)  # every video of the run
    queue: deque[VideoRun] = field(default_factory=deque)  # those still to analyse, in order
    warnings: deque[str] = field(default_factory=lambda: deque(maxlen=8))
    done_seconds_before: float = 0.0  # video seconds finished by earlier runs

    def warn(self, text: str) -> None:
        log.warning("%s", text)
        self.warnings.append(text)

    def unchanged_or_reprobed(self, vr: VideoRun) -> bool:
        """Is the file still the one scanned (size + mtime), or, when it changed
        (replaced, rewritten) since the scan, probed again? An analysis of its
        old content is set aside. False: it cannot be analysed now (reported)."""
        info = vr.info
        path = info.fs_path(self.input_dir)
        try:
            st = path.stat()
        except OSError as ex:
            vr.status, vr.reason = "failed", f"gone since the scan ({ex.strerror or ex})"
            self.warn(f"{info.path}: {vr.reason}")
            return False
        if st.st_size == info.size and st.st_mtime_ns == info.mtime_ns:
            return True
        new = probe(path, info.path)
        if new.status != "ok":
            vr.status, vr.reason = "failed", f"changed since the scan and no longer readable: {new.reason}"
            self.warn(f"{info.path}: {vr.reason}")
            return False
        if new.fingerprint != info.fingerprint:
            self.warn(f"{info.path}: the file changed since the scan: probed again"
                      + ("; its earlier analysis is set aside" if vr.state.header is not None else ""))
            if vr.state.header is not None:
                vr.close()
                set_aside(vr.log_path, "changed")
                vr.state = LogState()
        vr.info = msgspec.structs.replace(new, raw_path=info.raw_path)  # probe() knows the shown name only
        return True


def plan_run(work: WorkDir, cfg: AnalyzeConfig, *, scan: ScanResult | None = None,
             only: set[str] | None = None) -> ResumePlan:
    """Decide, per scanned video (``only``: just these relative paths), whether it
    is done, resumes, or starts. Raises ConfigError when a log was made with
    other settings, LogCorruption when one is damaged beyond its tail."""
    scan = scan or work.load_scan()
    cfg = bind_model_files(cfg)
    plan = ResumePlan(work=work, cfg=cfg, input_dir=Path(scan.input_dir))
    for info in scan.videos:
        if info.status != "ok" or (only is not None and info.path not in only):
            continue
        path = work.log_path(info.key)
        try:
            state = finished_state(work, info.key) or read_log_state(path)
        except LogCorruption as ex:
            raise LogCorruption(f"{ex} (move the file away to re-analyse {info.path})") from ex
        vr = VideoRun(info=info, key=info.key, log_path=path, state=state)
        plan.videos.append(vr)
        h = state.header
        if h is not None:
            if h.fingerprint != info.fingerprint:
                plan.warn(f"{info.path}: file changed since it was analysed; starting it again")
                set_aside(path, "changed")
                vr.state = LogState()
            else:
                check_params(work, cfg, info, h)
        done = vr.state.done
        if done is not None:
            if not work.done_path(info.key).exists():  # killed between the Done record and the marker
                write_markers(work, info, info.key, vr.state.cuts, done)
            if done.status == "failed" and cfg.retry_failed:
                set_aside(path, "failed")
                vr.state = LogState()
            else:
                vr.status, vr.reason = done.status, done.reason
                plan.done_seconds_before += info.duration
                continue
        plan.queue.append(vr)
    return plan


def bind_model_files(cfg: AnalyzeConfig) -> AnalyzeConfig:
    """``cfg`` with ``model_files`` naming the files its model loads on this machine
    (always computed here: a setting made on another machine does not count)."""
    from facecut.models.base import model_files_identity

    return msgspec.structs.replace(cfg, model_files=model_files_identity(cfg.model, cfg.model_dir, cfg.model_options))


def check_params(work: WorkDir, cfg: AnalyzeConfig, info: VideoInfo, h: LogHeader) -> None:
    """Refuse to continue a log made with other analysis settings."""
    want = {
        "fps": cfg.fps,
        "max_side": cfg.max_side,
        "model": cfg.model,
        "model_params": cfg.model_params(),
        "detector": cfg.detector,
        "detector_params": cfg.detector_params(),
    }
    got = {k: getattr(h, k) for k in want}
    for k in ("model_params", "detector_params"):
        got[k] = comparable_params(got[k])
    logged = _params(got["model_params"])
    if "model_files" not in logged or not cfg.model_files:
        # one side cannot tell: a log from before logs named their files, or a
        # machine without the model folder (a cluster client; a local run fails
        # to load and says why): the files are not compared
        want["model_params"] = msgspec.structs.replace(cfg, model_files={}).model_params()
        if logged.pop("model_files", None) is not None:
            got["model_params"] = json.dumps(logged, sort_keys=True)
    diff = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
    for k in ("model_params", "detector_params"):  # name only the parts that differ
        if k in diff and (a := _params(diff[k][0])) and (b := _params(diff[k][1])):
            diff[k] = _differing(a, b)
    if diff:
        lines = "; ".join(f"{k}: logged {a!r}, asked {b!r}" for k, (a, b) in diff.items())
        files = list(diff) == ["model_params"] and set(diff["model_params"][0]) == {"model_files"}
        raise ConfigError(
            f"{info.path} was analysed in {work.root} with other settings ({lines}). "
            + ("The model folder holds other files than when it was analysed: point --model-dir at those, "
               "or use a new work folder." if files else "Use the same options, or a new work folder.")
        )


def _differing(a: dict, b: dict) -> tuple[dict, dict]:
    """The parts of ``a`` and ``b`` that differ (into nested objects)."""
    out_a, out_b = {}, {}
    for n in sorted({*a, *b}):
        x, y = a.get(n), b.get(n)
        if x != y:
            out_a[n], out_b[n] = _differing(x, y) if isinstance(x, dict) and isinstance(y, dict) else (x, y)
    return out_a, out_b


def _params(text: str) -> dict:
    """A ``model_params`` / ``detector_params`` JSON object ({} when it is not one)."""
    try:
        p = json.loads(text)
    except ValueError:
        return {}
    return p if isinstance(p, dict) else {}


def set_aside(path: Path, why: str) -> None:
    """Keep an analysis that is no longer valid next to the log, under another name."""
    if path.exists():
        replace_with_retry(path, path.with_name(f"{path.name}.{why}-{int(time.time())}"))
    done = path.with_suffix(".done")
    if done.exists():
        done.unlink()


def log_status(work: WorkDir, info: VideoInfo) -> tuple[str, str, list | None]:
    """(status, reason, records) of one scanned video's log in ``work``.

    status: ``failed`` (scan or analysis failed; reason says why), ``pending``
    (not analysed, unfinished, or analysed from a file that has changed since),
    or the Done record's ``ok``/``partial`` with the records. A damaged log is
    ``failed`` with the damage as reason (per-item failure is data).
    """
    if info.status != "ok":
        return "failed", info.reason, None
    path = work.log_path(info.key)
    if not path.exists():
        return "pending", "not analysed yet", None
    try:
        st = read_log_state(path, keep=True)
    except LogCorruption as ex:
        return "failed", f"analysis log damaged: {ex}", None
    if st.header is None:
        return "pending", "analysis not started", None
    if st.header.fingerprint != info.fingerprint:
        return "pending", "file changed since it was analysed", None
    if st.done is None:
        return "pending", f"analysis not finished ({st.samples} samples so far)", None
    if st.done.status == "failed":
        return "failed", st.done.reason, None
    return st.done.status, st.done.reason, st.records


def logged_fast_decode(work: WorkDir) -> str | None:
    """The ``--fast-decode`` level the logs in ``work`` were made with (None: no log
    yet): a level from the bench profile yields to it, so a resume is never refused."""
    for path in sorted(work.analysis_dir.glob("*.fclog")):
        h = read_first(path, LogRecord)
        if isinstance(h, LogHeader):
            try:
                return json.loads(h.model_params).get("fast_decode", "off")
            except ValueError:
                return None
    return None


def decode_job(vr: VideoRun, cfg: AnalyzeConfig, job_id: int, input_dir: Path, threads: int) -> DecodeJob:
    """The decoder's job for ``vr``: from the start, or after its log's committed
    prefix (see the module doc for the two ways of resuming)."""
    st = vr.state
    resume = st.header is not None
    cut = st.last_cut if resume else None
    seek = resume and st.monotonic
    return DecodeJob(
        job_id=job_id,
        path=os.fsencode(vr.info.fs_path(input_dir)),
        rel=vr.info.path,
        stream_index=vr.info.stream_index,
        fps=cfg.fps,
        max_side=cfg.max_side,
        start_k=st.last_k + 1,
        t0=st.header.t0 if resume else None,
        resume_cut_pts=cut.pts if (cut and seek) else None,
        resume_cut_time=cut.time if cut else None,
        last_sample_pts=st.last_pts if seek else None,
        detector=cfg.detector,
        threshold=cfg.threshold,
        min_scene_len=cfg.min_scene_len,
        shot_width=cfg.shot_width,
        error_budget=cfg.error_budget,
        threads=threads,
        fast=cfg.fast_decode,
        hwaccel=cfg.hwaccel,
    )
