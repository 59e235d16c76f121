"""The ``facecut`` command: click only here.

Each command parses options (every option also reads ``FACECUT_<NAME>``),
calls one library function, and maps errors to the exit codes in README.md:
0 all inputs done, 3 finished but some inputs failed, 2 usage error,
4 environment problem, 130 interrupted.
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path

import click

from engine import __version__
from engine.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, FacecutError

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
    from engine.scan import DEFAULT_EXTENSIONS

    return DEFAULT_EXTENSIONS


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


def not_implemented(stage: str) -> int:
    click.echo(f"facecut {stage}: not implemented yet", err=True)
    return EXIT_USAGE


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


# --------------------------------------------------------------------------- run


@main.command()
@click.argument("input_dir", type=_path(exists=True, file_okay=False), envvar="FACECUT_INPUT")
@opt("-o", "--out", type=_path(file_okay=False), required=True, help="Output folder for clips.")
@opt("-w", "--work", type=_path(file_okay=False), default=None, help="Work folder [default: OUT/facecut-work].")
@scan_options
@handle_errors
def run(input_dir: Path, out: Path, work: Path | None, extensions: str, filter_from, skip_pattern) -> int:
    """Run the whole chain on INPUT_DIR, writing clips to OUT (resumable)."""
    from engine.fsio import WorkDir
    from engine.scan import save_scan, scan

    wd = WorkDir(work or Path(out) / "facecut-work")
    result = scan(input_dir, extensions=extensions.split(","), filter_from=filter_from, skip_pattern=skip_pattern)
    save_scan(wd, result)
    _print_scan(result)
    return not_implemented("run: analyze")


# --------------------------------------------------------------------------- scan


def _print_scan(result) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"scan of {result.input_dir}", title_justify="left")
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
                v.path, "[green]ok[/]", _hms(v.duration), f"{w}x{h}", f"{v.fps:.3f}".rstrip("0").rstrip("."),
                v.codec, notes,
            )
        else:
            table.add_row(v.path, "[red]failed[/]", "", "", "", "", v.reason)
    failed = sum(v.status == "failed" for v in result.videos)
    console = Console()
    console.print(table)
    console.print(
        f"{len(result.videos)} files, {len(result.videos) - failed} ok ({hours:.2f} h of video), "
        f"{failed} failed, {len(result.skipped)} skipped by filter/pattern"
    )


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


@main.command("scan")
@click.argument("input_dir", type=_path(exists=True, file_okay=False), envvar="FACECUT_INPUT")
@WORK_OPT
@scan_options
@opt("--json", "as_json", is_flag=True, help="Print the scan as JSON instead of a table.")
@handle_errors
def scan_cmd(input_dir: Path, work: Path, extensions: str, filter_from, skip_pattern, as_json: bool) -> int:
    """Find and probe the videos in INPUT_DIR; write WORK/scan.json."""
    import msgspec

    from engine.fsio import WorkDir
    from engine.scan import save_scan, scan

    result = scan(input_dir, extensions=extensions.split(","), filter_from=filter_from, skip_pattern=skip_pattern)
    save_scan(WorkDir(work), result)
    if as_json:
        click.echo(msgspec.json.format(msgspec.json.encode(result), indent=1).decode())
    else:
        _print_scan(result)
    return EXIT_SOME_FAILED if any(v.status == "failed" for v in result.videos) else EXIT_OK


# --------------------------------------------------------------------------- stages to come


def analyze_options(f):
    """Options of the analysis stage (shared by `analyze` and `run`)."""
    from engine.procs import cpu_count

    opts = [
        opt("--fps", type=float, default=2.0, help="Frames sampled per second of video."),
        opt("--max-side", type=int, default=1280, help="Downscale analysed frames whose long side exceeds this (0 = never)."),
        opt("--decoders", type=int, default=None, help=f"Decoder processes [default: bench profile, else {max(1, cpu_count() // 2)}]."),
        opt("--infer-procs", type=int, default=None, help="Inference processes [default: bench profile, else 1 on GPU, CPU count - decoders on CPU]."),
        opt("--infer-threads", type=int, default=None, help="onnxruntime threads per inference process [default: bench profile, else 1]."),
        opt("--batch", type=int, default=None, help="Frames per inference batch [default: bench profile, else 8]."),
        opt("--batch-timeout", type=float, default=0.05, help="Seconds to wait for a full batch."),
        opt("--ring-slots", type=int, default=None, help="Frame ring slots [default: from decoders x batch]."),
        opt("--model", type=click.Choice(["mtcnn", "buffalo_l"]), default="mtcnn", help="Face model backend."),
        opt("--model-dir", type=_path(), default=None, help="Model folder (buffalo_l) [default: ~/.insightface/models/buffalo_l]."),
        opt("--provider", type=click.Choice(["auto", "dml", "cuda", "cpu"]), default="auto", help="onnxruntime execution provider."),
        opt("--min-face", type=float, default=80.0, help="Size gate: short side of a usable face, source pixels."),
        opt("--detector", type=click.Choice(["adaptive", "content", "none"]), default="adaptive", help="Shot-cut detector."),
        opt("--threshold", type=float, default=None, help="Shot detector threshold [default: the detector's]."),
        opt("--min-scene-len", type=int, default=15, help="Shortest shot, frames."),
        opt("--retry-failed", is_flag=True, help="Analyse videos that failed in an earlier run again."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _analyze_config(kw: dict):
    from engine.config import AnalyzeConfig, build

    keys = [
        "fps", "max_side", "decoders", "infer_procs", "infer_threads", "batch", "batch_timeout", "ring_slots",
        "model", "model_dir", "provider", "min_face", "detector", "threshold", "min_scene_len", "retry_failed",
    ]
    vals = {k: kw.pop(k) for k in keys}
    if vals["model_dir"] is not None:
        vals["model_dir"] = str(vals["model_dir"])
    # Counts not given on the command line (or env) come from this machine's bench profile.
    from engine.profile import load_profile

    try:
        from engine.models import resolve_provider

        provider = resolve_provider(vals["provider"])
    except Exception:  # noqa: BLE001 - the inference process reports provider problems properly
        provider = vals["provider"]
    for k, v in load_profile(provider).items():
        if vals.get(k) is None:
            vals[k] = v
            log.info("%s=%s from the bench profile", k, v)
    if vals["decoders"] is None:
        from engine.procs import cpu_count

        vals["decoders"] = max(1, cpu_count() // 2)
    return build(AnalyzeConfig, **vals)


def progress_options(f):
    f = opt("--json-progress", is_flag=True, help="Write JSON lines of progress snapshots to stdout (for scripts).")(f)
    f = opt("--no-dashboard", is_flag=True, help="Plain progress lines instead of the live dashboard.")(f)
    return f


def _reporter(no_dashboard: bool, json_progress: bool):
    from engine.dashboard import Reporter

    if json_progress:
        return Reporter("json")
    return Reporter("plain" if no_dashboard else "auto")


def _log_to_work(work: Path, command: str) -> None:
    """Also log to WORK/logs/<command>-<time>.log (INFO and up)."""
    import time

    from engine.fsio import WorkDir

    logs = WorkDir(work).ensure().logs_dir
    handler = logging.FileHandler(logs / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}.log", encoding="utf-8")
    handler.setLevel(logging.INFO)
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

    from engine.coordinator import analyze as run_analyze
    from engine.dashboard import summary_table
    from engine.fsio import WorkDir

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
def analyze(work: Path, no_dashboard: bool, json_progress: bool, **kw) -> int:
    """Decode each video once: shot cuts + batched face analysis into logs (resumable)."""
    cfg = _analyze_config(kw)
    return _run_analysis(work, cfg, _reporter(no_dashboard, json_progress))


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@handle_errors
def track() -> int:
    """Link faces into tracks within each shot."""
    return not_implemented("track")


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@handle_errors
def score() -> int:
    """Apply quality gates to tracks and write WORK/plan.json."""
    return not_implemented("score")


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@handle_errors
def cut() -> int:
    """Cut the planned clips by stream copy."""
    return not_implemented("cut")


@main.command()
@WORK_OPT
@opt("-o", "--out", type=_path(file_okay=False), default=None,
     help="Folder the clips were cut to [default: the one recorded in plan.json].")
@handle_errors
def report(work: Path, out: Path | None) -> int:
    """Write the HTML report WORK/report/index.html (no second decode of the sources)."""
    from engine.fsio import WorkDir
    from engine.report import write_report

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

    from engine.fsio import WorkDir
    from engine.status import batch_status, render_status

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
    from bench.harness import main as bench_main

    bench_main.main(args=ctx.args, prog_name="facecut bench")


# --------------------------------------------------------------------------- doctor, demo


@main.command()
@opt("--model-dir", type=_path(), default=None, help="buffalo_l model folder [default: ~/.insightface/models/buffalo_l].")
@opt("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def doctor(model_dir: Path | None, as_json: bool) -> int:
    """Check the installation: versions, onnxruntime flavour and providers, models, shared memory."""
    from engine.doctor import diagnose, render

    report = diagnose(model_dir=model_dir)
    if as_json:
        import msgspec

        click.echo(msgspec.json.format(msgspec.json.encode(report), indent=1).decode())
    else:
        render(report)
    return report["exit_code"]


@main.command()
@opt("-o", "--out", type=_path(file_okay=False), default=Path("facecut-demo"), help="Folder for the demo media and results.")
@handle_errors
def demo(out: Path) -> int:
    """Generate the embedded demo media and run the chain on it."""
    from engine.fsio import WorkDir
    from engine.scan import save_scan, scan

    try:
        from tools.make_media import demo_batch
    except ImportError as ex:  # pragma: no cover - packaging problem
        raise FacecutError(f"demo media generator unavailable: {ex}") from ex
    media = Path(out) / "media"
    click.echo(f"generating demo media in {media} ...")
    demo_batch(media)
    wd = WorkDir(Path(out) / "work")
    result = scan(media)
    save_scan(wd, result)
    _print_scan(result)
    click.echo("(analysis, cutting and the report arrive with the next stages)")
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    main()
