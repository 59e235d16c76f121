"""Quality score per clip, on generated media whose faces differ in one way each
(size, focus, pose), then what hands the ranking to the swap tools: the plan as
CSV and `facecut pick`."""

from __future__ import annotations

import csv
import os

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from facecut.cli import main
from facecut.config import AnalyzeConfig, ScoreConfig
from facecut.coordinator import analyze
from facecut.cut import cut_plan
from facecut.errors import ConfigError
from facecut.export import PICKED, pick_clips, write_plan_csv
from facecut.plan import plan_from_work
from facecut.quality import WEIGHTS, clip_quality, sharpness
from facecut.scan import scan
from facecut.tools.make_media import PHOTOS, Shot, load_photo, make_video
from facecut.workdir import WorkDir

CASES = ["good", "blurred", "small", "turned"]  # one face shot each, in this order


@pytest.fixture(scope="module")
def ranked(tmp_path_factory):
    """One video: a large, sharp, frontal face; the same face out of focus; the
    same face small; a face turned away; each its own shot, analysed and planned."""
    media = tmp_path_factory.mktemp("quality_media")
    gap = Shot("noface", 1.0, "coffee")
    shots = [
        Shot("face", 3.0, "astronaut", face_px=170, pan=0.0, zoom=0.0),
        gap,
        Shot("face", 3.0, "astronaut", face_px=170, pan=0.0, zoom=0.0, blur=3.0),
        gap,
        Shot("face", 3.0, "astronaut", face_px=90, pan=0.0, zoom=0.0),
        gap,
        Shot("face", 3.0, "camera", face_px=170, pan=0.0, zoom=0.0, background="chelsea"),
    ]
    make_video(media / "q.mp4", shots, width=640, height=360, seed=11)
    work = WorkDir(tmp_path_factory.mktemp("quality_work"))
    work.save_scan(scan(media))
    cfg = AnalyzeConfig(provider="cpu", decoders=1, infer_procs=1, batch=4, min_face=60.0)
    assert analyze(work, cfg).exit_code == 0
    plan = plan_from_work(work, ScoreConfig(min_face=60.0))
    work.save_plan(plan)
    return work, plan


def by_case(plan):
    """The clip of each case, by the shot it lies in (face shots are 0, 2, 4, 6)."""
    clips = {c.shot: c for c in plan.clips}
    return {name: clips[2 * i] for i, name in enumerate(CASES)}


def test_a_large_sharp_frontal_face_scores_above_each_worse_one(ranked):
    _, plan = ranked
    c = by_case(plan)
    q = {name: clip.quality for name, clip in c.items()}
    assert all(v is not None for v in q.values())
    for worse in ("blurred", "small", "turned"):
        assert q["good"].score > q[worse].score + 5, (worse, q["good"], q[worse])
    # each worse clip is worse in the part that was changed, and not much in the others
    assert q["blurred"].sharpness < q["good"].sharpness / 3
    assert abs(q["blurred"].face_px - q["good"].face_px) < 0.15 * q["good"].face_px
    assert q["small"].face_px < 0.65 * q["good"].face_px
    assert q["turned"].yaw > q["good"].yaw + 25
    assert q["good"].presence == 1.0 and q["good"].crowded == 0.0 and q["good"].stability < 0.1
    assert 0 <= min(v.score for v in q.values()) and max(v.score for v in q.values()) <= 100


def test_rescoring_recomputes_quality_from_the_logs(ranked):
    work, plan = ranked
    again = plan_from_work(work, ScoreConfig(min_face=60.0, merge_gap=0.5))
    assert {c.id: c.quality for c in again.clips} == {c.id: c.quality for c in plan.clips}


def test_sharpness_of_a_real_face_and_its_blurred_copy():
    img = load_photo("astronaut")
    x, y, w, h = PHOTOS["astronaut"].face
    box = (x, y, x + w, y + h)
    sharp = sharpness(img, box, 1.0)
    blurred = sharpness(cv2.GaussianBlur(img, (0, 0), 3.0), box, 1.0)
    half = cv2.resize(img, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    assert sharp > 5 * blurred > 0
    # the same face at half the resolution, found with the scale the analysis passes
    assert sharpness(half, box, 0.5) == pytest.approx(sharp, rel=0.5)
    assert sharpness(img, (-50, -50, -10, -10), 1.0) == -1.0  # off the picture


def test_unmeasured_sharpness_leaves_the_mean_and_the_weights_add_to_100():
    assert sum(WEIGHTS.values()) == 100
    main = {"short": np.full(4, 200.0), "yaw": np.zeros(4), "pitch": np.zeros(4), "box": np.tile([0, 0, 200, 200.0], (4, 1))}
    measured = clip_quality({**main, "sharp": np.full(4, 1000.0)}, 4, 0)
    unmeasured = clip_quality({**main, "sharp": np.full(4, -1.0)}, 4, 0)
    assert measured.score == 100.0 and unmeasured.score == 100.0 and unmeasured.sharpness is None
    half = clip_quality({**main, "sharp": np.full(4, 1000.0)}, 8, 4)  # face in half the samples, crowded in half
    assert half.presence == 0.5 and half.crowded == 0.5 and half.score == pytest.approx(90.0)


# --------------------------------------------------------------------------- CSV and pick


@pytest.fixture(scope="module")
def cut_out(ranked, tmp_path_factory):
    work, _ = ranked
    out = tmp_path_factory.mktemp("quality_out")
    assert cut_plan(work, out).ok
    return out


def test_the_plan_as_csv_best_first(ranked, tmp_path):
    work, plan = ranked
    path = tmp_path / "plan.csv"
    assert write_plan_csv(plan, path) == len(plan.clips)
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    assert [float(r["score"]) for r in rows] == sorted((c.quality.score for c in plan.clips), reverse=True)
    assert rows[0]["id"] == by_case(plan)["good"].id and rows[0]["rank"] == "1"
    res = CliRunner().invoke(main, ["score", "-w", str(work.root), "--min-face", "60", "--csv", str(tmp_path / "b.csv")])
    assert res.exit_code == 0, res.output
    assert [r["id"] for r in csv.DictReader((tmp_path / "b.csv").open(encoding="utf-8"))] == [r["id"] for r in rows]


def test_pick_copies_the_best_and_is_idempotent(ranked, cut_out, tmp_path):
    work, _ = ranked
    plan = work.load_plan()  # as cut left it: clips have files
    best = by_case(plan)
    folder = tmp_path / "picked"
    (folder / "mine").mkdir(parents=True)
    (folder / "notes.txt").write_text("the user's own file")
    res = pick_clips(work, folder, top=2)
    assert res.written == 2 and len(res.picked) == 2 and res.picked[0] == f"001_{best['good'].id}.mp4"
    files = sorted(p.name for p in folder.glob("*.mp4"))
    assert files == sorted(res.picked)
    assert (folder / res.picked[0]).read_bytes() == (cut_out / best["good"].file).read_bytes()
    stat = {n: (folder / n).stat().st_mtime_ns for n in files}
    csv_before = (folder / PICKED).read_bytes()
    again = pick_clips(work, folder, top=2)  # the same command: nothing changes
    assert again.written == 0 and again.kept == 2 and again.removed == []
    assert {n: (folder / n).stat().st_mtime_ns for n in files} == stat and (folder / PICKED).read_bytes() == csv_before
    # fewer, hard-linked: the earlier pick's extra file goes, the user's files stay,
    # even one an edited picked.csv lists
    with open(folder / PICKED, "a", encoding="utf-8") as f:
        f.write("3,50.0,,notes.txt,q.mp4,0,1,1,,,,,,,,x\n")
    one = pick_clips(work, folder, top=1, link=True)
    assert one.removed == [res.picked[1]] and sorted(p.name for p in folder.glob("*.mp4")) == [res.picked[0]]
    assert os.path.samestat((folder / res.picked[0]).stat(), (cut_out / best["good"].file).stat())
    assert (folder / "notes.txt").exists() and (folder / "mine").is_dir()
    # by score: a bar no clip clears picks nothing, and says nothing is wrong
    assert pick_clips(work, folder, min_score=100.0).picked == [] and not list(folder.glob("*.mp4"))
    with pytest.raises(ConfigError, match="--top N"):
        pick_clips(work, folder)


def test_pick_from_the_command_line_gives_3_files(ranked, cut_out, tmp_path):
    work, _ = ranked
    res = CliRunner().invoke(main, ["pick", "-w", str(work.root), "--top", "3", "-o", str(tmp_path / "p")])
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "p").glob("*.mp4"))) == 3 and "picked 3 clip(s)" in res.output
