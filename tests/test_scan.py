"""scan: real files, good and broken, through the library and the CLI."""

from __future__ import annotations

import json
import os
import shutil
import sys

import pytest
from click.testing import CliRunner

from facecut.cli import main
from facecut.errors import ConfigError
from facecut.workdir import WorkDir
from facecut.scan import probe, scan, walk
from facecut.tools.make_media import load_truth

BAD = {
    "bad/empty.mp4": "empty file",
    "bad/notes.mp4": "not a video file",
    "bad/truncated.mp4": "truncated",
    "bad/audio_only.mp4": "no video stream (audio only",
}


@pytest.fixture(scope="module")
def result(scan_dir):
    return scan(scan_dir)


def by_path(result):
    return {v.path: v for v in result.videos}


def test_good_files_have_correct_metadata(result, scan_dir):
    videos = by_path(result)
    for name in ["basic.mp4", "vfr.mp4", "rotated.mp4", "sub/nofaces.mkv"]:
        v, t = videos[name], load_truth(scan_dir / name)
        assert v.status == "ok", v.reason
        assert v.display_size == (t.width, t.height)
        assert (v.width, v.height) == (t.coded_width, t.coded_height)
        assert v.rotation == t.rotation
        assert v.vfr == t.vfr, name
        assert v.duration == pytest.approx(t.duration, abs=0.15)
        if not t.vfr:
            assert v.fps == pytest.approx(t.fps)
        assert v.codec == "h264" and v.pix_fmt == "yuv420p"
        assert [a.codec for a in v.audio] == ["aac"]
        assert v.fingerprint and v.size == (scan_dir / name).stat().st_size


def test_other_containers_and_codecs(result):
    videos = by_path(result)
    assert videos["clip.webm"].codec == "vp8" and videos["clip.webm"].audio[0].codec == "opus"
    assert videos["old.avi"].codec == "mpeg4"
    assert videos["cam.mov"].container.startswith("mov")
    for name in ("clip.webm", "old.avi", "cam.mov"):
        assert videos[name].status == "ok"
        assert videos[name].duration == pytest.approx(2.0, abs=0.15)
        assert videos[name].display_size == (512, 288)


def test_broken_inputs_become_failed_records(result):
    videos = by_path(result)
    for name, why in BAD.items():
        assert videos[name].status == "failed", name
        assert why in videos[name].reason, videos[name].reason
        assert "\n" not in videos[name].reason


def test_a_codec_ffmpeg_has_no_decoder_for_fails_that_file_alone(scan_dir, tmp_path):
    """An AVI whose video (or audio) FourCC no decoder knows: PyAV gives its stream
    no codec context; the file is a failed record with the reason and the scan
    goes on (was: AttributeError out of scan())."""
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(scan_dir / "old.avi", d / "good.avi")
    data = (scan_dir / "old.avi").read_bytes()
    head = data[: 20 + int.from_bytes(data[16:20], "little")]  # RIFF AVI + the 'hdrl' list: the headers
    fourcc = head[head.index(b"strh") + 12: head.index(b"strh") + 16]  # the video stream's handler
    assert fourcc and fourcc in head[head.index(b"strf"):]
    (d / "strange.avi").write_bytes(head.replace(fourcc, b"ZQZQ") + data[len(head):])
    at = head.index(b"auds")  # the audio stream's format tag (WAVEFORMATEX, after its strf header)
    fmt = head.index(b"strf", at) + 8
    (d / "odd_audio.avi").write_bytes(data[:fmt] + b"\x7a\x7a" + data[fmt + 2:])
    videos = by_path(scan(d))
    assert videos["good.avi"].status == "ok"
    assert videos["strange.avi"].status == "failed"
    assert "no decoder for its video codec" in videos["strange.avi"].reason
    odd = videos["odd_audio.avi"]
    assert odd.status == "ok" and [a.codec for a in odd.audio] == ["unknown"]


def test_truncated_mp4_is_told_from_its_boxes_not_ffmpegs_log(scan_dir):
    """Probes run in threads: the log line an FFmpeg error carries may be
    another file's, so the reason must not depend on it."""
    from facecut.scan import _open_failure_reason

    bad = scan_dir / "bad" / "truncated.mp4"
    assert "truncated" in _open_failure_reason(bad, Exception("Invalid data found"))
    good = scan_dir / "basic.mp4"
    assert "truncated" not in _open_failure_reason(good, Exception("Invalid data found"))


def test_missing_and_dangling(tmp_path):
    v = probe(tmp_path / "gone.mp4", "gone.mp4")
    assert v.status == "failed" and v.reason == "file not found"
    link = tmp_path / "link.mp4"
    try:
        os.symlink(tmp_path / "nowhere.mp4", link)
    except (OSError, NotImplementedError):
        pytest.skip("symlinks not available")
    res = scan(tmp_path)
    assert [(v.path, v.reason) for v in res.videos] == [("link.mp4", "broken link")]


def test_walk_sorted_filter_and_skip(scan_dir):
    selected, skipped = walk(scan_dir)
    assert selected == sorted(selected) and not skipped
    assert "sub/nofaces.mkv" in selected
    sel, skip = walk(scan_dir, filter_from="clip.webm")
    assert sel[0] == "clip.webm" and all(s < "clip.webm" for s in skip)
    sel, skip = walk(scan_dir, skip_pattern=r"^bad/")
    assert not any(s.startswith("bad/") for s in sel) and len(skip) == 4
    with pytest.raises(ConfigError):
        walk(scan_dir, filter_from="nope.mp4")
    with pytest.raises(ConfigError):
        walk(scan_dir, skip_pattern="(")


def test_fingerprint_ignores_mtime(scan_dir, tmp_path):
    import shutil

    src = scan_dir / "basic.mp4"
    dst = tmp_path / "basic.mp4"
    shutil.copyfile(src, dst)
    os.utime(dst, (1, 1))
    assert probe(dst, "basic.mp4").fingerprint == probe(src, "basic.mp4").fingerprint


def test_cli_scan_table_exit_code_and_saved_result(scan_dir, tmp_path):
    work = tmp_path / "work"
    res = CliRunner().invoke(main, ["scan", str(scan_dir), "-w", str(work), ])
    assert res.exit_code == 3, res.output
    for name in ["basic.mp4", "rotated.mp4", "audio_only.mp4", "truncated.mp4", "notes.mp4", "empty.mp4"]:
        assert name in res.output
    assert "4 failed" in res.output
    saved = WorkDir(work).load_scan()
    assert sum(v.status == "failed" for v in saved.videos) == 4
    assert {v.path for v in saved.videos if v.status == "ok"} >= {"basic.mp4", "vfr.mp4", "sub/nofaces.mkv"}


def test_cli_scan_env_vars_and_json(scan_dir, tmp_path):
    env = {"FACECUT_WORK": str(tmp_path / "w"), "FACECUT_SKIP_PATTERN": "^bad/", "FACECUT_FILTER_FROM": "rotated.mp4"}
    res = CliRunner().invoke(main, ["scan", str(scan_dir), "--json"], env=env)
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert [v["path"] for v in data["videos"]] == ["rotated.mp4", "sub/nofaces.mkv", "vfr.mp4"]
    assert data["skip_pattern"] == "^bad/"


def test_cli_all_good_is_exit_0(media_dir, tmp_path):
    res = CliRunner().invoke(main, ["scan", str(media_dir), "-w", str(tmp_path)])
    assert res.exit_code == 0, res.output


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_linked_folders_are_followed_once_and_loops_do_not_hang(media_dir, tmp_path):
    root = tmp_path / "in"
    (root / "real").mkdir(parents=True)
    shutil.copy(media_dir / "basic.mp4", root / "real" / "a.mp4")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(media_dir / "vfr.mp4", elsewhere / "b.mp4")
    (root / "linked").symlink_to(elsewhere, target_is_directory=True)  # a folder kept on another disk
    (root / "real" / "loop").symlink_to(root, target_is_directory=True)  # a link back up
    (root / "again").symlink_to(root / "real", target_is_directory=True)  # a second way to one folder
    selected, _ = walk(root)
    assert sorted(selected) == ["linked/b.mp4", "real/a.mp4"]  # the real folder, not the link to it


def test_parallel_probing_keeps_sorted_order_and_reports_progress(media_dir, tmp_path):
    root = tmp_path / "many"
    root.mkdir()
    names = [f"{i:03d}.mp4" for i in range(40)]
    for i, n in enumerate(names):
        shutil.copy(media_dir / ("basic.mp4" if i % 2 else "vfr.mp4"), root / n)
    (root / "007.mp4").write_text("not a video")
    seen = []
    result = scan(root, progress=lambda done, total: seen.append((done, total)))
    assert [v.path for v in result.videos] == names
    assert seen == [(i, 40) for i in range(1, 41)]
    assert result.videos[7].status == "failed"
    # the first of each content in sorted order is the original, the rest duplicates of it
    assert result.videos[0].status == result.videos[1].status == "ok"
    assert all(v.status == "duplicate" and v.duplicate_of == names[i % 2] for i, v in enumerate(result.videos)
               if i > 1 and i != 7)
