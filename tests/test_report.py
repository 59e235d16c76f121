"""The HTML report: built from hand-made plans with real thumbnail JPEGs and
real (small, generated) clip files; parsed back with html.parser; rendered in
headless Chromium behind the ``browser`` marker."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import cv2
import numpy as np
import pytest
from facecut.errors import ConfigError
from facecut.fsio import clip_id, video_key, write_json
from facecut.records import (
    Clip,
    ClipQuality,
    ClipStats,
    Person,
    PersonFace,
    Plan,
    ScanResult,
    Shot,
    SourcePlan,
    TrackSummary,
    VideoInfo,
)
from facecut.report import write_report
from facecut.reportcards import FACE_SHARE
from facecut.reportsvg import ACCEPTED_COLOUR, CLIP_COLOUR, REASON_COLOURS
from facecut.workdir import WorkDir

NASTY = "talks/<script>alert(1)</script> & \"q\" 'a' #1 ?x=50% é.mp4"
PLAIN = "plain.mkv"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    from skimage import data

    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def write_thumb(work: WorkDir, photo: np.ndarray, key: str, k: int) -> str:
    """A real small JPEG like the analysis writes; returns its path relative to WORK."""
    off = (k * 7) % (photo.shape[0] - 288)
    img = cv2.resize(photo[off : off + 288], (320, 180))
    path = work.thumbs_dir / key / f"{k:07d}.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])
    assert ok
    path.write_bytes(buf.tobytes())
    return path.relative_to(work.root).as_posix()


@pytest.fixture(scope="module")
def clip_video(tmp_path_factory) -> Path:
    """One real 1.2 s 512x288 H.264+AAC clip, copied under every clip name."""
    from facecut.tools.make_media import Shot as MShot
    from facecut.tools.make_media import make_video

    p = tmp_path_factory.mktemp("clipsrc") / "clip.mp4"
    make_video(p, [MShot("face", 1.2, "astronaut", face_px=120)], seed=3)
    return p


def make_clip(
    src: SourcePlan, start: float, end: float, shot: int, tracks, thumb: str | None
) -> Clip:
    return Clip(
        id=clip_id(src.fingerprint, start, end),
        source=src.path,
        key=src.key,
        start=start,
        end=end,
        shot=shot,
        tracks=list(tracks),
        stats=ClipStats(
            frames=int((end - start) * 5), face_short_median=142.0, yaw_range=(-12.0, 25.0)
        ),
        thumb=thumb,
    )


def make_source(path: str, status="ok", reason="", duration=60.0, n_shots=4) -> SourcePlan:
    step = duration / n_shots
    shots = [Shot(index=i, start=i * step, end=(i + 1) * step) for i in range(n_shots)]
    return SourcePlan(
        path=path,
        key=video_key(path),
        status=status,
        reason=reason,
        duration=duration,
        fingerprint=f"fp-{path}",
        shots=shots,
    )


@pytest.fixture
def planned(tmp_path, photo):
    """A plan before `cut`: a nasty-named source with clips, a plain partial one,
    a failed one, and a scan-time failure not in the plan."""
    work = WorkDir(tmp_path / "work").ensure()
    a = make_source(NASTY, duration=120.0)
    a.tracks = [
        TrackSummary(id=0, shot=0, start=2.0, end=9.0, frames=35, status="accepted"),
        TrackSummary(
            id=1, shot=1, start=31.0, end=33.0, frames=10, status="rejected", reason="too_short"
        ),
        TrackSummary(
            id=2, shot=1, start=31.5, end=55.0, frames=110, status="rejected", reason="too_small"
        ),
        TrackSummary(id=3, shot=2, start=61.0, end=80.0, frames=95, status="accepted"),
        TrackSummary(
            id=4, shot=3, start=95.0, end=100.0, frames=25, status="rejected", reason="pose"
        ),
    ]
    b = make_source(
        PLAIN,
        status="partial",
        reason="corrupt packets after 0:41 (decoder gave up)",
        duration=41.0,
        n_shots=2,
    )
    b.tracks = [TrackSummary(id=0, shot=0, start=1.0, end=6.0, frames=25, status="accepted")]
    c = SourcePlan(
        path="broken <1>.mp4",
        key=video_key("broken <1>.mp4"),
        status="failed",
        reason="no decodable video frame (<oops>)",
    )
    clips = [
        make_clip(a, 2.0, 9.0, 0, [0], write_thumb(work, photo, a.key, 10)),
        make_clip(a, 61.0, 70.0, 2, [3], write_thumb(work, photo, a.key, 305)),
        make_clip(a, 70.0, 80.0, 2, [3], None),  # no thumbnail captured
        make_clip(b, 1.0, 6.0, 0, [0], write_thumb(work, photo, b.key, 5)),
    ]
    plan = Plan(
        created=1.7e9,
        input_dir=str(tmp_path / "input-that-is-gone"),  # the report never opens the sources
        model="mtcnn",
        sources=[a, b, c],
        clips=clips,
        rejected={"too_short": 1, "too_small": 1, "pose": 1, "identity": 0},  # score lists zeros
    )
    write_json(work.plan_json, plan)
    scan = ScanResult(
        input_dir=plan.input_dir,
        created=1.7e9,
        extensions=(".mp4",),
        videos=[
            VideoInfo(path=NASTY, duration=120.0),
            VideoInfo(
                path="bad/<notes>.mp4", status="failed", reason="not a video file (looks like text)"
            ),
        ],
    )
    write_json(work.scan_json, scan)
    return work, plan


def cut_clips(work: WorkDir, plan: Plan, out: Path, video: Path, *, skip_last=False) -> Plan:
    """What `cut` does to the plan: a file per clip under OUT/<stem>/<id>.mp4."""
    clips = plan.clips[:-1] if skip_last else plan.clips
    for i, c in enumerate(clips):
        c.file = f"{Path(c.source).stem}/{c.id}.mp4"
        c.cut_start = c.start - 0.2 * (i % 3)
        c.cut_end = c.end
        c.lead_in = c.start - c.cut_start
        c.container = "mp4"
        dst = out / c.file
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(video, dst)
    if skip_last:  # planned and recorded as cut, but the file is gone
        c = plan.clips[-1]
        c.file, c.cut_start, c.cut_end, c.lead_in, c.container = (
            f"x/{c.id}.mp4",
            c.start,
            c.end,
            0.0,
            "mp4",
        )
    write_json(work.plan_json, plan)
    return plan


def quality(score: float, sharpness: float | None = 710.0) -> ClipQuality:
    return ClipQuality(score=score, face_px=182.0, yaw=1.2, pitch=9.4, sharpness=sharpness, stability=0.021,
                       presence=1.0, crowded=0.25)


CYAN, MAGENTA = (255, 255, 0), (255, 0, 255)  # BGR
FACE_BOX = (0.40, 0.30, 0.10, 0.20)  # person 1's face in its thumbnail, fractions (x, y, w, h)
NASTY_KEY = 'k "<key>" #1 %3F?'  # a thumbnail folder no analysis writes: quoted and escaped all the same


def face_thumb(work: WorkDir, key: str, box=FACE_BOX) -> str:
    """A 320x180 JPEG, cyan with a magenta face box (pixels a crop can be measured by)."""
    img = np.zeros((180, 320, 3), np.uint8)
    img[:] = CYAN
    x, y, w, h = box
    img[round(y * 180) : round((y + h) * 180), round(x * 320) : round((x + w) * 320)] = MAGENTA
    path = work.thumbs_dir / key / "0000001.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    path.write_bytes(buf.tobytes())
    return path.relative_to(work.root).as_posix()


# name -> (source, start, end, score or None, person or None); parts 7 and 8: one long shot in two
SCORED = {
    "a1": (NASTY, 2.0, 9.0, 40.0, 1), "a2": (NASTY, 10.0, 18.0, 90.0, 2), "a3": (NASTY, 20.0, 28.0, None, None),
    "a4": (NASTY, 30.0, 38.0, 65.0, 1), "b5": (PLAIN, 1.0, 4.0, 75.0, 2), "b6": (PLAIN, 5.0, 9.0, 20.0, 3),
    "b7": (PLAIN, 10.0, 20.0, 30.0, 2), "b8": (PLAIN, 20.0, 30.0, 95.0, 2),
}  # fmt: skip


@pytest.fixture
def scored(tmp_path, photo):
    """A plan with quality scores and three people (ids 1-3; 3 has no face
    picture), one clip without a score or a person; name -> clip."""
    work = WorkDir(tmp_path / "work").ensure()
    srcs = {NASTY: make_source(NASTY, duration=60.0), PLAIN: make_source(PLAIN, duration=40.0)}
    clips = {}
    for i, (name, (path, start, end, score, person)) in enumerate(SCORED.items()):
        c = make_clip(srcs[path], start, end, 0, [i], write_thumb(work, photo, srcs[path].key, i * 40))
        c.quality = None if score is None else quality(score, None if name == "a4" else 710.0)
        c.person = person
        clips[name] = c
    clips["b7"].group = clips["b8"].group = clips["b7"].id
    clips["b7"].part, clips["b8"].part = 1, 2
    clips["b7"].parts = clips["b8"].parts = 2
    people = [
        Person(id=1, clips=2, seconds=15.0,
               face=PersonFace(clip=clips["a1"].id, thumb=face_thumb(work, "faces"), box=FACE_BOX)),
        Person(id=2, clips=4, seconds=31.0,
               face=PersonFace(clip=clips["a2"].id, thumb=face_thumb(work, NASTY_KEY), box=FACE_BOX)),
        Person(id=3, clips=1, seconds=4.0),
    ]  # fmt: skip
    plan = Plan(created=1.7e9, model="buffalo_l", sources=list(srcs.values()), clips=list(clips.values()),
                people=people)
    write_json(work.plan_json, plan)
    return work, clips


# --------------------------------------------------------------------------- parsing


class Page(HTMLParser):
    """Every start tag with its attributes, plus the visible text."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def all(self, tag: str) -> list[dict]:
        return [a for t, a in self.tags if t == tag]

    @property
    def joined(self) -> str:
        return "".join(self.text)


def resolve(report_dir: Path, url: str) -> Path:
    """Where a relative URL in the page points on disk (what a browser opening
    the page from disk does)."""
    parts = urlsplit(url)
    assert not parts.scheme and not parts.netloc, f"not a relative link: {url}"
    return (report_dir / unquote(parts.path)).resolve()


def parse(index: Path) -> Page:
    return Page(index.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- tests


def test_before_cut_links_every_thumbnail_and_no_clip_files(planned):
    work, plan = planned
    index = write_report(work)
    assert index == work.report_dir / "index.html"
    page = parse(index)
    imgs = page.all("img")
    with_thumb = [c for c in plan.clips if c.thumb]
    assert len(imgs) == len(with_thumb) == 3
    for a in imgs:
        assert a.get("loading") == "lazy"
        p = resolve(work.report_dir, a["src"])
        assert p.is_file() and p.is_relative_to(work.report_dir / "thumbs")
        assert cv2.imread(str(p)) is not None  # a real JPEG
    # the copies are the captured thumbnails, under the same sub-path
    for c in with_thumb:
        got = (work.report_dir / c.thumb).read_bytes()
        assert got == (work.root / c.thumb).read_bytes()
    assert page.all("video") == []
    assert not [a for a in page.all("a") if not a["href"].startswith("#")]
    assert page.joined.count("no thumbnail") == 1
    for c in plan.clips:  # every clip has a card the timeline links to
        assert {"href": f"#c-{c.id}"} in page.all("a")
        assert any(a.get("id") == f"c-{c.id}" for a in page.all("div"))


def test_after_cut_links_every_clip_file_and_previews_from_the_lead_in(
    planned, clip_video, tmp_path
):
    work, plan = planned
    out = tmp_path / "out dir #1"
    cut_clips(work, plan, out, clip_video, skip_last=True)
    index = write_report(work, out)
    page = parse(index)
    text = page.joined
    videos = page.all("video")
    present = [c for c in plan.clips if (out / c.file).is_file()]
    assert len(present) == len(plan.clips) - 1
    assert len(videos) == len(present)
    hrefs = [a["href"] for a in page.all("a") if not a["href"].startswith("#")]
    linked = {resolve(work.report_dir, h) for h in hrefs}
    by_video = {}
    for v in videos:
        assert v.get("preload") == "none"
        assert "controls" in v
        target = resolve(work.report_dir, v["src"])
        by_video[target] = urlsplit(v["src"]).fragment
    for c in present:
        target = (out / c.file).resolve()
        assert target in linked, c.file
        assert target.is_file()
        assert by_video[target] == f"t={c.lead_in:.3f}"
        assert str(target) in text  # absolute path shown too
    missing = plan.clips[-1]
    assert f"file missing: {(out / missing.file).resolve()}" in text
    # paths are relative: moving work+out together keeps the page working
    assert all(not os.path.isabs(unquote(h)) for h in hrefs)


def test_out_dir_from_the_plan_params(planned, clip_video, tmp_path):
    work, plan = planned
    out = tmp_path / "o"
    plan = cut_clips(work, plan, out, clip_video)
    plan.params = {"out_dir": str(out)}
    write_json(work.plan_json, plan)
    page = parse(write_report(work))
    assert len(page.all("video")) == len(plan.clips)
    # without any out folder the files are named, not linked
    plan.params = {}
    write_json(work.plan_json, plan)
    page = parse(write_report(work))
    assert page.all("video") == []
    assert page.joined.count("(output folder unknown)") == len(plan.clips)


def test_user_strings_are_escaped(planned, clip_video, tmp_path):
    work, plan = planned
    cut_clips(work, plan, tmp_path / "out", clip_video)
    raw = write_report(work, tmp_path / "out").read_text(encoding="utf-8")
    page = Page(raw)
    assert "<1>" not in raw and "<oops>" not in raw and "<notes>" not in raw
    # One script: the filter/sort bar's, a constant that holds nothing of the batch.
    from facecut.report import _asset

    assert raw.count("<script") == 1 and f"<script>{_asset('report.js')}</script>" in raw
    text = page.joined
    for s in (NASTY, "broken <1>.mp4", "no decodable video frame (<oops>)", "bad/<notes>.mp4"):
        assert s in text, s  # shown verbatim once the entities are decoded
    # the nasty stem survives into a working relative link (#, ?, % percent-encoded)
    stem = Path(NASTY).stem
    hrefs = [a["href"] for a in page.all("a") if not a["href"].startswith("#")]
    assert any(resolve(work.report_dir, h).parent.name == stem for h in hrefs)
    assert all(resolve(work.report_dir, h).is_file() for h in hrefs)


def test_summary_timelines_and_failures(planned):
    work, plan = planned
    page = parse(write_report(work))
    text = page.joined
    # inputs: 3 planned + 1 failed in the scan; hours of usable input: 161 s
    assert "inputs4" in text.replace(" ", "")
    assert f"{161 / 3600:.2f}" in text
    accepted = 7 + 9 + 10 + 5
    assert f"{accepted / 60:.1f}" in text  # accepted minutes
    assert f"{100 * accepted / 161:.1f}%" in text  # share of input
    # failed and partial inputs with their reasons
    rows = text[text.index("failed and partial inputs") :]
    for path, reason in [
        ("broken <1>.mp4", "no decodable video frame (<oops>)"),
        (PLAIN, "corrupt packets after 0:41"),
        ("bad/<notes>.mp4", "not a video file"),
    ]:
        assert path in rows and reason in rows
    # one timeline per source; tracks coloured by reason, clips linked
    svgs = page.all("svg")
    assert len(svgs) == len(plan.sources) - 1  # the failed source had nothing to draw
    fills = [a.get("fill") for a in page.all("rect")]
    for reason in ("too_short", "too_small", "pose"):
        assert REASON_COLOURS[reason] in fills
        assert f"rejected: {reason}" in text  # legend
    assert REASON_COLOURS["identity"] not in fills
    assert "identity" not in text  # reasons nothing was rejected for stay out of the way


def test_rerun_replaces_thumbnails_and_drops_stale_ones(planned, photo):
    work, plan = planned
    write_report(work)
    first = sorted(
        p.relative_to(work.report_dir) for p in (work.report_dir / "thumbs").rglob("*.jpg")
    )
    assert len(first) == 3
    # the analysis re-ran: one thumbnail rewritten, one clip gone from the plan
    dropped = plan.clips.pop(0)
    changed = plan.clips[0]
    (work.root / changed.thumb).unlink()
    write_thumb(work, photo[::-1].copy(), changed.key, int(Path(changed.thumb).stem))
    write_json(work.plan_json, plan)
    write_report(work)
    assert not (work.report_dir / dropped.thumb).exists()
    assert (work.report_dir / changed.thumb).read_bytes() == (
        work.root / changed.thumb
    ).read_bytes()
    assert not list(work.report_dir.glob(".*.tmp"))


def test_no_external_resources_and_no_av(planned):
    work, _ = planned
    page = parse(write_report(work))
    for tag, attrs in page.tags:
        for name in ("src", "href", "poster", "data"):
            if name in attrs:
                assert not urlsplit(attrs[name]).scheme, (tag, attrs)
    assert page.all("link") == []
    assert [a for _, a in page.tags if _ == "script"] == [{}]  # one inline script, no src
    # the report never decodes a source: it does not even import PyAV
    code = "import sys, facecut.report; sys.exit('av' in sys.modules)"
    assert (
        subprocess.run(
            [sys.executable, "-c", code], check=False, cwd=Path(__file__).parents[1]
        ).returncode
        == 0
    )


def test_without_a_plan_says_what_to_run(tmp_path):
    with pytest.raises(ConfigError, match="facecut score"):
        write_report(WorkDir(tmp_path))


def test_six_hundred_clips_stay_light(tmp_path, photo, clip_video):
    work = WorkDir(tmp_path / "work").ensure()
    out = tmp_path / "out"
    sources, clips = [], []
    for s in range(6):
        src = make_source(f"day {s}/camera_{s}.mp4", duration=3600.0, n_shots=200)
        for j in range(100):
            start = j * 35.0 + 1.0
            src.tracks.append(
                TrackSummary(
                    id=2 * j, shot=j * 2, start=start, end=start + 8, frames=40, status="accepted"
                )
            )
            src.tracks.append(
                TrackSummary(
                    id=2 * j + 1,
                    shot=j * 2,
                    start=start + 3,
                    end=start + 5,
                    frames=10,
                    status="rejected",
                    reason="pose",
                )
            )
            clips.append(
                make_clip(
                    src, start, start + 8, j * 2, [2 * j], write_thumb(work, photo, src.key, j * 70)
                )
            )
        sources.append(src)
    plan = Plan(sources=sources, clips=clips, rejected={"pose": 600})
    cut_clips(work, plan, out, clip_video)
    index = write_report(work, out)
    raw = index.read_text(encoding="utf-8")
    page = Page(raw)
    assert len(clips) == 600
    assert len(raw.encode()) < 1_500_000, f"{len(raw.encode())} bytes for 600 clips"
    imgs = page.all("img")
    assert len(imgs) == 600 and all(a.get("loading") == "lazy" for a in imgs)
    videos = page.all("video")
    assert len(videos) == 600 and all(a.get("preload") == "none" for a in videos)
    assert "content-visibility:auto" in raw


def card_texts(raw: str) -> dict[str, str]:
    """Clip id -> the visible text of its card (up to the next card or the end of its section)."""
    out = {}
    for chunk in raw.split('<div class="card" id="c-')[1:]:
        out[chunk[: chunk.index('"')]] = Page('<div id="c-' + chunk.split("</section>")[0]).joined
    return out


def test_cards_show_the_score_and_its_parts(scored):
    work, clips = scored
    raw = write_report(work).read_text(encoding="utf-8")
    page = Page(raw)
    cards = {a["id"][2:]: a for a in page.all("div") if "card" in a.get("class", "").split()}
    texts = card_texts(raw)
    assert len(cards) == len(texts) == len(clips)
    for name, c in clips.items():
        attrs, text = cards[c.id], texts[c.id]
        if c.quality is None:  # no score: no badge, no parts, nothing for the script to rank by
            assert "data-score" not in attrs and "data-person" not in attrs
            assert "sharpness" not in text and "person:" not in text
            assert text.count(" px ·") == 1  # the face's size from the clip's stats
            assert f'face {float(attrs["data-face"]):.0f} px' in text
            continue
        assert float(attrs["data-score"]) == c.quality.score
        assert attrs["data-person"] == str(c.person)
        assert f"person:{c.person}" in text and c.source in text  # the source: when cards leave it
        assert text.startswith(f"{c.quality.score:.0f}")  # the badge comes first
        sharp = "sharpness not measured" if name == "a4" else "sharpness 710"
        assert f"face 182 px · yaw 1° pitch 9° · {sharp} · steady 0.02 · present 100 % · alone 75 %" in text
        assert text.count(" px ·") == 1 and " frames" in text  # the size said once (was twice)
        assert float(attrs["data-face"]) == c.quality.face_px  # the size shown is the one the bar filters by
    badges = [a for a in page.all("span") if "score" in a.get("class", "").split()]
    assert len(badges) == len(clips) - 1
    # the bar ranks by score first, and lists the people
    sort = raw[raw.index('<select id="sort">') :]
    assert sort.index('value="score" selected') < sort.index('value="time"')
    assert [a["value"] for a in page.all("option") if a.get("value", "").isdigit()] == ["1", "2", "3"]
    assert "minscore" in {a.get("id") for a in page.all("input")}


def test_people_faces_are_cropped_from_synced_thumbnails(scored):
    work, _ = scored
    index = write_report(work)
    page = parse(index)
    faces = [a for a in page.all("button") if "face" in a.get("class", "").split()]
    assert [a["data-pid"] for a in faces] == ["1", "2", "3"]
    imgs = [a for a in page.all("img") if (a.get("alt") or "").startswith("face of")]
    assert [a["alt"] for a in imgs] == ["face of person:1", "face of person:2"]  # person 3 has no picture
    assert "no face" in page.joined
    x, y, w, h = FACE_BOX
    crop = f"width:{100 * FACE_SHARE / w:.2f}%;transform:translate({-100 * (x + w / 2):.2f}%,{-100 * (y + h / 2):.2f}%)"
    assert crop == "width:600.00%;transform:translate(-45.00%,-40.00%)"
    for img in imgs:
        assert img["style"] == crop
        p = resolve(work.report_dir, img["src"])
        assert p.is_relative_to(work.report_dir / "thumbs") and p.is_file()
    plan = work.load_plan()
    for person, img in zip(plan.people, imgs):  # the same bytes as the captured picture
        assert resolve(work.report_dir, img["src"]).read_bytes() == (work.root / person.face.thumb).read_bytes()
    text = page.joined
    assert "person:2" in text and "4 clips · 31.0 s" in text and "1 clip · 4.0 s" in text
    assert "embedding model" not in text
    # a re-score without people drops their pictures from the report folder
    plan.people = []
    write_json(work.plan_json, plan)
    write_report(work)
    assert not (work.report_dir / "thumbs" / "faces").exists()
    assert not (work.report_dir / "thumbs" / NASTY_KEY).exists()


def test_old_plans_render_and_say_what_gives_people(planned, tmp_path):
    work, _ = planned  # no quality, no people: a plan of before either
    raw = write_report(work).read_text(encoding="utf-8")
    page = Page(raw)
    assert "people groups need an embedding model" in page.joined
    assert "--model buffalo_l" in page.joined and "--model scrfd with a recogniser" in page.joined
    assert "data-score" not in raw and "data-person" not in raw and 'class="score' not in raw
    assert [a for a in page.all("button") if "face" in a.get("class", "").split()] == []
    # no clips at all: nothing to group, nothing said
    empty = WorkDir(tmp_path / "empty").ensure()
    write_json(empty.plan_json, Plan(sources=[make_source(PLAIN)]))
    text = parse(write_report(empty)).joined
    assert "People" not in text and "embedding model" not in text


def test_people_and_scores_are_escaped(scored):
    work, _ = scored
    plan = work.load_plan()
    plan.input_dir = "in <put>"
    for c in plan.clips:
        c.encoded = "<svg onload=alert(1)>"
    write_json(work.plan_json, plan)
    raw = write_report(work).read_text(encoding="utf-8")
    assert "<key>" not in raw and "<put>" not in raw and "<svg onload" not in raw
    assert raw.count("<script") == 1
    page = Page(raw)
    # the nasty thumbnail folder (", <, #, %, ?) survives into a working relative link
    srcs = [a["src"] for a in page.all("img") if a.get("alt") == "face of person:2"]
    assert len(srcs) == 1 and resolve(work.report_dir, srcs[0]).parent.name == NASTY_KEY
    assert resolve(work.report_dir, srcs[0]).is_file()
    assert "<svg onload=alert(1)>" in page.joined and "in <put>" in page.joined


# --------------------------------------------------------------------------- browser


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def chromium_or_skip() -> str:
    exe = find_chromium()
    if exe is None:
        if os.environ.get("FACECUT_REQUIRE_BROWSER"):  # CI: a missing browser is a failure
            pytest.fail("FACECUT_REQUIRE_BROWSER is set but no chromium binary is on PATH")
        pytest.skip(
            "no chromium binary on PATH (chromium, chromium-browser, google-chrome); "
            ".ci/run installs Debian's chromium"
        )
    return exe


def headless(exe: str, profile: Path, *args: str) -> list[str]:
    return [
        exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}", *args,
    ]  # fmt: skip


@pytest.mark.browser
def test_five_thousand_clips_load_in_a_browser(tmp_path, photo):
    """A 5,000-clip report (a big batch): sources start collapsed, the bar's script
    runs, thumbnails are lazy. The load time is reported, not asserted."""
    exe = chromium_or_skip()
    work = WorkDir(tmp_path / "work").ensure()
    thumb = write_thumb(work, photo, "k", 0)
    sources, clips = [], []
    for s in range(50):
        src = make_source(f"cam {s}/day_{s}.mp4", duration=3600.0, n_shots=400)
        for j in range(100):
            start = j * 35.0 + 1.0
            src.tracks.append(TrackSummary(id=j, shot=j * 4, start=start, end=start + 8, frames=40,
                                           status="accepted"))
            clips.append(make_clip(src, start, start + 8, j * 4, [j], thumb))
        sources.append(src)
    write_json(work.plan_json, Plan(sources=sources, clips=clips))
    index = write_report(work)
    raw = index.read_text(encoding="utf-8")
    assert raw.count('<details class="srcbody">') == 50  # all collapsed: nothing laid out until opened
    res = subprocess.run(headless(exe, tmp_path / "profile", "--dump-dom", index.as_uri()), check=False,
                         capture_output=True, text=True, timeout=300)
    m = re.search(r'data-loaded-ms="(\d+)"', res.stdout)
    assert m, f"the page did not finish loading (rc {res.returncode}): {res.stderr[-2000:]}"
    assert "5000 clips shown" in res.stdout  # the bar's script ran over every card
    print(f"\n5,000-clip report ({len(raw.encode()) / 2**20:.1f} MiB): loaded in {m[1]} ms in headless Chromium")


@pytest.mark.browser
def test_renders_in_headless_chromium(planned, clip_video, tmp_path):
    exe = chromium_or_skip()
    work, plan = planned
    cut_clips(work, plan, tmp_path / "out", clip_video)
    index = write_report(work, tmp_path / "out")
    png = tmp_path / "shot.png"
    cmd = headless(exe, tmp_path / "profile", f"--screenshot={png}", "--window-size=1280,1600", index.as_uri())
    res = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
    assert png.is_file(), f"no screenshot (rc {res.returncode}): {res.stderr[-2000:]}"
    img = cv2.imread(str(png))
    assert img is not None and img.shape[:2] == (1600, 1280)
    assert img.std() > 10, "blank screenshot"
    # the timelines were drawn: their accepted-track and clip bars are far more
    # pixels of those colours than the legends' swatches (12x10 px each)
    for colour in (ACCEPTED_COLOUR, CLIP_COLOUR):
        bgr = np.array([int(colour[i : i + 2], 16) for i in (5, 3, 1)])
        near = (np.abs(img.astype(int) - bgr).max(axis=2) <= 12).sum()
        assert near > 1000, f"only {near} pixels of {colour}: no timeline drawn?"
    # the thumbnails (lazy, but on screen) were decoded: many distinct colours
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 1000


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Tree(HTMLParser):
    """A DOM dump's cards in document order: (clip id, hidden, id of the section
    holding it), and every section's id -> hidden."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, dict]] = []
        self.cards: list[tuple[str, bool, str]] = []
        self.sections: dict[str, bool] = {}
        self.pressed: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "div" and "card" in classes:
            section = next(s for t, s in reversed(self.stack) if t == "section")
            self.cards.append((a["id"][2:], "hidden" in a, section["id"]))
        if tag == "section":
            self.sections[a["id"]] = "hidden" in a
        if tag == "button" and a.get("aria-pressed") == "true":
            self.pressed.append(a["data-pid"])
        if tag not in VOID:
            self.stack.append((tag, a))

    def handle_endtag(self, tag):
        while self.stack and self.stack.pop()[0] != tag:
            pass

    def shown_in(self, section: str) -> list[str]:
        return [c for c, hidden, s in self.cards if s == section and not hidden]

    def order_in(self, section: str) -> list[str]:
        return [c for c, _, s in self.cards if s == section]


def dump_dom(exe: str, profile: Path, url: str) -> str:
    res = subprocess.run(headless(exe, profile, "--dump-dom", url), check=False, capture_output=True, text=True,
                         timeout=120)
    assert "clips shown" in res.stdout, f"the bar's script did not run (rc {res.returncode}): {res.stderr[-2000:]}"
    return res.stdout


@pytest.mark.browser
def test_bar_ranks_filters_and_groups_in_chromium(scored, tmp_path):
    """The bar's initial state comes from the query string, so each view is one
    page load: the default (best score first within each source), one grid for
    the whole batch with a score filter, and one person's clips grouped by person."""
    exe = chromium_or_skip()
    work, clips = scored
    uri = write_report(work).as_uri()
    ids = {c.id: name for name, c in clips.items()}
    a_sec, b_sec = f"s-{clips['a1'].key}", f"s-{clips['b5'].key}"

    def names(xs):
        return [ids[x] for x in xs]

    default = Tree(dump_dom(exe, tmp_path / "profile", uri))
    assert names(default.order_in(a_sec)) == ["a2", "a4", "a1", "a3"]  # 90, 65, 40, no score last
    # the long shot (parts 30 and 95) ranks by its best part, its parts stay in time order
    assert names(default.order_in(b_sec)) == ["b7", "b8", "b5", "b6"]
    assert not any(hidden for _, hidden, _ in default.cards)
    assert default.sections["all"] and not default.sections[a_sec] and default.sections["p-1"]
    assert default.pressed == []

    dom = dump_dom(exe, tmp_path / "profile", uri + "?group=none&minscore=50")
    assert "4 clips shown" in dom
    flat = Tree(dom)
    assert names(flat.order_in("all")) == ["b8", "a2", "b5", "a4", "a1", "b7", "b6", "a3"]
    assert names(flat.shown_in("all")) == ["b8", "a2", "b5", "a4"]  # no score is not "at least 50"
    assert not flat.sections["all"] and flat.sections[a_sec] and flat.sections[b_sec]

    dom = dump_dom(exe, tmp_path / "profile", uri + "?group=person&person=2&sort=bogus")  # bogus: ignored
    assert "4 clips shown" in dom
    people = Tree(dom)
    assert names(people.order_in("p-2")) == ["b8", "a2", "b5", "b7"]
    assert names(people.order_in("p-1")) == ["a4", "a1"] and names(people.order_in("p-3")) == ["b6"]
    assert names(people.order_in("p-none")) == ["a3"]
    assert [names(people.shown_in(s)) for s in ("p-1", "p-3", "p-none")] == [[], [], []]
    assert names(people.shown_in("p-2")) == ["b8", "a2", "b5", "b7"]
    assert not people.sections["p-2"] and people.sections["p-1"] and people.sections["p-none"]
    assert people.sections[a_sec] and people.sections["all"]
    assert people.pressed == ["2"]


@pytest.mark.browser
def test_person_faces_are_cropped_in_chromium(scored, tmp_path):
    """Person 1's face window shows the magenta face box centred, FACE_SHARE of
    the window wide, its height in the picture's own proportions."""
    exe = chromium_or_skip()
    work, _ = scored
    index = write_report(work)
    png = tmp_path / "shot.png"
    cmd = headless(exe, tmp_path / "profile", f"--screenshot={png}", "--window-size=1280,1200",
                   "--force-device-scale-factor=1", index.as_uri())
    res = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
    img = cv2.imread(str(png))
    assert img is not None, f"no screenshot (rc {res.returncode}): {res.stderr[-2000:]}"
    b, g, r = (img[..., i].astype(int) for i in range(3))
    # the picture's pixels are cyan, magenta or (scaled, JPEG edges) a mix of both: blue high, G + R about 255
    picture = (b > 190) & (np.abs(g + r - 255) < 90)
    # two pictures (persons 1 and 2 show the same box): the leftmost window is person 1's
    cols = np.flatnonzero(picture.sum(axis=0) > 20)
    gap = np.flatnonzero(np.diff(cols) > 1)
    first = cols[: gap[0] + 1] if len(gap) else cols
    rows = np.flatnonzero(picture[:, first[0] : first[-1] + 1].sum(axis=1) > 20)
    win_w, win_h = first[-1] - first[0] + 1, rows[-1] - rows[0] + 1
    assert abs(win_w - 94) <= 2 and abs(win_h - 94) <= 2, (win_w, win_h)  # 96 px less the border
    window = (slice(rows[0], rows[-1] + 1), slice(first[0], first[-1] + 1))
    face = picture[window] & (r[window] > g[window])  # nearer magenta than cyan
    fy, fx = np.flatnonzero(face.any(axis=1)), np.flatnonzero(face.any(axis=0))
    face_w, face_h = fx[-1] - fx[0] + 1, fy[-1] - fy[0] + 1
    _, _, w, h = FACE_BOX
    assert abs(face_w - FACE_SHARE * win_w) <= 3, face_w
    assert abs(face_h - face_w * (h * 180) / (w * 320)) <= 3, face_h  # not stretched
    assert abs((fx[0] + fx[-1]) / 2 - (win_w - 1) / 2) <= 2 and abs((fy[0] + fy[-1]) / 2 - (win_h - 1) / 2) <= 2
