"""The ``facecut`` command: click only here.

Each command parses options (every option also reads ``FACECUT_<NAME>``),
calls one library function, and maps errors to the exit codes in README.md:
0 all inputs done, 3 finished but some inputs failed, 2 usage error,
4 environment problem, 130 interrupted.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
from pathlib import Path

import click
import msgspec

from facecut import __version__
from facecut.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED, FacecutError

log = logging.getLogger("facecut")


def opt(*decls: str, **kw):
    """``click.option`` whose env var is ``FACECUT_`` + the long name (``--filter-from``
    -> ``FACECUT_FILTER_FROM``), shown in ``--help``."""
    long = next(d for d in decls if d.startswith("--"))
    name = long[2:].split("/")[0].replace("-", "_").upper()
    kw.setdefault("envvar", f"FACECUT_{name}")
    kw.setdefault("show_envvar", True)
    kw.setdefault("show_default", "default" in kw and kw["default"] is not None)
    return click.option(*decls, **kw)


def _path(**kw):
    return click.Path(path_type=Path, **kw)


WORK_OPT = opt("-w", "--work", type=_path(file_okay=False), required=True, help="Work folder (logs, plan, report).")
# Options more than one command takes, declared once (help texts may say what they are for there).
MIN_FACE_OPT = opt("--min-face", type=float, default=80.0, help="Size gate: short side of a usable face, source pixels.")


def provider_opt(help: str = "onnxruntime execution provider."):
    return opt("--provider", type=click.Choice(["auto", "dml", "cuda", "cpu"]), default="auto", help=help)


def model_dir_opt(help: str):
    return opt("--model-dir", type=_path(), default=None, help=help)


def scan_options(f):
    f = opt("--skip-pattern", default=None, help="Skip files whose relative path matches this regular expression.")(f)
    f = opt("--filter-from", default=None, metavar="NAME", help="Start at this file (relative path or name) in sorted order.")(f)
    f = opt(
        "--ext",
        "extensions",
        envvar="FACECUT_EXT",
        default=",".join(e[1:] for e in _default_exts()),
        help="Video file extensions, comma-separated.",
    )(f)
    return f


def _default_exts():
    from facecut.scan import DEFAULT_EXTENSIONS

    return DEFAULT_EXTENSIONS


class OneLineNames(logging.Filter):
    """Names stay on their log line: the text of a record whose message is one
    line, and every string, path or exception argument, goes through
    ``fsio.display_name`` (no newline, escape sequence or undecodable byte of a
    file name reaches a log). A message written over several lines on purpose
    (a worker's traceback) is left alone."""

    def filter(self, record: logging.LogRecord) -> bool:
        from facecut.fsio import display_name

        if isinstance(record.msg, str) and "\n" not in record.msg:
            record.msg = display_name(record.msg)
            if isinstance(record.args, tuple):
                record.args = tuple(display_name(str(a)) if isinstance(a, str | os.PathLike | BaseException) else a
                                    for a in record.args)
        return True


_ONE_LINE = OneLineNames()


def handle_errors(fn):
    """Map facecut errors to exit codes; Ctrl-C to 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            code = fn(*args, **kwargs)
        except FacecutError as ex:
            click.echo(f"error: {ex}", err=True)
            sys.exit(ex.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        sys.exit(code or EXIT_OK)

    return wrapper


def writes_work(name: str):
    """Hold WORK's lock (facecut.worklock) while the command runs: one writer per
    work folder; a second one exits 2 saying who holds it."""

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            from facecut.worklock import WorkLock

            with WorkLock(Path(kwargs["work"]), f"facecut {name}"):
                return fn(*args, **kwargs)

        return wrapper

    return deco


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="facecut")
@opt("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """facecut: turn folders of long videos into short, swap-ready face clips.

    \b
    Pipeline: scan -> analyze (decode once + shot cuts + batched face models)
              -> track -> score -> cut -> report.
    `facecut run INPUT_DIR -o OUT_DIR` does all of it, resumably.
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for h in logging.getLogger().handlers:
        h.addFilter(_ONE_LINE)


# --------------------------------------------------------------------------- scan


def _scan_progress(every: float = 2.0):
    """A scan progress callback printing 'scan: N/M files probed' at most every few seconds."""
    last = [time.perf_counter()]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last[0] >= every or (done == total and total >= 200):
            last[0] = now
            click.echo(f"scan: {done}/{total} files probed", err=True)

    return progress


def _print_scan(result) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from facecut.dashboard import hms, shown
    from facecut.fsio import ignored_summary

    table = Table(title=shown(f"scan of {result.input_dir}"), title_justify="left")
    for col, kw in [
        ("file", {"no_wrap": True}),
        ("status", {}),
        ("duration", {"justify": "right"}),
        ("size", {}),
        ("fps", {"justify": "right"}),
        ("codec", {}),
        ("notes / reason", {}),
    ]:
        table.add_column(col, **kw)
    hours = 0.0
    for v in result.videos:
        if v.status == "ok":
            hours += v.duration / 3600
            w, h = v.display_size
            notes = ", ".join(
                n
                for n in [
                    f"rot {v.rotation}" if v.rotation else "",
                    "VFR" if v.vfr else "",
                    f"audio {len(v.audio)}" if v.audio else "no audio",
                    f"SAR {v.sar}" if v.sar != "1:1" else "",
                ]
                if n
            )
            table.add_row(
                shown(v.path), Text("ok", "green"), hms(v.duration), f"{w}x{h}",
                f"{v.fps:.3f}".rstrip("0").rstrip("."), shown(v.codec), shown(notes),
            )
        elif v.status == "duplicate":
            table.add_row(shown(v.path), Text("duplicate", "yellow"), hms(v.duration), "", "", shown(v.codec),
                          shown(v.reason))
        else:
            table.add_row(shown(v.path), Text("failed", "red"), "", "", "", "", shown(v.reason))
    failed = sum(v.status == "failed" for v in result.videos)
    dups = sum(v.status == "duplicate" for v in result.videos)
    console = Console()
    console.print(table)
    ignored = ignored_summary(result.ignored)
    console.print(shown(
        f"{len(result.videos)} files, {len(result.videos) - failed - dups} ok ({hours:.2f} h of video), "
        f"{failed} failed, " + (f"{dups} duplicate(s) not analysed again, " if dups else "")
        + f"{len(result.skipped)} skipped by filter/pattern" + (f", {ignored}" if ignored else "")
    ))


@main.command("scan")
@click.argument("input_dir", type=_path(exists=True, file_okay=False), envvar="FACECUT_INPUT")
@WORK_OPT
@scan_options
@opt("--json", "as_json", is_flag=True, help="Print the scan as JSON instead of a table.")
@handle_errors
@writes_work("scan")
def scan_cmd(input_dir: Path, work: Path, extensions: str, filter_from, skip_pattern, as_json: bool) -> int:
    """Find and probe the videos in INPUT_DIR; write WORK/scan.json."""
    import msgspec

    from facecut.workdir import WorkDir
    from facecut.scan import scan

    wd = WorkDir(work)
    result = scan(input_dir, extensions=extensions.split(","), filter_from=filter_from, skip_pattern=skip_pattern,
                  exclude=[wd.root], progress=_scan_progress())
    wd.save_scan(result)
    if as_json:
        click.echo(msgspec.json.format(msgspec.json.encode(result), indent=1).decode())
    else:
        _print_scan(result)
    return EXIT_SOME_FAILED if any(v.status == "failed" for v in result.videos) else EXIT_OK


# --------------------------------------------------------------------------- analyze


def analyze_options(f):
    """Options of the analysis stage (shared by `analyze` and `run`)."""
    from facecut.config import FAST_DECODE, HWACCELS
    from facecut.profile import default_decoders

    opts = [
        opt("--fps", type=float, default=2.0, help="Frames sampled per second of video."),
        opt("--max-side", type=int, default=1280, help="Downscale analysed frames whose long side exceeds this (0 = never)."),
        opt("--decoders", type=int, default=None, help=f"Decoder processes [default: bench profile, else {default_decoders()}]."),
        opt("--infer-procs", type=int, default=None, help="Inference processes [default: bench profile, else 1 on GPU, one per core on CPU (below the decoders' priority)]."),
        opt("--infer-threads", type=int, default=None, help="onnxruntime threads per inference process [default: bench profile, else 1]."),
        opt("--batch", type=int, default=None, help="Frames per inference batch [default: bench profile, else 8]."),
        opt("--batch-timeout", type=float, default=0.05, help="Seconds to wait for a full batch."),
        opt("--ring-slots", type=int, default=None, help="Frame ring slots [default: from decoders x batch]."),
        opt("--model", type=click.Choice(["mtcnn", "buffalo_l", "scrfd"]), default="mtcnn",
            help="Face model backend: mtcnn (embedded), buffalo_l (insightface's pack), scrfd (any SCRFD file, "
                 "with 1k3d68 and ArcFace when its folder has them)."),
        model_dir_opt("Model folder: an insightface pack, a roop-unleashed install or its models folder, FaceFusion's "
                      ".assets/models [default: ~/.insightface/models/buffalo_l]."),
        provider_opt(),
        MIN_FACE_OPT,
        opt("--detector", type=click.Choice(["adaptive", "content", "none"]), default="adaptive", help="Shot-cut detector."),
        opt("--threshold", type=float, default=None, help="Shot detector threshold [default: the detector's]."),
        opt("--min-scene-len", type=int, default=15, help="Shortest shot, frames."),
        opt("--fast-decode", type=click.Choice(list(FAST_DECODE)), default=None,
            help="Let the decoder skip work: deblocking of non-reference frames (deblock-noref), all deblocking "
                 "(deblock-all), or non-reference frames (ref-frames). Faster, results may differ slightly "
                 "(README: Decode options) [default: bench profile, else off]."),
        opt("--hwaccel", type=click.Choice(list(HWACCELS)), default="none",
            help="Hardware video decoder to try (software when it cannot open or decode a stream; "
                 "`facecut doctor` lists the ones that work here)."),
        opt("--retry-failed", is_flag=True, help="Analyse videos that failed in an earlier run again."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _analyze_config(kw: dict, work: Path | None = None):
    """The analysis options: given ones, then this machine's bench profile, then
    the defaults. A ``--fast-decode`` level not given yields to the one the work
    folder's logs were made with (a profile saved later must not stop a resume)."""
    from facecut.config import AnalyzeConfig, build

    keys = [
        "fps", "max_side", "decoders", "infer_procs", "infer_threads", "batch", "batch_timeout", "ring_slots",
        "model", "model_dir", "provider", "min_face", "detector", "threshold", "min_scene_len", "retry_failed",
        "fast_decode", "hwaccel",
    ]
    vals = {k: kw.pop(k) for k in keys}
    if vals["model_dir"] is not None:
        vals["model_dir"] = str(vals["model_dir"])
    # Counts not given on the command line (or env) come from this machine's bench profile.
    from facecut.profile import fill_from_profile

    chosen = vals["fast_decode"] is not None
    vals = fill_from_profile(vals, vals["provider"])
    if not chosen and work is not None:
        from facecut.workdir import WorkDir
        from facecut.resume import logged_fast_decode

        logged = logged_fast_decode(WorkDir(work))
        if logged is not None and logged != (vals["fast_decode"] or "off"):
            log.info("--fast-decode %s, as the logs in %s were made", logged, work)
            vals["fast_decode"] = logged
    return build(AnalyzeConfig, **vals)


def progress_options(f):
    f = opt("--json-progress", is_flag=True, help="Write JSON lines of progress snapshots to stdout (for scripts).")(f)
    f = opt("--no-dashboard", is_flag=True, help="Plain progress lines instead of the live dashboard.")(f)
    return f


def _reporter(no_dashboard: bool, json_progress: bool):
    from facecut.dashboard import Reporter

    if json_progress:
        return Reporter("json")
    return Reporter("plain" if no_dashboard else "auto")


def _log_to_work(work: Path, command: str) -> None:
    """Also log to WORK/logs/<command>-<time>.log (INFO and up)."""
    import time

    from facecut.workdir import WorkDir

    logs = WorkDir(work).ensure().logs_dir
    handler = logging.FileHandler(logs / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}.log", encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.addFilter(_ONE_LINE)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO:
        for h in root.handlers:
            if h is not handler and h.level == logging.NOTSET:
                h.setLevel(root.level)
        root.setLevel(logging.INFO)


def _run_analysis(work, cfg, reporter) -> int:
    from rich.console import Console

    from facecut.coordinator import analyze as run_analyze
    from facecut.dashboard import summary_table
    from facecut.workdir import WorkDir

    _log_to_work(work, "analyze")
    with reporter:
        result = run_analyze(WorkDir(work), cfg, on_stats=reporter)
    reporter.final(result.stats)
    rows = [
        {"source": v.info.path, "status": v.status, "duration": v.info.duration, "reason": v.reason}
        for v in result.videos
    ]
    if reporter.mode != "json":
        Console(stderr=True).print(summary_table(rows, title=f"analysed in {result.elapsed:.1f}s"))
    return result.exit_code


@main.command()
@WORK_OPT
@analyze_options
@progress_options
@handle_errors
@writes_work("analyze")
def analyze(work: Path, no_dashboard: bool, json_progress: bool, **kw) -> int:
    """Decode each video once: shot cuts + batched face analysis into logs (resumable)."""
    cfg = _analyze_config(kw, work)
    return _run_analysis(work, cfg, _reporter(no_dashboard, json_progress))


def gate_options(f):
    """Track + score options (shared by `track`, `score` and `run`)."""
    opts = [
        opt("--max-yaw", type=float, default=None, help="Largest |yaw| of a usable face, degrees [75]."),
        opt("--max-pitch", type=float, default=None, help="Largest |pitch|, degrees [45]."),
        opt("--min-det-score", type=float, default=None, help="Least detector score [0.5]."),
        opt("--track-gate", type=float, default=None, help="Share of a track's frames that must pass [0.70]."),
        opt("--min-dur", type=float, default=None, help="Shortest clip, seconds [1]."),
        opt("--max-dur", type=float, default=None, help="Longest clip, seconds [120]."),
        opt("--long", type=click.Choice(["split", "reject"]), default=None,
            help="A segment longer than --max-dur: split into near-equal parts, or reject it [split]."),
        opt("--bridge-gap", type=float, default=None, help="Bridge failing stretches shorter than this, seconds [3]."),
        opt("--merge-gap", type=float, default=None, help="Fuse segments of one shot closer than this, seconds [2]."),
        opt("--identity", type=_path(exists=True), default=None,
            help="Keep only this person: an image, a folder of images or a roop-unleashed .fsz face set."),
        opt("--identity-threshold", type=float, default=None, help="Largest cosine distance to the identity [0.65]."),
    ]
    f = track_options(f)
    for o in reversed(opts):
        f = o(f)
    return f


def track_options(f):
    """The tracker's options (`track`, and through gate_options `score` and `run`)."""
    opts = [
        opt("--track-iou", type=float, default=None, help="Least IoU to link a face to a track [0.3]."),
        opt("--track-max-gap", type=float, default=None, help="Seconds without detection a track survives [1]."),
        opt("--stitch-sim", type=float, default=None, help="Least embedding cosine to stitch a gap [0.5]."),
        opt("--stitch-shift", type=float, default=None, help="Largest centre shift to stitch, in face sizes [1]."),
        opt("--stitch-size", type=float, default=None, help="Largest size ratio to stitch [1.5]."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


_TRACK_KEYS = {"track_iou": "iou", "track_max_gap": "max_gap", "stitch_sim": "stitch_sim",
               "stitch_shift": "stitch_shift", "stitch_size": "stitch_size"}
_SCORE_KEYS = ["max_yaw", "max_pitch", "min_det_score", "track_gate", "min_dur", "max_dur", "long", "bridge_gap",
               "merge_gap", "identity", "identity_threshold"]


def _track_config(kw: dict):
    from facecut.config import TrackConfig, build

    return build(TrackConfig, **{_TRACK_KEYS[k]: kw.pop(k) for k in list(_TRACK_KEYS)})


def _score_config(kw: dict, *, min_face, model_dir, provider):
    from facecut.config import ScoreConfig, build

    track = _track_config(kw)
    vals = {k: kw.pop(k) for k in _SCORE_KEYS}
    if vals["identity"] is not None:
        vals["identity"] = str(vals["identity"])
    return build(ScoreConfig, **vals, min_face=min_face, model_dir=str(model_dir) if model_dir else None,
                 provider=provider, track=msgspec.to_builtins(track))


@main.command()
@WORK_OPT
@opt("--json", "as_json", is_flag=True, help="Machine-readable output.")
@track_options
@handle_errors
def track(work: Path, as_json: bool, **kw) -> int:
    """Link faces into tracks within each shot (from the logs; writes nothing)."""
    from rich.console import Console
    from rich.table import Table

    from facecut.dashboard import shown
    from facecut.workdir import WorkDir
    from facecut.track import track_work

    rows = track_work(WorkDir(work), _track_config(kw))
    if as_json:
        click.echo(msgspec.json.encode(rows).decode())
        return EXIT_OK
    t = Table(title=f"tracks in {work}", title_justify="left")
    cols = list(rows[0]) if rows else ["video"]
    for c in cols:
        t.add_column(c, no_wrap=c in ("video", "path"))
    for r in rows:
        t.add_row(*[f"{v:.2f}" if isinstance(v, float) else shown(str(v)) for v in r.values()])
    Console().print(t)
    return EXIT_OK


@main.command()
@WORK_OPT
@gate_options
@MIN_FACE_OPT
@model_dir_opt("Model folder, for --identity (the analysis's model folder).")
@provider_opt("Provider for --identity.")
@handle_errors
@writes_work("score")
def score(work: Path, min_face: float, model_dir, provider: str, **kw) -> int:
    """Apply the quality gates to the tracks and write WORK/plan.json (never re-detects)."""
    import time

    from facecut.workdir import WorkDir
    from facecut.score import plan_from_work

    cfg = _score_config(kw, min_face=min_face, model_dir=model_dir, provider=provider)
    t = time.perf_counter()
    wd = WorkDir(work)
    plan = plan_from_work(wd, cfg)
    wd.save_plan(plan)
    secs = sum(c.end - c.start for c in plan.clips)
    rejected = ", ".join(f"{k} {v}" for k, v in plan.rejected.items() if v) or "none"
    click.echo(f"{len(plan.clips)} clips ({secs / 60:.1f} min) from {len(plan.sources)} sources; "
               f"rejected tracks: {rejected}; {time.perf_counter() - t:.2f}s -> {wd.plan_json}")
    return EXIT_SOME_FAILED if any(s.status in ("failed", "partial") for s in plan.sources) else EXIT_OK


def cut_options(f):
    f = opt("--write-sidecar", is_flag=True, help="Write a JSON with its plan entry next to each clip.")(f)
    f = opt("--accurate", is_flag=True, help="Re-encode (libx264 + AAC) so clips start and end exactly on the planned frames.")(f)
    f = opt("--max-lead-in", type=click.FloatRange(min=0), default=2.0, show_default=True,
            help="Stream copy: a clip whose keyframe lies more than this many seconds before its start is re-encoded.")(f)
    return f


def _print_cut(result, streamed: dict[str, int] | None = None) -> None:
    """One line per source saying what happened to its clips. ``streamed``: clips
    `run` cut per source while the analysis was still running (the final pass
    finds them there: not failures, not leftovers of an earlier run)."""
    from facecut.fsio import display_name

    streamed = streamed or {}
    for sc in result.sources:
        early = min(streamed.get(sc.source, 0), sc.skipped)
        counts = [(sc.written, "written"), (early, "cut while analysing"),
                  (sc.skipped - early, "already there"), (sc.failed, "failed")]
        said = ", ".join(f"{n} {what}" for n, what in counts if n)
        if sc.status == "skipped" and early in (0, sc.skipped):  # nothing to do: every clip is there
            line = f"{_clips(sc.clips)}, " + ("cut while analysing" if early else "already there")
        else:
            line = ("" if sc.status == "skipped" else f"{sc.status}: ") + f"{_clips(sc.clips)}: {said or 'none'}"
        click.echo(display_name(f"{sc.source}: {line}" + (f" ({sc.reason})" if sc.reason else "")), err=True)
        for note in sc.notes:
            click.echo(f"  note: {display_name(note)}", err=True)
        for cid, why in sc.failures.items():
            click.echo(f"  clip {display_name(cid)}: {display_name(why)}", err=True)


def _clips(n: int) -> str:
    return f"{n} clip" + ("" if n == 1 else "s")


@main.command()
@WORK_OPT
@opt("-o", "--out", type=_path(file_okay=False), default=None, help="Output folder [default: the one in plan.json].")
@cut_options
@handle_errors
@writes_work("cut")
def cut(work: Path, out: Path | None, accurate: bool, write_sidecar: bool, max_lead_in: float) -> int:
    """Cut the planned clips by stream copy: OUT/<source folder>/<clip id>.mp4, one read per source."""
    from facecut.cut import cut_plan
    from facecut.errors import ConfigError
    from facecut.workdir import WorkDir

    wd = WorkDir(work)
    if out is None:
        try:
            out = Path(wd.load_plan().params["cut"]["out_dir"])
        except (KeyError, TypeError) as ex:
            raise ConfigError("no output folder: give -o OUT (none recorded in plan.json yet)") from ex
    result = cut_plan(wd, out, accurate=accurate, sidecar=write_sidecar, max_lead_in=max_lead_in)
    _print_cut(result)
    click.echo(f"clips: {result.written} written, {result.skipped} already there, {result.failed} failed -> {out}")
    return EXIT_OK if result.ok else EXIT_SOME_FAILED


@main.command()
@WORK_OPT
@opt("-o", "--out", type=_path(file_okay=False), default=None,
     help="Folder the clips were cut to [default: the one recorded in plan.json].")
@handle_errors
@writes_work("report")
def report(work: Path, out: Path | None) -> int:
    """Write the HTML report WORK/report/index.html (no second decode of the sources)."""
    from facecut.workdir import WorkDir
    from facecut.report import write_report

    path = write_report(WorkDir(work), out)
    click.echo(f"report: {path}")
    return EXIT_OK


@main.command()
@WORK_OPT
@opt("--json", "as_json", is_flag=True, help="Machine-readable output.")
@opt("--watch", is_flag=True, help="Refresh every few seconds until interrupted.")
@opt("--interval", type=float, default=2.0, help="Seconds between refreshes with --watch.")
@handle_errors
def status(work: Path, as_json: bool, watch: bool, interval: float) -> int:
    """Progress of a running or finished batch (reads the work folder only)."""
    import time

    import msgspec
    from rich.console import Console
    from rich.live import Live

    from facecut.workdir import WorkDir
    from facecut.status import batch_status, render_status

    wd = WorkDir(work)
    if as_json:
        while True:
            click.echo(msgspec.json.encode(batch_status(wd)).decode())
            if not watch:
                return EXIT_OK
            time.sleep(interval)
    if not watch:
        Console().print(render_status(batch_status(wd)))
        return EXIT_OK
    with Live(render_status(batch_status(wd)), refresh_per_second=1) as live:
        while True:
            time.sleep(interval)
            live.update(render_status(batch_status(wd)))


@main.command(add_help_option=False, context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def bench(ctx) -> None:
    """Measure fps and tune decoder/inference process counts (`facecut bench --help`)."""
    from facecut.bench.harness import main as bench_main

    bench_main.main(args=ctx.args, prog_name="facecut bench")


# --------------------------------------------------------------------------- run


@main.command()
@click.argument("input_dir", type=_path(exists=True, file_okay=False), envvar="FACECUT_INPUT")
@opt("-o", "--out", type=_path(file_okay=False), required=True, help="Output folder for clips.")
@opt("-w", "--work", type=_path(file_okay=False), default=None, help="Work folder [default: OUT/facecut-work].")
@scan_options
@analyze_options
@gate_options
@cut_options
@progress_options
@opt("--dry-run", is_flag=True, help="Show what would be processed and stop.")
@opt("--cluster", default=None, metavar="ADDRESS|local:N",
     help="Analyse on a Dask cluster, one task per video: a scheduler (tcp://HOST:8786) or local:N worker "
          "processes here. Needs facecut[dask]; see README 'More than one machine'.")
@handle_errors
def run(input_dir: Path, out: Path, work: Path | None, extensions: str, filter_from, skip_pattern,
        accurate: bool, write_sidecar: bool, max_lead_in: float, no_dashboard: bool, json_progress: bool,
        dry_run: bool, cluster: str | None, **kw) -> int:
    """Run the whole chain on INPUT_DIR, writing clips to OUT (resumable: run it again to continue)."""
    from facecut.workdir import WorkDir
    from facecut.pipeline import scan_exclusions
    from facecut.worklock import WorkLock

    wd = WorkDir(work or Path(out) / "facecut-work")
    scan_opts = dict(extensions=extensions.split(","), filter_from=filter_from, skip_pattern=skip_pattern,
                     progress=_scan_progress())
    if dry_run:
        return _dry_run(input_dir, wd, dict(scan_opts, exclude=scan_exclusions(input_dir, out, wd)))
    # Counts the user set (option or env); on a cluster the others come from each worker's own profile.
    pinned = [k for k in ("decoders", "infer_procs", "infer_threads", "batch", "ring_slots") if kw.get(k) is not None]
    acfg = _analyze_config(kw, wd.root)
    scfg = _score_config(kw, min_face=acfg.min_face, model_dir=acfg.model_dir, provider=acfg.provider)
    with WorkLock(wd.root, "facecut run"):
        return _run_locked(input_dir, out, wd, scan_opts, acfg, scfg, pinned, cluster, no_dashboard, json_progress,
                           {"accurate": accurate, "sidecar": write_sidecar, "max_lead_in": max_lead_in})


def _run_locked(input_dir, out, wd, scan_opts, acfg, scfg, pinned, cluster, no_dashboard, json_progress,
                cut_opts) -> int:
    from rich.console import Console

    from facecut.dashboard import shown, summary_table
    from facecut.fsio import ignored_summary
    from facecut.pipeline import run_batch

    _log_to_work(wd.root, "run")
    reporter = _reporter(no_dashboard, json_progress)
    with reporter:
        result = run_batch(input_dir, out, wd, scan_opts=scan_opts, analyze_cfg=acfg, score_cfg=scfg,
                           cut_opts=cut_opts, on_stats=reporter,
                           cluster=cluster, pinned=pinned)
    reporter.final(result.analysis.stats if result.analysis is not None else None)
    _print_cut(result.cut, result.streamed)
    if reporter.mode != "json":
        console = Console(stderr=True)
        console.print(summary_table(result.rows, title=f"facecut run: {result.elapsed:.1f}s"))
        if ignored_summary(result.scan.ignored):
            console.print(shown(ignored_summary(result.scan.ignored)))
    click.echo(f"clips: {out}")
    click.echo(f"report: {result.report}")
    return result.exit_code


def _dry_run(input_dir: Path, wd, scan_opts: dict) -> int:
    from facecut.fsio import display_name
    from facecut.scan import scan

    result = scan(input_dir, **scan_opts)
    _print_scan(result)
    todo = done = 0
    hours = 0.0
    for v in result.videos:
        if v.status != "ok":
            continue
        if wd.done_path(v.key).exists():
            done += 1
        else:
            todo += 1
            hours += v.duration / 3600
    click.echo(display_name(
        f"dry run: {todo} video(s) to analyse ({hours:.2f} h), {done} already done, "
        f"{sum(v.status == 'failed' for v in result.videos)} unreadable, "
        f"{len(result.skipped)} skipped by --filter-from/--skip-pattern"
        + (f": {', '.join(result.skipped[:10])}{' ...' if len(result.skipped) > 10 else ''}" if result.skipped else "")
    ))
    return EXIT_OK


# --------------------------------------------------------------------------- doctor, demo


@main.command()
@model_dir_opt("Model folder to check (buffalo_l / scrfd) [default: ~/.insightface/models/buffalo_l].")
@opt("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def doctor(model_dir: Path | None, as_json: bool) -> int:
    """Check the installation: versions, onnxruntime flavour and providers, models, shared memory."""
    from facecut.doctor import diagnose, render

    report = diagnose(model_dir=model_dir)
    if as_json:
        import msgspec

        click.echo(msgspec.json.format(msgspec.json.encode(report), indent=1).decode())
    else:
        render(report)
    return report["exit_code"]


@main.command()
@opt("-o", "--out", type=_path(file_okay=False), default=Path("facecut-demo"), help="Folder for the demo media and results.")
@progress_options
@handle_errors
def demo(out: Path, no_dashboard: bool, json_progress: bool) -> int:
    """Render the embedded demo media and run the whole chain on it."""
    try:
        from facecut.tools.make_media import demo_batch
    except ImportError as ex:  # pragma: no cover - packaging problem
        raise FacecutError(f"demo media generator unavailable: {ex}") from ex
    out = Path(out)
    media = out / "media"
    if not (media / "phone.mp4.truth.json").exists():
        click.echo(f"rendering demo media in {media} ...", err=True)
        try:
            demo_batch(media)
        except ImportError as ex:
            raise FacecutError(f"the demo renders scikit-image's photos: pip install 'facecut[demo]' ({ex})") from ex
    args = [str(media), "-o", str(out / "clips"), "-w", str(out / "work")]
    if no_dashboard:
        args.append("--no-dashboard")
    if json_progress:
        args.append("--json-progress")
    return run.main(args=args, prog_name="facecut demo", standalone_mode=False)


if __name__ == "__main__":  # pragma: no cover
    main()
