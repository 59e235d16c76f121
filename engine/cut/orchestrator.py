"""The orchestrator: ``cut_plan`` / ``cut_clips`` read each source once (or
twice when some clips must be re-encoded), skip the clips already there, run
the copy or encode pass, and record what was written into the plan and the
per-source report (the result types live here).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import av
import msgspec

from facecut.cut.copy_pass import _CopyPass
from facecut.cut.encode_pass import _EncodePass
from facecut.cut.files import CutCache, _clear_cut, _existing, _write_sidecar, clean_temp_files
from facecut.cut.spans import _CopySpan, _EncodeSpan, _Span
from facecut.cut.streams import _audio, _copy_plan, _main_video, _unknown_audio_note
from facecut.errors import ConfigError
from facecut.fsio import (
    OUT_MARKER,
    UnsafePath,
    display_name,
    fingerprint,
    inside,
    mark_folder,
    output_folder,
    text_name,
)
from facecut.media import ffmpeg_reason, open_input, refusal_reason
from facecut.records import CUT_FIELDS, Plan, SourcePlan
from facecut.timeline import start_seconds
from facecut.workdir import WorkDir

log = logging.getLogger("facecut.cut")  # the package's name, as its log lines said before the split


# --------------------------------------------------------------------------- results


class SourceCut(msgspec.Struct, kw_only=True):
    """What happened to one source. ``status``: ``ok`` (every clip there),
    ``skipped`` (nothing to do, the source was not opened), ``partial`` (some
    clips failed), ``failed`` (none could be written)."""

    source: str
    status: Literal["ok", "skipped", "partial", "failed"] = "ok"
    reason: str = ""
    container: str = ""  # "mp4" | "mkv"
    clips: int = 0  # planned for this source
    written: int = 0
    skipped: int = 0  # already there and matching (or adopted)
    failed: int = 0
    bytes: int = 0  # written by this run
    opens: int = 0  # times the source was opened for reading (1 when anything was cut)
    seconds: float = 0.0
    notes: list[str] = []  # things a person should know (MKV fallback, discontinuities...)
    failures: dict[str, str] = {}  # clip id -> reason


def _total(count: str) -> property:
    """A read-only ``CutResult`` attribute: SourceCut's ``count`` summed over the sources."""
    return property(lambda self: sum(getattr(s, count) for s in self.sources), doc=f"{count}, all sources")


class CutResult(msgspec.Struct, kw_only=True):
    out_dir: str
    accurate: bool
    sources: list[SourceCut] = []

    written = _total("written")
    skipped = _total("skipped")
    failed = _total("failed")
    bytes = _total("bytes")
    opens = _total("opens")

    @property
    def ok(self) -> bool:
        return all(s.status in ("ok", "skipped") for s in self.sources)


class CutProgress(msgspec.Struct, kw_only=True):
    """Snapshot handed to ``progress``: after each clip and a few times a second."""

    source: str
    source_index: int  # 0-based
    sources: int
    clips_done: int  # of this source (written + skipped + failed)
    clips: int
    position: float  # seconds read of this source (relative to t0)
    duration: float  # seconds, 0 when unknown


Progress = Callable[[CutProgress], None]



# --------------------------------------------------------------------------- driver


class _SourceFailed(Exception):
    pass



class _Ticker:
    """Throttled progress snapshots (at most 4 a second, plus one per finished clip)."""

    def __init__(self, progress: Progress | None, rel: str, index: int, sources: int, clips: int, duration: float):
        self.progress = progress
        self.snap = CutProgress(source=rel, source_index=index, sources=sources, clips_done=0,
                                clips=clips, position=0.0, duration=duration)
        self.last = 0.0
        self.done_base = 0
        self.pass_ = None

    def __call__(self, position: float, force: bool = False) -> None:
        if self.progress is None:
            return
        now = time.perf_counter()
        if not force and now - self.last < 0.25:
            return
        self.last = now
        self.snap.position = max(0.0, position)
        self.snap.clips_done = self.done_base + (len(self.pass_.done) if self.pass_ else 0)
        self.progress(self.snap)


_PLAN_WRITE_EVERY = 5.0  # seconds: plan.json is rewritten at most this often while cutting (and at the end)


def cut_plan(work: WorkDir, out_dir: Path, **options) -> CutResult:
    """Cut every clip of ``WORK/plan.json`` into ``out_dir`` (see the package doc).
    ``options``: the keyword arguments of :func:`cut_clips` (``accurate``,
    ``sidecar``, ``progress``, ``max_lead_in``, ``cache``), ``on_source`` aside.

    Opens each source once (twice when some of its clips must be re-encoded; not
    at all when all its clips are already there). A source that cannot be read is reported in the result and the others
    go on; only an unusable plan or output folder raises (``ConfigError``).
    plan.json is rewritten every few seconds while cutting and at the end (or on
    an interruption); a clip finished in between is adopted by the next run.
    """
    work = work if isinstance(work, WorkDir) else WorkDir(Path(work))
    plan = work.load_plan()
    last = time.perf_counter()
    dirty = False

    def source_done(touched: bool) -> None:
        nonlocal last, dirty
        dirty |= touched
        if dirty and time.perf_counter() - last >= _PLAN_WRITE_EVERY:
            work.save_plan(plan)
            last, dirty = time.perf_counter(), False

    try:
        result, changed = cut_clips(plan, out_dir, **options, on_source=source_done)
    except BaseException:
        work.save_plan(plan)  # what was finished before the interruption
        raise
    if dirty or changed:
        work.save_plan(plan)
    return result


def cut_clips(
    plan: Plan,
    out_dir: Path,
    *,
    accurate: bool = False,
    sidecar: bool = False,
    progress: Progress | None = None,
    max_lead_in: float = 2.0,
    cache: CutCache | None = None,
    on_source: Callable[[bool], None] | None = None,
) -> tuple[CutResult, bool]:
    """Cut the clips of ``plan`` (in memory: its clip entries get the cut fields)
    into ``out_dir``. Returns the result and whether the cut parameters in
    ``plan.params`` changed. ``on_source(touched)`` after each source.

    ``accurate``: re-encode every clip on its planned frames (else stream copy);
    ``sidecar``: a ``<clip>.json`` beside each clip; ``progress``: called with
    :class:`CutProgress` snapshots; ``max_lead_in``: copy mode, the most seconds
    a clip's keyframe may lie before its start (a clip needing more is
    re-encoded); ``cache``: a :class:`CutCache` kept across calls."""
    out_dir = Path(out_dir).expanduser().resolve()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        mark_folder(out_dir, OUT_MARKER)
    except OSError as ex:
        raise ConfigError(f"cannot create the output folder {out_dir}: {ex.strerror or ex}") from ex
    input_dir = Path(plan.input_dir)
    mode = "accurate" if accurate else "copy"
    cut_params = {"out_dir": str(out_dir), "accurate": accurate, "max_lead_in": max_lead_in}
    changed = plan.params.get("cut") != cut_params
    plan.params["cut"] = cut_params

    groups: dict[str, list[int]] = {}
    for i, c in enumerate(plan.clips):
        groups.setdefault(c.source, []).append(i)
    planned = {sp.path: sp for sp in plan.sources}
    order = [p for p in planned if p in groups] + [p for p in groups if p not in planned]

    result = CutResult(out_dir=str(out_dir), accurate=accurate)
    for n, rel in enumerate(order):
        duration = planned[rel].duration if rel in planned else 0.0
        tick = _Ticker(progress, rel, n, len(order), len(groups[rel]), duration)
        sc, touched = _cut_source(plan, groups[rel], planned.get(rel), input_dir, out_dir, mode,
                                  sidecar, tick, max_lead_in, cache)
        tick.pass_, tick.done_base = None, sc.written + sc.skipped + sc.failed
        tick(duration, force=True)  # every source ends with a snapshot
        result.sources.append(sc)
        if on_source is not None:
            on_source(touched)
        log.info("%s: %s, %d written, %d skipped, %d failed%s", rel, sc.status, sc.written,
                 sc.skipped, sc.failed, f" ({sc.reason})" if sc.reason else "")
    return result, changed


def _cut_source(plan: Plan, idxs: list[int], sp: SourcePlan | None, input_dir: Path, out_dir: Path,
                mode: str, sidecar: bool, tick: _Ticker, max_lead_in: float = 2.0,
                cache: CutCache | None = None) -> tuple[SourceCut, bool]:
    """Cut one source's clips. Returns (its report, whether plan entries changed)."""
    t_begin = time.perf_counter()
    rel = plan.clips[idxs[0]].source
    sc = SourceCut(source=rel, clips=len(idxs))
    try:  # every file of this source goes into its folder, strictly inside OUT
        folder = inside(out_dir, output_folder(rel))
        for i in idxs:
            inside(folder, f"{plan.clips[i].id}.mp4")
    except UnsafePath as ex:
        sc.status, sc.reason, sc.failed = "failed", str(ex), len(idxs)
        sc.failures = {plan.clips[i].id: str(ex) for i in idxs}
        return sc, False
    clean_temp_files(folder)
    touched = False
    todo: list[int] = []
    first_of: dict[str, int] = {}
    dups: list[tuple[int, int]] = []
    for i in idxs:
        clip = plan.clips[i]
        hit = _existing(out_dir, clip, mode, cache)
        if hit is not None:
            if any(getattr(clip, k) != v for k, v in hit.items()):
                for k, v in hit.items():
                    setattr(clip, k, v)
                touched = True
            if sidecar and not (out_dir / clip.file).with_suffix(".json").exists():
                _write_sidecar(out_dir, clip)
            sc.skipped += 1
        elif not (clip.end > clip.start):
            sc.failed += 1
            sc.failures[clip.id] = f"empty span ({clip.start:.3f}..{clip.end:.3f} s)"
        elif clip.id in first_of:  # the same span listed twice: one file
            dups.append((i, first_of[clip.id]))
        else:
            first_of[clip.id] = i
            todo.append(i)
    tick.done_base = sc.skipped + sc.failed
    if not todo:
        sc.status = "skipped" if not sc.failed else "failed"
        sc.seconds = time.perf_counter() - t_begin
        return sc, touched

    for i in todo:
        if plan.clips[i].file is not None:
            _clear_cut(plan.clips[i])
            touched = True
    span = _EncodeSpan if mode == "accurate" else _CopySpan
    spans: list[_Span] = [span(i, plan.clips[i], 0.0, 0.0) for i in todo]  # absolute times once t0 is known
    for s in spans:
        s.clip.encoded = ""
    t0 = 0.0
    retry: list[_CopySpan] = []
    whole = False
    try:
        container = _check_and_open(_source_path(input_dir, rel, sp), sp)
        sc.opens += 1
        try:
            video = _main_video(container)
            if video is None:
                raise _SourceFailed("no video stream")
            if sp is not None:
                t0 = sp.t0
            elif video.start_time is not None:
                t0 = start_seconds(video)
            for s in spans:
                s.start, s.end = t0 + s.clip.start, t0 + s.clip.end
            if mode == "accurate":
                sc.container = "mp4"
                _run_pass(_EncodePass(container, spans, folder, t0, tick), sc, tick)
            else:
                fmt, transcode, why = _copy_plan(video, _audio(container))
                for note in (why, _unknown_audio_note(container)):
                    if note:
                        sc.notes.append(note)
                        log.info("%s: %s", rel, note)
                sc.container = fmt or "mp4"
                whole = fmt is None
                if whole:  # no container takes the video by copy: every clip re-encoded
                    retry = spans
                    for s in spans:
                        s.reencode, s.reason = True, why
                else:
                    _run_pass(_CopyPass(container, spans, folder, fmt, t0, tick, transcode=transcode,
                                        max_lead_in=max_lead_in), sc, tick)
                    retry = [s for s in spans if s.state == "failed" and s.reencode]
        finally:
            container.close()
        if retry:
            # Per clip, what stream copy could not do well is re-encoded (H.264 + AAC
            # in MP4, the accurate path), with the reason kept in plan.json.
            again: list[_EncodeSpan] = []
            for s in retry:
                s.clip.encoded = _encode_reason(s.reason)
                again.append(_EncodeSpan(s.i, s.clip, s.start, s.end))
            spans = [s for s in spans if s not in retry] + again
            container = _check_and_open(_source_path(input_dir, rel, sp), sp, again=True)
            sc.opens += 1
            try:
                tick.done_base += len(spans) - len(again)
                _run_pass(_EncodePass(container, again, folder, t0, tick, mode="reencode"), sc, tick)
            finally:
                container.close()
            if not whole:  # (the whole source: its note says so already)
                for why in sorted({s.clip.encoded for s in again}):
                    n = sum(s.clip.encoded == why for s in again)
                    sc.notes.append(f"{n} clip(s) re-encoded: {why}")
    except _SourceFailed as ex:
        sc.reason = str(ex)
        for s in spans:
            if s.state != "closed":
                s.state, s.reason = "failed", str(ex)
    finally:
        touched |= _record(plan, spans, out_dir, sc, sidecar, t0, mode, cache)
        for i, j in dups:
            for k in CUT_FIELDS:
                setattr(plan.clips[i], k, getattr(plan.clips[j], k))
            if plan.clips[j].file:
                sc.skipped += 1
            else:
                sc.failed += 1
                sc.failures.setdefault(plan.clips[i].id, sc.failures.get(plan.clips[j].id, "not written"))
    if sc.failed and not (sc.written or sc.skipped):
        sc.status = "failed"
    elif sc.failed:
        sc.status = "partial"
    if sc.failed and not sc.reason:
        sc.reason = f"{sc.failed} clip(s) not written"
    sc.seconds = time.perf_counter() - t_begin
    return sc, touched


def _run_pass(pass_, sc: SourceCut, tick: _Ticker) -> None:
    tick.pass_ = pass_
    try:
        pass_.run()
    except (av.FFmpegError, OSError) as ex:  # truncated/corrupt file, I/O error, vanished disk
        sc.reason = f"stopped reading at {pass_.position:.2f} s: {ffmpeg_reason(ex)}"
        pass_.abort_all(sc.reason)
    except BaseException:
        pass_.abort_all("interrupted")
        raise
    finally:
        sc.notes.extend(pass_.notes)


def _encode_reason(reason: str) -> str:
    if reason.startswith("writing failed") or reason.startswith("finishing failed"):
        return f"stream copy failed ({reason})"
    return reason


def _source_path(input_dir: Path, rel: str, sp: SourcePlan | None) -> Path:
    """The source file: its real name (``SourcePlan.raw_path``) when the plan has it."""
    return sp.fs_path(input_dir) if sp is not None else input_dir / rel


def _check_and_open(path: Path, sp: SourcePlan | None, again: bool = False):
    """Open the source after checking it is the file analysed: size, then the
    fingerprint (size + first and last MiB). A modification time that differs
    while both match (a copy, a touch) is said once (not on the second open,
    ``again``) and the file is cut."""
    if not path.is_file():
        raise _SourceFailed(f"source not found: {text_name(str(path))}")
    if sp is not None and sp.fingerprint:
        try:
            st = path.stat()
            if sp.size and st.st_size != sp.size:
                raise _SourceFailed(f"the file changed since it was analysed (size {st.st_size:,} bytes, "
                                    f"was {sp.size:,})")
            if fingerprint(path, st.st_size) != sp.fingerprint:
                raise _SourceFailed("the file changed since it was analysed (fingerprint differs)")
        except OSError as ex:
            raise _SourceFailed(f"cannot read: {ex.strerror or ex}") from ex
        if sp.mtime_ns and st.st_mtime_ns != sp.mtime_ns and not again:
            log.warning("%s: modified since it was analysed, but its size, first and last MiB are the "
                        "same: cut as analysed", display_name(sp.path))
    try:
        return open_input(path)
    except (av.FFmpegError, OSError) as ex:
        raise _SourceFailed(f"cannot open: {refusal_reason(path) or ffmpeg_reason(ex)}") from ex


def _record(plan: Plan, done: list[_Span], out_dir: Path, sc: SourceCut, sidecar: bool, t0: float,
            mode: str, cache: CutCache | None) -> bool:
    """Put what the pass did into plan.json entries and the source report."""
    for s in done:
        clip = plan.clips[s.i]
        if s.state == "closed":
            clip.file = s.final.relative_to(out_dir).as_posix()
            clip.container = s.final.suffix[1:]
            clip.cut_start = round(s.cut_start - t0, 6)
            clip.cut_end = round(s.cut_end - t0, 6)
            clip.lead_in = round(clip.start - clip.cut_start, 6)
            if cache is not None:
                tag_mode = "reencode" if mode == "copy" and clip.encoded else mode
                cache.put(s.final, clip.file, tag_mode, clip, {k: getattr(clip, k) for k in CUT_FIELDS})
            sc.written += 1
            sc.bytes += s.final.stat().st_size
            if sidecar:
                _write_sidecar(out_dir, clip)
            if s.note:
                sc.notes.append(f"clip {clip.id}: {s.note}")
        else:
            _clear_cut(clip)
            sc.failed += 1
            sc.failures[clip.id] = s.reason or "not written"
    return bool(done)
