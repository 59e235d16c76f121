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
from facecut.workdir import WorkDir
from facecut.records import (
    Clip,
    ClipStats,
    Plan,
    ScanResult,
    Shot,
    SourcePlan,
    TrackSummary,
    VideoInfo,
)
from facecut.report import write_report
from facecut.reportsvg import ACCEPTED_COLOUR, CLIP_COLOUR, REASON_COLOURS

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
