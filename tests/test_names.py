"""Hostile file names: clips never land outside OUT, names that are not valid
UTF-8 are processed like any other, names are shown literally (never as markup,
always on one line), OUT and WORK inside the input folder are not scanned, and
the summaries count every file once."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from facecut.cli import _print_cut, main
from facecut.cut import CutResult, SourceCut, cut_plan
from facecut.dashboard import render, summary_table
from facecut.fsio import (
    UnsafePath,
    clip_id,
    display_name,
    fingerprint,
    ignored_summary,
    inside,
    output_folder,
    read_json,
    safe_name,
    video_key,
    write_json,
)
from facecut.records import Clip, ClipStats, Plan, ScanResult, SourcePlan
from facecut.scan import scan
from facecut.stats import DecoderStats, RunStats
from tests.conftest import write_audio_only
from facecut.tools.make_media import Shot, make_video
from facecut.workdir import WorkDir

ARGS = ["--provider", "cpu", "--decoders", "1", "--infer-procs", "1", "--no-dashboard"]
WIDE = {"COLUMNS": "300"}  # rich tables: no name cut short
NEWLINE_OK = sys.platform != "win32"  # Windows refuses control characters in names
FFFD = "\ufffd"


def face_video(path: Path, seed: int, photo: str = "astronaut") -> None:
    """A small video with one swappable face (distinct bytes per seed: no duplicates)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    make_video(path, [Shot("face", 2.5, photo, face_px=130)], seed=seed)


def tree(root: Path, skip: tuple[Path, ...] = ()) -> set[str]:
    """Every path under ``root`` (relative, POSIX), leaving out the folders in ``skip``."""
    out = set()
    for p in root.rglob("*"):
        if not any(p == s or s in p.parents for s in skip):
            out.add(p.relative_to(root).as_posix())
    return out


def rendered(renderable, width: int = 200) -> str:
    console = Console(record=True, width=width)
    console.print(renderable)
    return console.export_text()


# --------------------------------------------------------------------------- the name rules


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("...", "_"),
        ("..", "_"),
        (".", "_"),
        ("", "_"),
        ("CON.mp4", "_CON.mp4"),
        ("nul", "_nul"),
        ("COM1.txt", "_COM1.txt"),
        ("lpt9", "_lpt9"),
        ("aux .tar.gz", "_aux .tar.gz"),
        ("a.", "a"),
        ("a ", "a"),
        (" a. . ", "a"),
        (".hidden", "hidden"),
        ("[red]x", "[red]x"),
        ("new\nline", "new_line"),
        ("tab\tesc\x1b[31m", "tab_esc_[31m"),
        ("-rf.mp4", "_rf.mp4"),
        ('a<b>c:d"e/f\\g|h?i*j', "a_b_c_d_e_f_g_h_i_j"),
        ("CONSOLE", "CONSOLE"),  # only the exact device names are reserved
        ("été 東京", "été 東京"),
    ],
)
def test_safe_name_rules(name, expected):
    assert safe_name(name) == expected


def test_safe_name_length_and_undecodable_bytes():
    assert len(safe_name("x" * 300)) == 80
    assert len(safe_name("x" * 300, 20)) == 20
    wide = safe_name("東" * 300)  # 3 bytes each: the byte limit bites before the character limit
    assert len(wide.encode()) <= 200 and wide == "東" * len(wide)
    assert safe_name("a" * 79 + ". b") == "a" * 79  # cut, then no trailing dot or space
    assert safe_name(os.fsdecode(b"bad\xffname")) == f"bad{FFFD}name"


def test_display_name_keeps_one_literal_line():
    assert display_name("[red]x y.mp4") == "[red]x y.mp4"  # markup is escaped by rich Text, not here
    assert display_name("a\nb\r\tc\x1b[2J\x7f\x85") == f"a{FFFD}b{FFFD}{FFFD}c{FFFD}[2J{FFFD}{FFFD}"
    assert display_name("evil\u202egnp.mp4") == f"evil{FFFD}gnp.mp4"  # no right-to-left override
    assert display_name(os.fsdecode(b"bad\xffname.mp4")) == f"bad{FFFD}name.mp4"


@pytest.mark.parametrize("rel", ["...mp4", "..mp4", "CON.mp4", "a/nul.mkv", "-rf.mp4", "x\ny.mp4",
                                 "[bold]/z.mp4", "x" * 300 + ".mp4", "a/" + "b" * 200 + "/c.mp4"])
def test_output_folders_and_keys_are_safe_names(rel):
    for name in (output_folder(rel), video_key(rel)):
        assert name == safe_name(name) and len(name) <= 80
        assert name not in (".", "..") and "/" not in name
    assert output_folder(rel) != output_folder(rel + "x")


def test_same_stem_in_two_folders_gets_two_output_folders():
    assert output_folder("a/x.mp4") != output_folder("b/x.mp4")
    assert output_folder("a/x.mp4").startswith("x-")


def test_existing_keys_of_plain_names_do_not_change():
    """Work folders of earlier runs are found again: the key of an ordinary name is as it was."""
    for rel, stem in [("basic.mp4", "basic"), ("sub/nofaces.mkv", "nofaces"), ("été 1.mp4", "t_1")]:
        assert video_key(rel) == f"{stem}-{hashlib.blake2b(rel.encode(), digest_size=4).hexdigest()}"


def test_inside_refuses_paths_out_of_the_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    assert inside(out, "a-1234/x.mp4") == out / "a-1234/x.mp4"
    for rel in ("..", "../x", "a/../../x", ".", "", str(tmp_path / "elsewhere")):
        with pytest.raises(UnsafePath, match="not inside"):
            inside(out, rel)
    try:
        (out / "link").symlink_to(tmp_path, target_is_directory=True)
    except OSError:  # Windows without the symlink privilege
        return
    with pytest.raises(UnsafePath):
        inside(out, "link/x.mp4")


def test_ignored_summary_counts_by_extension():
    assert ignored_summary({}) == ""
    assert ignored_summary({".m4a": 1, ".txt": 2}) == "3 other files ignored (.m4a \u00d71, .txt \u00d72)"
    assert ignored_summary({"": 1}) == "1 other file ignored ((no extension) \u00d71)"


# --------------------------------------------------------------------------- cut never writes outside OUT


def test_cut_refuses_a_clip_path_outside_out(media_dir, tmp_path):
    """A hand-edited plan whose clip id climbs out of OUT: that source fails, nothing is written."""
    rel = "basic.mp4"
    fp = fingerprint(media_dir / rel)
    stats = ClipStats(frames=1, face_short_median=120.0, yaw_range=(0.0, 0.0))
    plan = Plan(input_dir=str(media_dir), sources=[SourcePlan(path=rel, key=video_key(rel), status="ok",
                                                              fingerprint=fp)],
                clips=[Clip(id="../../evil", source=rel, key=video_key(rel), start=0.5, end=1.5, shot=0,
                            tracks=[0], stats=stats),
                       Clip(id=clip_id(fp, 2.0, 3.0), source=rel, key=video_key(rel), start=2.0, end=3.0,
                            shot=0, tracks=[0], stats=stats)])
    wd = WorkDir(tmp_path / "work").ensure()
    write_json(wd.plan_json, plan)
    before = tree(tmp_path, skip=(tmp_path / "out", wd.root))
    result = cut_plan(wd, tmp_path / "out")
    sc = result.sources[0]
    assert sc.status == "failed" and "not inside" in sc.reason and sc.written == 0 and sc.failed == 2
    assert tree(tmp_path, skip=(tmp_path / "out", wd.root)) == before
    assert not list((tmp_path / "out").rglob("*.mp4"))


# --------------------------------------------------------------------------- a run on a folder of hostile names


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """INPUT with a name whose stem is "..", markup-like names, a newline in a name,
    three broken files and files that are not videos; one `facecut run` on it."""
    root = tmp_path_factory.mktemp("hostile")
    inp = root / "in"
    face_video(inp / "...mp4", seed=21)
    face_video(inp / "[red]x y.mp4", seed=22, photo="hanks")
    face_video(inp / "[bold]" / "z.mp4", seed=23)
    if NEWLINE_OK:
        face_video(inp / "new\nline.mp4", seed=24, photo="hanks")
    (inp / "bad").mkdir()
    (inp / "bad" / "empty.mp4").write_bytes(b"")
    (inp / "bad" / "notes.mp4").write_text("shopping list: eggs, milk\n" * 20)
    write_audio_only(inp / "bad" / "audio_only.mp4")
    write_audio_only(inp / "song.m4a")
    (inp / "a.txt").write_text("a")
    (inp / "b.TXT").write_text("b")
    for truth in inp.rglob("*.truth.json"):  # make_video's truth files: not part of this folder
        truth.unlink()
    before = tree(root)
    res = CliRunner().invoke(main, ["run", str(inp), "-o", str(root / "out"), *ARGS], env=WIDE)
    return root, res, before


def test_nothing_is_written_outside_out_and_work(hostile):
    root, res, before = hostile
    assert res.exit_code == 3, res.output  # the three broken files
    assert tree(root, skip=(root / "out",)) == before  # OUT's parent: only OUT is new
    plan = read_json(root / "out" / "facecut-work" / "plan.json", Plan)
    dots = [c for c in plan.clips if c.source == "...mp4"]
    assert dots and all(c.file and c.file.startswith(output_folder("...mp4") + "/") for c in dots)
    for c in plan.clips:
        assert (root / "out" / c.file).is_file() and (root / "out").resolve() in (root / "out" / c.file).resolve().parents


def test_names_are_shown_literally_in_run_output(hostile):
    root, res, _ = hostile
    for name in ["[red]x y.mp4", "[bold]/z.mp4", "...mp4"] + ([f"new{FFFD}line.mp4"] if NEWLINE_OK else []):
        assert name in res.output, name
    assert "new\nline" not in res.output and "\nline.mp4" not in res.output


def test_run_summary_lists_each_file_once(hostile):
    root, res, _ = hostile
    videos = 4 if NEWLINE_OK else 3
    assert f"{videos + 3} sources" in res.output, res.output  # was: the 3 broken files counted twice
    for name in ("bad/empty.mp4", "bad/notes.mp4", "bad/audio_only.mp4"):
        assert sum(name in line for line in res.output.splitlines()) == 1, name
    assert "3 other files ignored (.m4a \u00d71, .txt \u00d72)" in res.output


def test_streamed_clips_are_reported_as_cut_while_analysing(hostile):
    root, res, _ = hostile
    assert re.search(r"^\[red\]x y\.mp4: \d+ clips?, cut while analysing$", res.output, re.M), res.output
    assert "already there" not in res.output


def test_report_and_scan_mention_ignored_files(hostile, tmp_path):
    root, _, _ = hostile
    page = (root / "out" / "facecut-work" / "report" / "index.html").read_text(encoding="utf-8")
    assert "3 other files ignored (.m4a \u00d71, .txt \u00d72)" in page
    res = CliRunner().invoke(main, ["scan", str(root / "in"), "-w", str(tmp_path / "w")], env=WIDE)
    assert res.exit_code == 3
    assert "3 other files ignored (.m4a \u00d71, .txt \u00d72)" in res.output
    for name in ["[red]x y.mp4", "[bold]/z.mp4"] + ([f"new{FFFD}line.mp4"] if NEWLINE_OK else []):
        assert name in res.output, name


def test_log_lines_hold_names_on_one_line(hostile):
    root, _, _ = hostile
    if not NEWLINE_OK:
        pytest.skip("no newline in names on Windows")
    logs = "".join(p.read_text(encoding="utf-8") for p in (root / "out" / "facecut-work" / "logs").glob("run-*.log"))
    assert f"new{FFFD}line.mp4" in logs
    assert not any(line.startswith("line.mp4") for line in logs.splitlines())


def test_status_shows_names_literally(hostile):
    root, _, _ = hostile
    res = CliRunner().invoke(main, ["status", "-w", str(root / "out" / "facecut-work")], env=WIDE)
    assert res.exit_code == 0, res.output
    for name in ["[red]x y.mp4", "[bold]/z.mp4"] + ([f"new{FFFD}line.mp4"] if NEWLINE_OK else []):
        assert name in res.output, name


def test_dashboard_and_summary_render_names_literally():
    snap = RunStats(time=0.0, elapsed=1.0, warnings=["[red]x y.mp4: failed: [bold]oops", "new\nline.mp4: partial"],
                    decoders=[DecoderStats(name="decoder-0", video="[bold]/z.mp4", position=1.0, duration=2.0)])
    text = rendered(render(snap))
    assert "[bold]/z.mp4" in text and "[red]x y.mp4: failed: [bold]oops" in text
    assert f"new{FFFD}line.mp4: partial" in text
    table = rendered(summary_table([
        {"source": "[red]x y.mp4", "status": "ok", "duration": 3.0, "clips": 1, "clip_seconds": 2.0},
        {"source": "new\nline.mp4", "status": "failed", "reason": "bad [i]thing[/i] :smile:"},
    ]))
    assert "[red]x y.mp4" in table and f"new{FFFD}line.mp4" in table and "bad [i]thing[/i] :smile:" in table


def test_cut_lines_say_what_happened(capsys):
    result = CutResult(out_dir="o", accurate=False, sources=[
        SourceCut(source="a.mp4", status="skipped", clips=4, skipped=4),
        SourceCut(source="b.mp4", status="skipped", clips=3, skipped=3),
        SourceCut(source="c.mp4", status="skipped", clips=3, skipped=3),
        SourceCut(source="d\n.mp4", status="partial", clips=3, written=1, skipped=1, failed=1, reason="1 clip(s) not written"),
    ])
    _print_cut(result, {"a.mp4": 4, "c.mp4": 1})
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "a.mp4: 4 clips, cut while analysing"
    assert err[1] == "b.mp4: 3 clips, already there"
    assert err[2] == "c.mp4: 3 clips: 1 cut while analysing, 2 already there"
    assert err[3] == f"d{FFFD}.mp4: partial: 3 clips: 1 written, 1 already there, 1 failed (1 clip(s) not written)"


# --------------------------------------------------------------------------- names that are not valid UTF-8


def _bytes_name(folder: Path, raw: bytes) -> Path:
    path = folder / os.fsdecode(raw)
    try:
        path.write_bytes(b"")
    except (OSError, UnicodeEncodeError):
        pytest.skip("this filesystem refuses names that are not valid UTF-8")
    return path


def test_names_that_are_not_utf8_are_processed_like_any_other(tmp_path):
    if sys.platform in ("win32", "darwin"):
        pytest.skip("Windows and macOS file names are always valid Unicode")
    inp = tmp_path / "in"
    inp.mkdir()
    a = _bytes_name(inp, b"bad\xffname.mp4")
    b = _bytes_name(inp, b"bad\xfename.mp4")  # reads the same once decoded
    face_video(a, seed=31)
    face_video(b, seed=32, photo="hanks")
    for truth in inp.glob("*.truth.json"):
        truth.unlink()
    res = CliRunner().invoke(main, ["run", str(inp), "-o", str(tmp_path / "out"), *ARGS], env=WIDE)
    assert res.exit_code == 0, res.output
    shown = [f"bad{FFFD}name.mp4", f"bad{FFFD}name (2).mp4"]
    for name in shown:
        assert name in res.output, name
    work = WorkDir(tmp_path / "out" / "facecut-work")
    saved = json.loads(work.scan_json.read_bytes().decode("utf-8"))  # valid UTF-8 JSON
    assert sorted(v["path"] for v in saved["videos"]) == sorted(shown)
    scanned = read_json(work.scan_json, ScanResult)
    assert {v.fs_path(inp) for v in scanned.videos} == {a, b}  # the real names, for opening
    assert len({video_key(v.path) for v in scanned.videos}) == 2
    plan = read_json(work.plan_json, Plan)
    assert {c.source for c in plan.clips} == set(shown)  # both analysed and cut, apart
    assert all((tmp_path / "out" / c.file).is_file() for c in plan.clips)


def test_cluster_workers_look_for_the_real_name(tmp_path):
    """The cluster's pre-flight check (and each task) stats the file by its real name."""
    from facecut.cluster.paths import _see_inputs
    from facecut.records import raw_name

    if sys.platform in ("win32", "darwin"):
        pytest.skip("Windows and macOS file names are always valid Unicode")
    path = _bytes_name(tmp_path, b"bad\xffname.mp4")
    path.write_bytes(b"12345")
    rel = os.fsdecode(b"bad\xffname.mp4")
    assert _see_inputs(str(tmp_path), [(f"bad{FFFD}name.mp4", 5, raw_name(rel))])[1] is None
    assert "cannot see 1 of 1" in _see_inputs(str(tmp_path), [(f"bad{FFFD}name.mp4", 5, "")])[1]


# --------------------------------------------------------------------------- OUT and WORK inside INPUT


def test_out_inside_input_is_not_scanned_on_the_next_run(tmp_path):
    inp = tmp_path / "in"
    face_video(inp / "one.mp4", seed=41)
    (inp / "one.mp4.truth.json").unlink()
    sources = []
    for _ in range(2):
        res = CliRunner().invoke(main, ["run", str(inp), "-o", str(inp / "out"), *ARGS], env=WIDE)
        assert res.exit_code == 0, res.output
        scanned = read_json(WorkDir(inp / "out" / "facecut-work").scan_json, ScanResult)
        sources.append([v.path for v in scanned.videos])
        assert not scanned.ignored  # nothing of OUT or WORK counted either
    assert sources == [["one.mp4"], ["one.mp4"]]
    assert list((inp / "out").rglob("*.mp4"))  # the first run did cut clips there
    # Another run with another OUT: the folders facecut wrote carry a marker and stay out too.
    assert [v.path for v in scan(inp).videos] == ["one.mp4"]


def test_out_equal_to_input_is_refused(tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    res = CliRunner().invoke(main, ["run", str(inp), "-o", str(inp), *ARGS])
    assert res.exit_code == 2 and "output folder is the input folder" in res.output
