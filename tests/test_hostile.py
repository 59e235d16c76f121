"""Hostile input: files that are scripts, not videos, never make FFmpeg open anything else."""

from __future__ import annotations

import shutil

import av
import pytest

from facecut.media import open_input
from facecut.scan import scan


@pytest.fixture()
def playlists(tmp_path, media_dir):
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(media_dir / "basic.mp4", d / "segment.ts")  # what a playlist would make FFmpeg read
    (d / "playlist.mp4").write_text("#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:7,\nsegment.ts\n#EXT-X-ENDLIST\n")
    (d / "concat.mp4").write_text("ffconcat version 1.0\nfile 'segment.ts'\n")
    (d / "remote.mp4").write_text("#EXTM3U\n#EXTINF:7,\nhttp://127.0.0.1:9/x.ts\n#EXT-X-ENDLIST\n")
    return d


def test_playlists_and_scripts_saved_as_mp4_are_refused(playlists):
    result = scan(playlists, extensions=[".mp4"])
    by = {v.path: v for v in result.videos}
    for name in ("playlist.mp4", "concat.mp4", "remote.mp4"):
        assert by[name].status == "failed", name
        assert "playlist or script" in by[name].reason and "refused" in by[name].reason, by[name].reason


def test_open_input_reads_only_container_demuxers(playlists, media_dir):
    for name in ("playlist.mp4", "concat.mp4"):
        with pytest.raises((av.FFmpegError, OSError)):
            open_input(playlists / name)
    with open_input(media_dir / "basic.mp4") as c:  # real files open as before
        assert c.streams.video


def test_a_zip_bomb_face_set_is_refused_before_it_inflates(tmp_path):
    import zipfile

    import cv2
    import numpy as np

    from facecut.errors import ConfigError
    from facecut.identity import MAX_MEMBER_BYTES, load_reference_images

    bomb = tmp_path / "bomb.fsz"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("0.png", b"\0" * (MAX_MEMBER_BYTES + 1))  # 16 MiB of zeros: ~16 KiB compressed
    assert bomb.stat().st_size < 100_000
    with pytest.raises(ConfigError, match="zip bomb"):
        load_reference_images(bomb)
    # A picture that would decode to billions of pixels is skipped, never decoded.
    huge = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    huge = huge[:16] + (60000).to_bytes(4, "big") + (60000).to_bytes(4, "big") + huge[24:]
    ok = cv2.imencode(".png", np.full((64, 64, 3), 128, np.uint8))[1].tobytes()
    mixed = tmp_path / "mixed.fsz"
    with zipfile.ZipFile(mixed, "w") as z:
        z.writestr("0.png", huge)
        z.writestr("1.png", ok)
    assert [n for n, _ in load_reference_images(mixed)] == ["1.png"]


def test_a_corrupt_face_set_is_a_clear_error(tmp_path):
    import zipfile

    from facecut.errors import ConfigError
    from facecut.identity import load_reference_images

    bad = tmp_path / "bad.fsz"
    bad.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)  # a zip header, then garbage
    with pytest.raises(ConfigError, match="not a readable face set"):
        load_reference_images(bad)
    cut_short = tmp_path / "short.fsz"
    with zipfile.ZipFile(cut_short, "w") as z:
        z.writestr("0.png", b"\x89PNG" + b"\0" * 5000)
    cut_short.write_bytes(cut_short.read_bytes()[:-40])  # the central directory torn off
    with pytest.raises(ConfigError, match="not a readable face set"):
        load_reference_images(cut_short)
