"""Every file class of the format matrix through the whole chain (`facecut run`):
sample times, faces, shot cuts, clip spans, playable clips with audio and
rotation, duplicates, long shots split. Truth from facecut.tools.make_media."""

from __future__ import annotations

import bisect
import re
from pathlib import Path

import av
import pytest
from click.testing import CliRunner

from facecut.cli import main
from facecut.fsio import read_json
from facecut.workdir import WorkDir
from facecut.logio import read_records
from facecut.records import LogRecord, Plan, Sample, ScanResult
from facecut.tools.make_media import FORMAT_MATRIX, load_truth

ARGS = ["--provider", "cpu", "--decoders", "1", "--infer-procs", "1", "--no-dashboard"]
MAX_DUR = 15.0
FILES = sorted(n for n in FORMAT_MATRIX if n != "dup_of_basic.mp4")


@pytest.fixture(scope="module")
def matrix_run(format_matrix, tmp_path_factory):
    root = tmp_path_factory.mktemp("matrix_run")
    res = CliRunner().invoke(main, ["run", str(format_matrix), "-o", str(root / "out"), "-w", str(root / "work"),
                                    "--max-dur", str(MAX_DUR), *ARGS])
    plan = read_json(WorkDir(root / "work").plan_json, Plan)
    scan = read_json(WorkDir(root / "work").scan_json, ScanResult)
    return root, res, plan, scan


def _truth(format_matrix: Path, name: str):
    if not (format_matrix / name).exists():
        pytest.skip(f"{name} was not made (encoder missing from this PyAV build)")
    return load_truth(format_matrix / name)


def _frame_times(t) -> list[float]:
    return t.frame_times if t.frame_times else [i / t.fps for i in range(t.frames)]


def _covered(t, a: float, b: float) -> list[tuple[float, float]]:
    """[a, b) minus the timestamp gaps of the file."""
    parts = [(a, b)]
    for g0, g1 in (getattr(t, "gaps", None) or []):
        parts = [p for x, y in parts for p in ((x, min(y, g0)), (max(x, g1), y)) if p[1] > p[0] + 1e-9]
    return parts


def _iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


def test_the_whole_matrix_runs_clean(matrix_run):
    root, res, plan, _ = matrix_run
    assert res.exit_code == 0, res.output
    assert "not written" not in res.output
    assert plan.clips and all(c.file for c in plan.clips), [c.id for c in plan.clips if not c.file]
    assert len({c.id for c in plan.clips}) == len(plan.clips), "clip ids are unique across sources"
    assert {s.status for s in plan.sources} == {"ok"}, [(s.path, s.reason) for s in plan.sources]


def test_an_identical_file_is_reported_as_a_duplicate_and_not_analysed(matrix_run, format_matrix):
    root, res, plan, scan = matrix_run
    truth = _truth(format_matrix, "dup_of_basic.mp4")
    dup = next(v for v in scan.videos if v.path == "dup_of_basic.mp4")
    assert dup.status == "duplicate" and dup.duplicate_of == truth.duplicate_of == "basic.mp4"
    flat = re.sub(r"[│\s]+", " ", res.output)  # table cells wrap
    assert "dup_of_basic.mp4 duplicate" in flat and "duplicate of basic.mp4" in flat
    assert "dup_of_basic.mp4" not in {s.path for s in plan.sources}
    assert not any(c.source == "dup_of_basic.mp4" for c in plan.clips)
    assert not list((root / "work" / "analysis").glob("dup_of_basic*"))


@pytest.mark.parametrize("name", FILES)
def test_samples_lie_on_the_truth_grid(matrix_run, format_matrix, name):
    root, _, plan, _ = matrix_run
    t = _truth(format_matrix, name)
    sp = next(s for s in plan.sources if s.path == name)
    recs = read_records(WorkDir(root / "work").log_path(sp.key), LogRecord)
    samples = [r for r in recs if isinstance(r, Sample)]
    times = _frame_times(t)
    frame = 1 / t.fps
    assert samples
    assert abs(sp.duration - t.duration) <= frame + 1e-6, "the timeline runs at the real rate"
    for s in samples:
        grid = s.k / 2.0  # default --fps 2
        shown = times[max(0, bisect.bisect_right(times, grid + 1e-4) - 1)]  # the frame on screen then
        assert abs(s.time - shown) <= frame + 1e-6, (s.k, s.time, shown)
    for g0, g1 in (getattr(t, "gaps", None) or []):  # nothing invented inside a gap
        assert not [s for s in samples if g0 + frame < s.time < g1 - 1e-6]


@pytest.mark.parametrize("name", FILES)
def test_faces_in_face_shots_only_and_cuts_within_a_frame(matrix_run, format_matrix, name):
    root, _, plan, _ = matrix_run
    t = _truth(format_matrix, name)
    sp = next(s for s in plan.sources if s.path == name)
    frame = 1 / t.fps
    got = [s.start for s in sp.shots[1:]]
    assert len(got) == len(t.cut_times), (got, t.cut_times)
    assert all(abs(a - b) <= frame + 1e-6 for a, b in zip(got, t.cut_times)), (got, t.cut_times)
    recs = read_records(WorkDir(root / "work").log_path(sp.key), LogRecord)
    for s in (r for r in recs if isinstance(r, Sample)):
        shot = next((x for x in t.shots if x.start + frame < s.time < x.end - frame), None)
        if shot is None:
            continue  # within a frame of a cut
        if shot.kind == "noface":
            assert not s.faces, (s.time, shot.kind)
        elif shot.swappable:
            assert any(f.short >= 0.7 * shot.face_short for f in s.faces), (s.time, [f.short for f in s.faces])


@pytest.mark.parametrize("name", FILES)
def test_clips_cover_each_swappable_shot(matrix_run, format_matrix, name):
    _, _, plan, _ = matrix_run
    t = _truth(format_matrix, name)
    clips = [c for c in plan.clips if c.source == name]
    for shot in (s for s in t.shots if s.swappable):
        for part in _covered(t, shot.start, shot.end):
            inside = [c for c in clips if c.start < part[1] and c.end > part[0]]
            assert inside, (shot.index, part)
            union = (min(c.start for c in inside), max(c.end for c in inside))
            assert _iou(union, part) >= 0.8, (part, [(c.start, c.end) for c in inside])
    assert all(c.end - c.start <= MAX_DUR + 1e-6 for c in clips)


def _read_clip(path: Path):
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = [(float(f.time), f.rotation) for f in c.decode(v)]
    with av.open(str(path)) as c:
        audio = None
        if c.streams.audio:
            a = c.streams.audio[0]
            first = next((f for f in c.decode(a) if f.time is not None), None)
            audio = float(first.time) if first is not None else None
    return frames, audio


@pytest.mark.parametrize("name", FILES)
def test_every_clip_plays_to_its_end_with_audio_and_rotation(matrix_run, format_matrix, name):
    root, _, plan, _ = matrix_run
    t = _truth(format_matrix, name)
    clips = [c for c in plan.clips if c.source == name]
    assert clips
    frame = 1 / t.fps
    for c in clips:
        frames, audio_start = _read_clip(root / "out" / c.file)
        assert frames, c.file
        first = frames[0][0]
        last = frames[-1][0]
        # decodes to its last frame: the last one shown lies within two frames of the cut's end
        assert last - first >= (c.cut_end - c.cut_start) - 2 * frame - 1e-3, (c.file, first, last, c.cut_end - c.cut_start)
        assert c.start - c.cut_start <= 2.0 + 1e-6, "lead-in bounded by --max-lead-in"
        if t.audio:
            assert audio_start is not None, f"{c.file}: no audio"
            assert abs(audio_start - first) <= frame + 1e-3, (c.file, audio_start, first)
        assert (frames[0][1] or 0) % 360 == t.rotation % 360, (c.file, frames[0][1])


def test_unmuxable_sources_are_reencoded_with_the_reason_recorded(matrix_run, format_matrix):
    _, _, plan, _ = matrix_run
    wmv = [c for c in plan.clips if c.source == "wmv2_wma.wmv"]
    if not wmv:
        pytest.skip("wmv2_wma.wmv was not made")
    assert all("wmv2" in c.encoded for c in wmv)
    copied = [c for c in plan.clips if c.source == "basic.mp4"]
    assert copied and not any(c.encoded for c in copied)
    pcm = [c for c in plan.clips if c.source == "mjpeg_pcm.avi"]
    assert pcm and not any(c.encoded for c in pcm), "video copied, PCM audio transcoded"


def test_a_long_shot_becomes_parts_that_cover_it(matrix_run, format_matrix):
    _, _, plan, _ = matrix_run
    t = _truth(format_matrix, "long_shot.mp4")
    parts = sorted((c for c in plan.clips if c.source == "long_shot.mp4"), key=lambda c: c.start)
    assert len(parts) == 3  # 40 s / 15 s
    assert [(c.part, c.parts) for c in parts] == [(1, 3), (2, 3), (3, 3)]
    assert {c.group for c in parts} == {parts[0].id}
    assert all(a.end == b.start for a, b in zip(parts, parts[1:]))
    assert _iou((parts[0].start, parts[-1].end), (0.0, t.duration)) >= 0.95


def test_a_resolution_change_mid_shot_keeps_one_track(matrix_run, format_matrix):
    _, _, plan, _ = matrix_run
    t = _truth(format_matrix, "reschange_mid.ts")
    sp = next(s for s in plan.sources if s.path == "reschange_mid.ts")
    change = t.sizes[1][0]
    shot = next(s for s in t.shots if s.start < change < s.end)
    tracks = [tr for tr in sp.tracks if tr.status == "accepted" and tr.start < change < tr.end]
    assert len(tracks) == 1 and tracks[0].start <= shot.start + 0.5 and tracks[0].end >= shot.end - 0.5


def test_the_report_groups_parts_and_says_what_was_reencoded(matrix_run):
    root, res, plan, _ = matrix_run
    html = (root / "work" / "report" / "index.html").read_text(encoding="utf-8")
    parts = sorted((c for c in plan.clips if c.source == "long_shot.mp4"), key=lambda c: c.start)
    group = html.split(f'id="g-{parts[0].id}"', 1)[1].split("</section>", 1)[0]
    assert all(f'id="c-{c.id}"' in group for c in parts)
    assert "one long shot in 3 parts" in group and "part 2 of 3" in group
    assert "re-encoded: codec wmv2" in html
