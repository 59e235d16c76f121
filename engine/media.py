"""Opening a user's media file: the one place that calls ``av.open`` on an input.

A file in an input folder is data, never instructions: facecut reads it through
FFmpeg's ``file`` protocol only, with real container demuxers only. An ``.mp4``
that is really an HLS playlist, a concat or ffmetadata script, an SDP file or
an image-sequence pattern would otherwise make FFmpeg open other files or the
network; here it is refused with a reason a person can act on.
"""

from __future__ import annotations

from pathlib import Path

import av

# Real container demuxers (FFmpeg names). Notably absent: hls, dash, concat,
# ffmetadata, image2 (file patterns), sdp/rtp/rtsp, tee, lavfi, data.
DEMUXERS = (
    "mov", "mp4", "m4a", "3gp", "3g2", "mj2", "matroska", "webm", "avi", "asf", "mpegts", "mpegtsraw",
    "mpeg", "mpegvideo", "m4v", "h261", "h263", "h264", "hevc", "vvc", "flv", "live_flv", "ogg", "nut", "mxf",
    "rm", "dv", "wtv", "ivf", "obu", "yuv4mpegpipe", "gif", "mjpeg", "cavsvideo", "avs2", "avs3", "vc1",
    "vc1test", "dirac", "gxf", "r3d", "smjpeg", "xmv", "bink", "roq", "film_cpk", "nsv", "nuv", "thp", "vivo",
    "wsvqa", "ea", "siff", "str", "smush", "lxf", "pva", "mvi", "mtv", "rl2", "bethsoftvid", "idcin",
    "ipmovie", "swf", "avr", "amv", "4xm", "vmd", "rawvideo",
)  # fmt: skip
OPTIONS = {"protocol_whitelist": "file", "format_whitelist": ",".join(DEMUXERS)}

_SCRIPT_HEADS = (b"#EXTM3U", b"ffconcat", b";FFMETADATA", b"<?xml", b"<MPD", b"v=0")


def open_input(path: Path | str, **kw):
    """``av.open`` for reading a user's file (local file protocol, container demuxers only)."""
    return av.open(str(path), options=dict(OPTIONS), metadata_errors="ignore", **kw)


def refusal_reason(path: Path) -> str | None:
    """Why a file that failed to open is a script rather than a video (None: it is not)."""
    try:
        with open(path, "rb") as f:
            head = f.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    except OSError:
        return None
    if head.startswith(_SCRIPT_HEADS):
        kind = head.split(b"\n", 1)[0][:20].decode("ascii", "replace")
        return (f"a playlist or script ({kind!r}), not a video: refused "
                "(facecut reads local media files only, never what they point to)")
    return None
