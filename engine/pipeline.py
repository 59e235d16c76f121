"""``facecut run``: the whole chain, resumable, with finished videos streamed
into score -> cut while the others are still being analysed.

scan -> analyze (coordinator) -> [per finished video: score -> cut] -> final plan
-> cut (whatever is left) -> report. Every stage is idempotent: a re-run after a
crash, Ctrl-C or reboot continues; a finished batch re-run only re-scores, cuts
what changed and rewrites the report.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


from facecut.config import AnalyzeConfig, ScoreConfig
from facecut.errors import EXIT_OK, EXIT_SOME_FAILED, ConfigError
from facecut.workdir import WorkDir
from facecut.records import Plan, ScanResult
from facecut.stats import RunStats

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    scan: ScanResult
    analysis: object | None = None  # coordinator.AnalyzeResult
    plan: Plan | None = None
    cut: object | None = None  # cut.CutResult
    report: Path | None = None
    elapsed: float = 0.0
    rows: list[dict] = field(default_factory=list)  # per-source summary
    streamed: dict[str, int] = field(default_factory=dict)  # source -> clips cut while the analysis ran

    @property
    def exit_code(self) -> int:
        failed = any(r["status"] in ("failed", "partial") for r in self.rows)
        if self.cut is not None and not self.cut.ok:
            failed = True
        return EXIT_SOME_FAILED if failed else EXIT_OK


def _check_person(work: WorkDir, wanted: str) -> None:
    """``--identity person:K`` names a group of this work folder's plan: say so
    before any analysis when there is none."""
    people = work.load_plan().people if work.plan_json.exists() else []
    if not any(p.id == int(wanted.split(":", 1)[1]) and p.clips for p in people):
        raise ConfigError(f"--identity {wanted}: people groups come from an earlier run of this work folder "
                          "with an embedding model (see its report); "
                          + (f"there are {', '.join(f'person:{p.id}' for p in people if p.clips)}" if people
                             else "there is none yet"))


class _Streamer:
    """Scores and cuts each video as soon as its analysis is finished, in one
    background thread (the cut is mostly I/O; scoring a video takes milliseconds).

    Each finished video costs only its own clips: it is scored alone and its
    clips are cut alone (``cut_clips`` on a one-source plan); the clips written
    go into ``cache``, so the final pass over the whole plan opens none of them
    again. plan.json is written by the final pass, or from the fragments
    scored so far when the run is interrupted."""

    def __init__(self, work: WorkDir, input_dir: str, out: Path, score_cfg: ScoreConfig, identity,
                 cut_opts: dict, counters: dict, hold: bool = False) -> None:
        from facecut.cut import CutCache

        self.input_dir = input_dir
        self.work, self.out, self.cfg, self.identity, self.cut_opts = work, out, score_cfg, identity, cut_opts
        self.counters = counters
        self.hold = hold
        self.cache = CutCache()
        self.written: dict[str, int] = {}  # source -> clips this thread cut
        self.q: queue.Queue = queue.Queue()
        self.errors: list[str] = []
        self.scored: dict[str, tuple] = {}  # source -> (SourcePlan, clips)
        self.thread = threading.Thread(target=self._run, name="facecut-stream", daemon=True)
        self.thread.start()

    def video_done(self, info) -> None:
        if not self.hold:  # (--identity person:K: who K is needs the whole batch)
            self.q.put(info)

    def close(self) -> None:
        if self.thread.is_alive():
            self.q.put(None)
            self.thread.join()

    def write_plan_so_far(self) -> None:
        """plan.json from the videos scored so far (an interrupted run)."""
        
        if self.scored:
            sources = [s for s, _ in self.scored.values()]
            clips = [c for _, cl in self.scored.values() for c in cl]
            before = self.work.load_plan() if self.work.plan_json.exists() else None
            self.work.save_plan(Plan(created=time.time(), input_dir=self.input_dir, sources=sources, clips=clips,
                                     people=before.people if before else []))  # ids kept for the next score

    def _run(self) -> None:
        while True:
            info = self.q.get()
            if info is None:
                return
            try:
                self._one(info)
            except Exception as ex:  # noqa: BLE001 - the final pass redoes it; never kill the run
                log.warning("streaming score/cut of %s failed (the final pass retries): %s", info.path, ex)
                self.errors.append(f"{info.path}: {ex}")

    def _one(self, info) -> None:
        from facecut.cut import cut_clips
        from facecut.logio import read_records
        from facecut.records import LogRecord
        from facecut.score import score_video

        records = read_records(self.work.log_path(info.key), LogRecord)
        source, clips = score_video(info, records, self.cfg, work=self.work, identity=self.identity)
        del records
        self.scored[info.path] = (source, clips)
        c = self.counters
        c["tracks"] = c.get("tracks", 0) + len(source.tracks)
        c["segments"] = c["clips_total"] = c.get("segments", 0) + len(clips)
        if not clips:
            return
        fragment = Plan(created=time.time(), input_dir=self.input_dir, sources=[source], clips=clips)
        result, _ = cut_clips(fragment, self.out, cache=self.cache, **self.cut_opts)
        for sc in result.sources:
            if sc.written:
                self.written[sc.source] = self.written.get(sc.source, 0) + sc.written
        c["clips_cut"] = c.get("clips_cut", 0) + result.written + result.skipped


def scan_exclusions(input_dir: Path, out_dir: Path, work: WorkDir) -> tuple[Path, Path]:
    """The folders a scan of ``input_dir`` must not walk into (OUT and WORK may lie
    inside it: their files are never inputs). OUT cannot be the input folder itself."""
    out_dir = Path(out_dir).expanduser().resolve()
    if out_dir == Path(input_dir).expanduser().resolve():
        raise ConfigError(f"the output folder is the input folder ({out_dir}): clips would be written among "
                          "the videos and taken as inputs by the next run; give -o another folder "
                          "(a sub-folder is fine)")
    return out_dir, work.root


def run_batch(
    input_dir: Path,
    out_dir: Path,
    work: WorkDir,
    *,
    scan_opts: dict,
    analyze_cfg: AnalyzeConfig,
    score_cfg: ScoreConfig,
    cut_opts: dict,
    on_stats: Callable[[RunStats], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
    cluster: str | None = None,
    pinned: list[str] | None = None,
) -> RunResult:
    from facecut.coordinator import analyze
    from facecut.cut import cut_plan
    from facecut.report import write_report
    from facecut.scan import scan
    from facecut.plan import plan_from_work

    t0 = time.perf_counter()
    stage = on_stage or (lambda s: None)
    exclude = scan_exclusions(input_dir, out_dir, work)
    work.ensure()
    out_dir = Path(out_dir).expanduser().resolve()

    stage("scan")
    result = RunResult(scan=scan(input_dir, **scan_opts, exclude=exclude))
    work.save_scan(result.scan)

    identity = None
    person = bool(score_cfg.identity) and score_cfg.identity.startswith("person:")
    if person:  # a people group of an earlier run of this work folder
        _check_person(work, score_cfg.identity)
    elif score_cfg.identity:
        from facecut.identity import build_identity

        # Fails early (before hours of analysis) when the model has no embeddings.
        identity = build_identity(score_cfg.identity, analyze_cfg.model, threshold=score_cfg.identity_threshold,
                                  model_dir=analyze_cfg.model_dir, provider=analyze_cfg.provider)

    counters: dict = {}
    streamer = _Streamer(work, result.scan.input_dir, out_dir, score_cfg, identity, cut_opts, counters,
                         hold=person)

    def stats(snap: RunStats) -> None:
        for k, v in counters.items():
            setattr(snap, k, v)
        if on_stats is not None:
            on_stats(snap)

    stage("analyze")
    try:
        if cluster:  # one Dask task per video (facecut.cluster); the rest of the chain is unchanged
            from facecut.cluster import analyze_on_cluster

            result.analysis = analyze_on_cluster(work, analyze_cfg, cluster, pinned=pinned, on_stats=stats,
                                                 on_video_done=streamer.video_done)
        else:
            result.analysis = analyze(work, analyze_cfg, on_stats=stats, on_video_done=streamer.video_done)
    except BaseException:
        streamer.close()
        streamer.write_plan_so_far()
        raise
    finally:
        streamer.close()
        result.streamed = streamer.written

    stage("score")
    plan = plan_from_work(work, score_cfg, identity=identity)
    work.save_plan(plan)
    stage("cut")
    result.cut = cut_plan(work, out_dir, **cut_opts, cache=streamer.cache)
    result.plan = work.load_plan()
    stage("report")
    result.report = write_report(work, out_dir)
    result.elapsed = time.perf_counter() - t0

    clips_by_source: dict[str, list] = {}
    for c in result.plan.clips:
        clips_by_source.setdefault(c.source, []).append(c)
    cut_failures = {s.source: s for s in result.cut.sources if s.status in ("failed", "partial")}
    # A video whose cluster task failed twice stays pending on disk (the next run retries it):
    # report it failed with its reason for this run.
    lost = {v.info.path: v.reason for v in result.analysis.videos if v.status == "failed"}
    # One row per scanned file, in scan order: a file that failed the scan is also
    # a (failed) source of the plan; its plan row says it once.
    planned = {sp.path: sp for sp in result.plan.sources}
    for v in result.scan.videos:
        if v.path in planned:
            result.rows.append(_plan_row(planned.pop(v.path), clips_by_source, lost, cut_failures))
        elif v.status in ("failed", "duplicate"):
            result.rows.append({"source": v.path, "status": v.status, "duration": 0.0, "reason": v.reason})
    result.rows += [_plan_row(sp, clips_by_source, lost, cut_failures) for sp in planned.values()]
    return result


def _plan_row(sp, clips_by_source: dict, lost: dict, cut_failures: dict) -> dict:
    """The summary row of one planned source."""
    clips = clips_by_source.get(sp.path, [])
    row = {"source": sp.path, "status": sp.status, "duration": sp.duration, "clips": len(clips),
           "clip_seconds": sum(c.end - c.start for c in clips), "reason": sp.reason}
    if sp.status == "pending" and sp.path in lost:
        row["status"], row["reason"] = "failed", lost[sp.path]
    if sp.path in cut_failures:
        row["reason"] = (row["reason"] + "; " if row["reason"] else "") + f"cut: {cut_failures[sp.path].reason}"
    return row
