"""Opening a user's media file: the one place that calls ``av.open`` on an input.

A file in an input folder is data, never instructions: facecut reads it through
FFmpeg's ``file`` protocol only, with real container demuxers only. An ``.mp4``
that is really an HLS playlist, a concat or ffmetadata script, an SDP file or
an image-sequence pattern would otherwise make FFmpeg open other files or the
network; here it is refused with a reason a person can act on.
"""

from __future__ import annotations

import functools
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


# --------------------------------------------------------------------------- hardware decode
#
# ``--hwaccel``: FFmpeg's hardware decoders through PyAV (``av.codec.hwaccel``).
# Decoded frames come back to system memory (NV12 and the like); a stream the
# device cannot decode falls back to FFmpeg's software decoder. ``auto`` takes the
# first of AUTO_ORDER this FFmpeg build has.

AUTO_ORDER = ("cuda", "d3d11va", "videotoolbox", "vaapi", "qsv", "dxva2")


def hwaccel_devices() -> list[str]:
    """The hardware device types this FFmpeg build knows (not all have a device here)."""
    try:
        from av.codec.hwaccel import hwdevices_available

        return list(hwdevices_available())
    except ImportError:  # a PyAV without hardware acceleration support
        return []


def hwaccel_for(name: str):
    """(``av.codec.hwaccel.HWAccel`` settings, device type) for ``--hwaccel NAME``;
    (None, "") for ``none``, or for ``auto`` when the build has no known device type."""
    if name == "none":
        return None, ""
    devices = hwaccel_devices()
    if name == "auto":
        name = next((d for d in AUTO_ORDER if d in devices), "")
        if not name:
            return None, ""
    elif name not in devices:
        from facecut.errors import ConfigError

        raise ConfigError(f"--hwaccel {name}: this FFmpeg build has no {name} support "
                          f"(it has: {', '.join(devices) or 'none'})")
    from av.codec.hwaccel import HWAccel

    return HWAccel(device_type=name, allow_software_fallback=True), name


def open_decoding(path: Path | str, hwaccel: str = "none"):
    """(container, device, fallback): ``open_input`` with the hardware decoder
    asked for. ``device``: the device type in use ("" for software);
    ``fallback``: why the asked-for device could not be opened (no GPU, no
    driver, no permission) and software decodes instead, else ""."""
    hw, device = hwaccel_for(hwaccel)
    if hw is None:
        return open_input(path), "", ""
    try:
        return open_input(path, hwaccel=hw), device, ""
    except (av.FFmpegError, OSError, RuntimeError) as ex:
        return open_input(path), "", f"{device} unavailable: {ex}"


@functools.lru_cache(maxsize=1)
def _probe_stream() -> bytes:
    """A 4-frame 256 x 144 H.264 MP4, made once per process."""
    import io

    import numpy as np

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        st = out.add_stream("libx264", rate=25)
        st.width, st.height, st.pix_fmt = 256, 144, "yuv420p"
        for i in range(4):
            img = np.full((144, 256, 3), 40 * i, np.uint8)
            for p in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in st.encode():
            out.mux(p)
    return buf.getvalue()


def hwaccel_check(device: str) -> str | None:
    """None when ``device`` decodes a small H.264 stream made here, else why not
    (for ``facecut doctor``; strict: no software fallback)."""
    import io

    from av.codec.hwaccel import HWAccel

    buf = io.BytesIO(_probe_stream())
    try:
        with av.open(buf, hwaccel=HWAccel(device_type=device, allow_software_fallback=False)) as c:
            n = sum(1 for _ in c.decode(video=0))
        return None if n else "decoded no frame"
    except Exception as ex:  # noqa: BLE001 - whatever the driver says is the answer
        return f"{type(ex).__name__}: {ex}"


def ffmpeg_reason(ex: Exception) -> str:
    """FFmpeg's own last log line for an error if PyAV kept it (at av.logging level
    ERROR or above), else the exception's text."""
    entry = getattr(ex, "log", None)
    if entry and len(entry) == 3 and entry[2]:
        return str(entry[2]).strip()
    return getattr(ex, "strerror", None) or str(ex)


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
