"""The ``facecut`` command: click only here (this package), its commands in this
module, their options in ``options``, what they share in ``support``.

Each command parses options (every option also reads ``FACECUT_<NAME>``),
calls one library function, and maps errors to the exit codes in README.md:
0 all inputs done, 3 finished but some inputs failed, 2 usage error,
4 environment problem, 130 interrupted.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
import msgspec

from facecut import __version__
from facecut.cli.options import (
    MIN_FACE_OPT,
    WORK_OPT,
    _analyze_config,
    _path,
    _score_config,
    _track_config,
    analyze_options,
    cut_options,
    gate_options,
    model_dir_opt,
    opt,
    progress_options,
    provider_opt,
    scan_options,
    track_options,
)
from facecut.cli.support import (
    _ONE_LINE,
    _log_to_work,
    _print_cut,
    _print_scan,
    _reporter,
    _scan_progress,
    handle_errors,
    writes_work,
)
from facecut.errors import EXIT_OK, EXIT_SOME_FAILED, FacecutError

log = logging.getLogger("facecut")


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
    from facecut.scan import scan
    from facecut.workdir import WorkDir

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


def _run_analysis(work, cfg, reporter) -> int:
    from facecut.coordinator import analyze as run_analyze
    from facecut.dashboard import summary_table
    from facecut.workdir import WorkDir
    from rich.console import Console

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


@main.command()
@WORK_OPT
@opt("-o", "--out", "folder", type=_path(file_okay=False), required=True,
     help="Folder for the picked clips (and picked.csv): give it to roop-unleashed's or FaceFusion's batch mode.")
@opt("--top", type=click.IntRange(min=1), default=None, help="The N best clips.")
@opt("--min-score", type=click.FloatRange(0, 100), default=None, help="Clips scoring at least this (0-100).")
@opt("--person", type=click.IntRange(min=1), default=None, help="Only this people group's clips (person:K).")
@opt("--link", is_flag=True, help="Hard-link instead of copying (same file system; copies where it cannot).")
@handle_errors
def pick(work: Path, folder: Path, top: int | None, min_score: float | None, person: int | None, link: bool) -> int:
    """Copy the best cut clips, best first, into one folder (reads WORK/plan.json; idempotent)."""
    from facecut.export import pick_clips
    from facecut.workdir import WorkDir

    res = pick_clips(WorkDir(work), folder, top=top, min_score=min_score, person=person, link=link)
    click.echo(f"picked {len(res.picked)} clip(s): {res.written} {'linked' if link else 'copied'}, "
               f"{res.kept} already there" + (f", {len(res.removed)} from an earlier pick removed" if res.removed
                                             else "") + f" -> {res.folder}")
    return EXIT_OK


@main.command()
@WORK_OPT
@click.argument("person")
@opt("-o", "--out", type=_path(dir_okay=False), required=True, help="The face set to write (.fsz).")
@opt("--faces", type=click.IntRange(1, 64), default=8, help="Pictures in the set.")
@handle_errors
def faceset(work: Path, person: str, out: Path, faces: int) -> int:
    """Write PERSON's (person:K of the report) best faces as a roop-unleashed face set (.fsz)."""
    from facecut.export import write_faceset
    from facecut.workdir import WorkDir

    n = write_faceset(WorkDir(work), person, out, count=faces)
    click.echo(f"{n} face(s) of {person} -> {out}")
    return EXIT_OK


@main.command()
@WORK_OPT
@opt("--json", "as_json", is_flag=True, help="Machine-readable output.")
@track_options
@handle_errors
def track(work: Path, as_json: bool, **kw) -> int:
    """Link faces into tracks within each shot (from the logs; writes nothing)."""
    from facecut.dashboard import shown
    from facecut.track import track_work
    from facecut.workdir import WorkDir
    from rich.console import Console
    from rich.table import Table

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
@opt("--csv", "csv_path", type=_path(dir_okay=False), default=None,
     help="Also write the plan as CSV (one row per clip, best score first) to this file.")
@handle_errors
@writes_work("score")
def score(work: Path, min_face: float, model_dir, provider: str, csv_path: Path | None, **kw) -> int:
    """Apply the quality gates to the tracks and write WORK/plan.json (never re-detects)."""
    import time

    from facecut.plan import plan_from_work
    from facecut.workdir import WorkDir

    cfg = _score_config(kw, min_face=min_face, model_dir=model_dir, provider=provider)
    t = time.perf_counter()
    wd = WorkDir(work)
    plan = plan_from_work(wd, cfg)
    wd.save_plan(plan)
    secs = sum(c.end - c.start for c in plan.clips)
    rejected = ", ".join(f"{k} {v}" for k, v in plan.rejected.items() if v) or "none"
    people = f"{len(plan.people)} people; " if plan.people else ""
    click.echo(f"{len(plan.clips)} clips ({secs / 60:.1f} min) from {len(plan.sources)} sources; {people}"
               f"rejected tracks: {rejected}; {time.perf_counter() - t:.2f}s -> {wd.plan_json}")
    if csv_path is not None:
        from facecut.export import write_plan_csv

        write_plan_csv(plan, csv_path)
        click.echo(f"csv: {csv_path}")
    return EXIT_SOME_FAILED if any(s.status in ("failed", "partial") for s in plan.sources) else EXIT_OK


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
    from facecut.report import write_report
    from facecut.workdir import WorkDir

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
    from facecut.status import batch_status, render_status
    from facecut.workdir import WorkDir
    from rich.console import Console
    from rich.live import Live

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
    from facecut.pipeline import scan_exclusions
    from facecut.workdir import WorkDir
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
    from facecut.dashboard import shown, summary_table
    from facecut.fsio import ignored_summary
    from facecut.pipeline import run_batch
    from rich.console import Console

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
