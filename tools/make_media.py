"""Deterministic test media with written truth: H.264 (libx264 via PyAV) + AAC.

Every video is a sequence of *shots* rendered from real photos shipped inside
installed packages (insightface's ``t1.jpg`` and ``Tom_Hanks_54745.png``,
scikit-image's ``astronaut``, ``camera``, ``coffee``, ``chelsea``, ``rocket``),
with a slow camera move inside each shot and a hard cut between shots. Next to
each video ``<name>.truth.json`` records what a test needs to know: the frame
index and time of every cut, which shots hold a swappable face, how large the
face is, when a face enters, and (for VFR files) every frame's time.

    python -m facecut.tools.make_media OUT_DIR --profile tests|demo|bench720|bench1080|formats

Face sizes are *approximate* short sides of a detector box (measured once with
MTCNN on the photos, see ``PHOTOS``); design margins are wide on purpose
(swappable faces >= 1.4x the default 80 px gate, small faces <= 0.5x).

Encoding uses ``threads=1`` inside libx264: single-slice frames like a camera
file (PyAV's default slice threading writes several slices per frame, which
decode ~1.8x faster and would flatter every benchmark), and byte-identical
output for the same parameters.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import av
import cv2
import numpy as np

# --------------------------------------------------------------------------- photos


@dataclass(frozen=True)
class Photo:
    """A source picture. ``face`` is (x, y, w, h) of the face box in the picture
    (MTCNN on the original), None for pictures without a face."""

    name: str
    person: str
    face: tuple[int, int, int, int] | None
    crop: tuple[int, int, int, int] | None = None  # x0, y0, x1, y1 applied first


PHOTOS: dict[str, Photo] = {
    p.name: p
    for p in [
        Photo("astronaut", "collins", (179, 60, 89, 113)),
        Photo("hanks", "hanks", (0, 0, 85, 115)),
        # One person of insightface's group photo, cropped so no neighbour shows.
        Photo("t1_mid", "t1_mid", (464 - 380, 264 - 200, 106, 147), crop=(380, 200, 730, 470)),
        Photo("group", "group", (464, 264, 106, 147)),  # six faces; box of the middle one
        Photo("camera", "cameraman", (198, 117, 55, 76)),
        Photo("coffee", "", None),
        Photo("chelsea", "", None),
        Photo("rocket", "", None),
    ]
}


def _insightface_image(name: str) -> np.ndarray:
    import importlib.util

    spec = importlib.util.find_spec("insightface")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("insightface is not installed (pip install 'facecut[test]')")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "images" / name
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise RuntimeError(f"cannot read {path}")
    return img


def _skimage_image(name: str) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(img[..., :3], cv2.COLOR_RGB2BGR)


@lru_cache(maxsize=None)
def load_photo(name: str) -> np.ndarray:
    """The photo as a BGR uint8 array (cropped when the Photo says so)."""
    if name == "hanks":
        img = _insightface_image("Tom_Hanks_54745.png")
    elif name in ("t1_mid", "group"):
        img = _insightface_image("t1.jpg")
    else:
        img = _skimage_image(name)
    crop = PHOTOS[name].crop
    if crop:
        x0, y0, x1, y1 = crop
        img = img[y0:y1, x0:x1]
    img = np.ascontiguousarray(img)
    img.setflags(write=False)
    return img


# --------------------------------------------------------------------------- shots


@dataclass(frozen=True)
class Shot:
    """One continuous shot.

    kind: ``face`` (one face, ``face_px`` short side, whole shot), ``noface``,
    ``small`` (a face far below the size gate), ``enter`` (background only, then
    a face slides in and is fully visible from ``enter_at`` seconds into the shot),
    ``group`` (several medium faces).
    """

    kind: str
    seconds: float
    photo: str
    face_px: float = 0.0
    background: str = "coffee"
    enter_at: float = 0.0
    zoom: float = 0.06  # relative zoom over the shot (slow camera move)
    pan: float = 0.04  # pan over the shot, fraction of the frame width
    blur: float = 0.0  # Gaussian blur of the whole picture (sigma, output pixels): a shot out of focus


@dataclass
class ShotTruth:
    index: int
    kind: str
    start_frame: int  # first frame of the shot
    end_frame: int  # one past the last frame
    start: float  # seconds of the first frame
    end: float  # seconds of the first frame of the next shot (or file end)
    person: str  # "" when no face
    face_short: float  # approx. short side of the face box, displayed pixels
    face_from: float | None  # seconds: face fully visible from here (None: no face)
    face_to: float | None
    swappable: bool  # one face, present the whole shot, >= SWAPPABLE_MIN_PX


@dataclass
class Truth:
    path: str
    width: int  # displayed size (after rotation)
    height: int
    coded_width: int
    coded_height: int
    fps: float
    frames: int
    duration: float
    rotation: int
    vfr: bool
    container: str
    codec: str
    audio: bool
    gop: int
    bframes: int
    cuts: list[int]  # frame index where each new shot starts (not 0)
    cut_times: list[float]
    shots: list[ShotTruth] = field(default_factory=list)
    frame_times: list[float] | None = None  # every frame's time: VFR files (make_video);
    # in the formats profile whenever not a plain grid (VFR, gaps), and for packed_b
    # Optional fields (the ``formats`` profile). Left out of the JSON while None,
    # so truth files written before they existed stay byte-identical.
    klass: str | None = None  # which real-world file class this file stands for
    t0: float | None = None  # display time (frame.time) of the first frame as decoded;
    # every other time in the truth is relative to it (e.g. 1.4 for MPEG-TS)
    audio_t0: float | None = None  # frame.time of the first decoded audio frame: the
    # audio signal starts with the video's, but codec delays and muxers move it a little
    pix_fmt: str | None = None  # coded pixel format
    audio_codec: str | None = None  # encoder name, None when no audio
    gaps: list[list[float]] | None = None  # [[last frame end, next frame start], ...]
    sizes: list[list[float]] | None = None  # coded size changes: [[from time, w, h], ...]
    duplicate_of: str | None = None  # this file is a byte copy of that one
    note: str | None = None  # what is special about the file, in words

    def save(self, path: Path) -> None:
        d = asdict(self)
        for k in _OPTIONAL_TRUTH:
            if d[k] is None:
                del d[k]
        path.write_text(json.dumps(d, indent=1))


_OPTIONAL_TRUTH = ("klass", "t0", "audio_t0", "pix_fmt", "audio_codec", "gaps", "sizes", "duplicate_of", "note")


SWAPPABLE_MIN_PX = 112.0  # 1.4x the default 80 px gate


def load_truth(video: Path) -> Truth:
    raw = json.loads(truth_path(video).read_text())
    raw["shots"] = [ShotTruth(**s) for s in raw["shots"]]
    return Truth(**raw)


def truth_path(video: Path) -> Path:
    return video.with_name(video.name + ".truth.json")


# --------------------------------------------------------------------------- rendering


def _cover_transform(src_w: int, src_h: int, w: int, h: int, t: float, shot: Shot, seed: int):
    """Affine (2x3) that makes the picture cover the canvas, drifting slowly."""
    s = max(w / src_w, h / src_h) * (1.08 + shot.zoom * t)
    rng = np.random.default_rng(seed)
    direction = 1.0 if rng.random() < 0.5 else -1.0
    cx = src_w / 2 + direction * shot.pan * w / s * (t - 0.5)
    cy = src_h / 2
    return np.float32([[s, 0, w / 2 - s * cx], [0, s, h / 2 - s * cy]])


def _face_transform(photo: Photo, w: int, h: int, t: float, shot: Shot, seed: int):
    """Affine that puts the photo's face centre near the canvas centre at
    ``face_px`` short side, with a slow zoom and pan."""
    fx, fy, fw, fh = photo.face  # type: ignore[misc]
    zoom = 1.0 + shot.zoom * (t - 0.5)
    s = shot.face_px / min(fw, fh) * zoom
    rng = np.random.default_rng(seed)
    ox = (rng.random() - 0.5) * 0.2 * w
    direction = 1.0 if rng.random() < 0.5 else -1.0
    tx = w / 2 + ox + direction * shot.pan * w * (t - 0.5)
    ty = h / 2
    cx, cy = fx + fw / 2, fy + fh / 2
    return np.float32([[s, 0, tx - s * cx], [0, s, ty - s * cy]])


def _warp(img: np.ndarray, m: np.ndarray, canvas: np.ndarray) -> np.ndarray:
    h, w = canvas.shape[:2]
    return cv2.warpAffine(
        img, m, (w, h), dst=canvas, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_TRANSPARENT
    )


def render_frame(shot: Shot, t: float, w: int, h: int, seed: int) -> np.ndarray:
    """The displayed picture of ``shot`` at relative time ``t`` in [0, 1]."""
    img = _render(shot, t, w, h, seed)
    return cv2.GaussianBlur(img, (0, 0), shot.blur) if shot.blur > 0 else img


def _render(shot: Shot, t: float, w: int, h: int, seed: int) -> np.ndarray:
    bg_name = shot.photo if shot.kind == "noface" else shot.background
    bg = load_photo(bg_name)
    canvas = np.zeros((h, w, 3), np.uint8)
    _warp(bg, _cover_transform(bg.shape[1], bg.shape[0], w, h, t, shot, seed), canvas)
    if shot.kind == "noface":
        return canvas
    photo = PHOTOS[shot.photo]
    img = load_photo(shot.photo)
    if shot.kind == "group":
        m = _cover_transform(img.shape[1], img.shape[0], w, h, t, shot, seed)
        m[:, :2] *= 1.0 / 1.08  # show the whole group
        return _warp(img, m, canvas)
    m = _face_transform(photo, w, h, t, shot, seed)
    if shot.kind == "enter":
        # Slide in from the right edge; fully placed at enter_at.
        slide = 0.6
        tt = t * shot.seconds
        if tt < shot.enter_at - slide:
            return canvas
        k = min(1.0, (tt - (shot.enter_at - slide)) / slide)
        m[0, 2] += (1.0 - k) * w * 0.75
    return _warp(img, m, canvas)


# --------------------------------------------------------------------------- encoding


def _vfr_durations(n: int, fps: float, seed: int) -> list[int]:
    """Frame durations in ms: runs at the nominal rate, at half rate and jittered."""
    base = 1000.0 / fps
    rng = np.random.default_rng(seed + 99)
    out = []
    for i in range(n):
        phase = (i // 15) % 3
        d = base if phase == 0 else base * 2 if phase == 1 else base * (0.7 + 0.6 * rng.random())
        out.append(max(10, int(round(d))))
    return out


def make_video(
    path: Path,
    shots: list[Shot],
    *,
    width: int = 512,
    height: int = 288,
    fps: int = 25,
    gop: int = 50,
    bframes: int = 2,
    codec: str = "libx264",
    crf: int = 26,
    audio: bool = True,
    vfr: bool = False,
    rotation: int = 0,
    seed: int = 0,
    shot_seeds: list[int] | None = None,
) -> Truth:
    """Render and encode ``shots`` to ``path``; write ``<path>.truth.json``.

    ``width``/``height`` are the *displayed* size. With ``rotation`` (degrees
    counter-clockwise, as PyAV's ``frame.rotation`` reports) the coded picture is
    rotated the other way and the display matrix says how to turn it back.
    ``shot_seeds``: the render seed of each shot (default ``seed * 1000 + index``),
    so the same shot can be rendered identically in different files.
    ``gop`` is the maximum keyframe interval in frames; x264's scene-cut
    detection still puts keyframes on most hard cuts (like camera files).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".mkv": "matroska", ".webm": "webm", ".avi": "avi", ".mov": "mov"}.get(
        path.suffix.lower(), "mp4"
    )
    if rotation % 90:
        raise ValueError("rotation must be a multiple of 90")
    coded_w, coded_h = (height, width) if rotation % 180 else (width, height)
    if coded_w % 64 or coded_h % 2:
        # Measured: with a coded width that is not a multiple of 64 (e.g. 480)
        # libx264 output changes from run to run (it reads past the end of the
        # unpadded chroma rows PyAV hands it), so the files would not be
        # byte-reproducible.
        raise ValueError(f"coded width must be a multiple of 64 and height even, got {coded_w}x{coded_h}")

    # Frame times.
    counts = [int(round(s.seconds * fps)) for s in shots]
    n = sum(counts)
    if vfr:
        durs = _vfr_durations(n, fps, seed)
        time_base = Fraction(1, 1000)
        pts = np.concatenate([[0], np.cumsum(durs)[:-1]]).astype(int).tolist()
        times = [p / 1000 for p in pts]
        end_time = (pts[-1] + durs[-1]) / 1000
    else:
        time_base = Fraction(1, fps)
        pts = list(range(n))
        times = [i / fps for i in range(n)]
        end_time = n / fps

    # bitexact: no creation time or library version in the header -> identical bytes.
    out = av.open(str(path), "w", format=fmt, container_options={"fflags": "+bitexact"})
    try:
        vs = out.add_stream(codec, rate=fps)
        vs.width, vs.height = coded_w, coded_h
        vs.pix_fmt = "yuv420p"
        vs.codec_context.time_base = time_base
        if codec == "libx264":
            vs.options = {
                "preset": "veryfast",
                "crf": str(crf),
                "x264-params": f"keyint={gop}:min-keyint={max(1, min(gop, fps))}:"
                f"bframes={bframes}:threads=1:sliced-threads=0",
            }
        elif codec == "mpeg4":
            vs.codec_context.gop_size = gop
            vs.codec_context.max_b_frames = bframes
            vs.options = {"qscale": "5"}
        elif codec in ("libvpx", "libvpx-vp9"):
            vs.codec_context.gop_size = gop
            vs.options = {"deadline": "realtime", "cpu-used": "8", "crf": "32", "b": "0"}
        vs.codec_context.thread_count = 1
        if rotation:
            vs.set_display_rotation(rotation)
        aus = None
        if audio:
            acodec = {"webm": "libopus", "avi": "mp3"}.get(fmt, "aac")
            if acodec == "mp3" and "libmp3lame" not in av.codecs_available:
                acodec = "pcm_s16le"
            rate = 48000
            aus = out.add_stream(acodec, rate=rate, layout="mono")

        track = _AudioTrack(out, aus, shots, end_time) if aus is not None else None
        truths: list[ShotTruth] = []
        frame_i = 0
        for si, (shot, count) in enumerate(zip(shots, counts)):
            start_frame = frame_i
            for k in range(count):
                t = k / max(1, count - 1)
                img = render_frame(shot, t, width, height, shot_seeds[si] if shot_seeds else seed * 1000 + si)
                if rotation:
                    # Coded = displayed turned clockwise; the player turns it back CCW.
                    img = np.ascontiguousarray(np.rot90(img, k=-(rotation // 90)))
                vf = av.VideoFrame.from_ndarray(img, format="bgr24")
                vf.pts = pts[frame_i]
                vf.time_base = time_base
                for packet in vs.encode(vf):
                    out.mux(packet)
                frame_i += 1
                if track is not None:
                    track.until(times[frame_i] if frame_i < n else end_time)
            truths.append(_shot_truth(si, shot, start_frame, frame_i, times, end_time, (width, height)))
        for packet in vs.encode(None):
            out.mux(packet)
        if track is not None:
            track.finish()
    finally:
        out.close()

    cuts = [s.start_frame for s in truths[1:]]
    truth = Truth(
        path=path.name,
        width=width,
        height=height,
        coded_width=coded_w,
        coded_height=coded_h,
        fps=float(fps),
        frames=n,
        duration=end_time,
        rotation=rotation,
        vfr=vfr,
        container=fmt,
        codec=codec,
        audio=audio,
        gop=gop,
        bframes=bframes,
        cuts=cuts,
        cut_times=[times[c] for c in cuts],
        shots=truths,
        frame_times=times if vfr else None,
    )
    truth.save(truth_path(path))
    return truth


def _shot_truth(si, shot: Shot, f0: int, f1: int, times, end_time, size) -> ShotTruth:
    start = times[f0]
    end = times[f1] if f1 < len(times) else end_time
    person = PHOTOS[shot.photo].person if shot.kind != "noface" else ""
    if shot.kind == "noface":
        face_from = face_to = None
        short = 0.0
    elif shot.kind == "enter":
        face_from, face_to = start + shot.enter_at, end
        short = shot.face_px
    elif shot.kind == "group":
        # Several faces at the cover scale of the whole group photo.
        face_from, face_to = start, end
        photo, img = PHOTOS[shot.photo], load_photo(shot.photo)
        cover = max(size[0] / img.shape[1], size[1] / img.shape[0])
        short = min(photo.face[2:]) * cover  # type: ignore[index]
    else:
        face_from, face_to = start, end
        short = shot.face_px
    swappable = shot.kind == "face" and short >= SWAPPABLE_MIN_PX
    return ShotTruth(
        index=si,
        kind=shot.kind,
        start_frame=f0,
        end_frame=f1,
        start=start,
        end=end,
        person=person,
        face_short=float(short),
        face_from=face_from,
        face_to=face_to,
        swappable=swappable,
    )


class _AudioTrack:
    """A tone whose pitch changes with the shot, encoded a little at a time so
    the file interleaves audio with video like a camera file (all audio after
    all video makes a demuxer seek back and forth through the whole file)."""

    def __init__(
        self,
        out,
        aus,
        shots: list[Shot],
        end_time: float,
        *,
        shot_starts: list[float] | None = None,
        gaps: list[tuple[float, float]] | tuple = (),
    ) -> None:
        """``shot_starts``: display time of each shot (default: back to back);
        ``gaps``: (from, to) display-time holes left without samples (the next
        sample after a hole has a pts that jumps, like the video)."""
        self.out, self.aus = out, aus
        rate = self.rate = aus.codec_context.sample_rate
        self.fsize = aus.codec_context.frame_size or 1024
        self.pad = bool(aus.codec_context.frame_size)
        total = int(round(end_time * rate))
        self.holes = [(int(round(a * rate)), int(round(b * rate))) for a, b in gaps]
        if shot_starts is not None:
            bounds = np.array(list(shot_starts) + [end_time])
        else:
            bounds = np.cumsum([0] + [s.seconds for s in shots])
        t = np.arange(total) / rate
        shot_of = np.clip(np.searchsorted(bounds, t, side="right") - 1, 0, len(shots) - 1)
        freq = 220.0 * (1 + 0.25 * (shot_of % 5))
        phase = 2 * math.pi * np.cumsum(freq) / rate
        self.wave = (0.2 * np.sin(phase)).astype(np.float32)
        self.fmt = aus.codec_context.format.name
        self.at = 0

    def until(self, seconds: float) -> None:
        """Encode and mux the samples up to ``seconds``."""
        stop = min(len(self.wave), int(seconds * self.rate))
        while self.at < stop:
            i = self.at
            hole = next((h for h in self.holes if h[0] <= i < h[1]), None)
            if hole is not None:
                self.at = hole[1]
                continue
            end = i + self.fsize
            for h0, _ in self.holes:
                if i < h0 < end:
                    end = h0  # the chunk before a hole stops at it (padded below)
            chunk = self.wave[i:end]
            if len(chunk) < self.fsize and self.pad:
                chunk = np.pad(chunk, (0, self.fsize - len(chunk)))
            if self.fmt in ("s16", "s16p"):
                arr = (chunk * 32767).astype(np.int16)[None, :]
            elif self.fmt in ("s32", "s32p"):
                arr = (chunk * 2147483647).astype(np.int32)[None, :]
            else:
                arr = chunk[None, :]
            af = av.AudioFrame.from_ndarray(arr, format=self.fmt, layout="mono")
            af.sample_rate = self.rate
            af.pts = i
            af.time_base = Fraction(1, self.rate)
            for packet in self.aus.encode(af):
                self.out.mux(packet)
            self.at += self.fsize

    def finish(self) -> None:
        self.until(len(self.wave) / self.rate + 1)
        for packet in self.aus.encode(None):
            self.out.mux(packet)


# --------------------------------------------------------------------------- batches


def _basic_shots(scale: float = 1.0) -> list[Shot]:
    """The canonical sequence: face, no face, face, small face, face entering."""
    p = scale
    return [
        Shot("face", 3.0, "astronaut", face_px=140 * p),
        Shot("noface", 2.0, "coffee"),
        Shot("face", 3.0, "t1_mid", face_px=150 * p),
        Shot("small", 2.0, "astronaut", face_px=34 * p, background="rocket"),
        Shot("enter", 3.0, "hanks", face_px=140 * p, background="chelsea", enter_at=1.2),
    ]


def tests_batch(out_dir: Path) -> list[Path]:
    """Small videos for the test suite (each a few seconds at 512x288)."""
    out_dir = Path(out_dir)
    made = [
        (out_dir / "basic.mp4", _basic_shots(), {}),
        (
            out_dir / "vfr.mp4",
            [
                Shot("face", 3.0, "hanks", face_px=140, background="rocket"),
                Shot("noface", 2.0, "chelsea"),
                Shot("face", 3.0, "astronaut", face_px=130),
            ],
            {"vfr": True},
        ),
        (
            out_dir / "rotated.mp4",
            [
                Shot("face", 3.0, "astronaut", face_px=130),
                Shot("noface", 2.0, "rocket"),
                Shot("face", 2.0, "t1_mid", face_px=130),
            ],
            {"rotation": 90, "width": 288, "height": 512},
        ),
        (
            out_dir / "sub" / "nofaces.mkv",
            [Shot("noface", 2.0, "rocket"), Shot("noface", 2.0, "coffee")],
            {},
        ),
    ]
    paths = []
    for i, (path, shots, kw) in enumerate(made):
        make_video(path, shots, seed=i, **kw)
        paths.append(path)
    return paths


def demo_batch(out_dir: Path) -> list[Path]:
    """The `facecut demo` media: three videos of about 20 s at 640x360.

    Uses scikit-image's photos only (the ``[demo]`` extra), so the demo needs
    neither insightface nor anything downloaded.
    """
    out_dir = Path(out_dir)
    specs = [
        (
            "interview.mp4",
            [
                Shot("face", 4.0, "astronaut", face_px=180),
                Shot("noface", 2.0, "coffee"),
                Shot("face", 4.0, "camera", face_px=150, background="chelsea"),
                Shot("small", 3.0, "astronaut", face_px=40, background="rocket"),
                Shot("enter", 5.0, "astronaut", face_px=170, background="chelsea", enter_at=2.0),
                Shot("face", 4.0, "camera", face_px=170, background="coffee"),
            ],
            {"width": 640, "height": 360},
        ),
        (
            "travel.mkv",
            [
                Shot("noface", 3.0, "rocket"),
                Shot("face", 6.0, "astronaut", face_px=200),
                Shot("noface", 2.0, "chelsea"),
                Shot("face", 5.0, "camera", face_px=160, background="rocket"),
            ],
            {"width": 640, "height": 360},
        ),
        (
            "phone.mp4",
            [
                Shot("face", 4.0, "astronaut", face_px=200),
                Shot("noface", 2.0, "coffee"),
                Shot("face", 4.0, "camera", face_px=180, background="coffee"),
            ],
            {"width": 360, "height": 640, "rotation": 90, "vfr": True},
        ),
    ]
    paths = []
    for i, (name, shots, kw) in enumerate(specs):
        make_video(out_dir / name, shots, seed=100 + i, **kw)
        paths.append(out_dir / name)
    return paths


def bench_batch(out_dir: Path, *, height: int = 720, minutes: float = 1.0, videos: int = 3) -> list[Path]:
    """Benchmark corpus: ``videos`` files of about ``minutes`` at 720p/1080p, 30 fps,
    GOP 2 s, 2 B-frames, single-slice (camera-like) encoding."""
    out_dir = Path(out_dir)
    width = height * 16 // 9
    k = height / 288
    cycle = _basic_shots(k) + [
        Shot("group", 4.0, "group"),
        Shot("face", 6.0, "hanks", face_px=140 * k, background="rocket"),
        Shot("noface", 3.0, "chelsea"),
        Shot("face", 8.0, "t1_mid", face_px=130 * k),
    ]
    cycle_s = sum(s.seconds for s in cycle)
    paths = []
    for v in range(videos):
        reps = max(1, int(round(minutes * 60 / cycle_s)))
        shots = (cycle[v % 3 :] + cycle[: v % 3]) * reps
        path = out_dir / f"bench{height}p_{v}.mp4"
        make_video(path, shots, width=width, height=height, fps=30, gop=60, seed=200 + v)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- format matrix
#
# One small file per real-world file class (codec, container, timing quirk), each
# with a truth file. All times in a truth are seconds of *display* time relative
# to the first frame; ``t0`` says where that first frame sits on the file's own
# clock (frame.time as a decoder reports it: 1.4 for our MPEG-TS files).

_CONTAINERS = {
    ".mp4": "mp4",
    ".mov": "mov",
    ".mkv": "matroska",
    ".webm": "webm",
    ".avi": "avi",
    ".ts": "mpegts",
    ".wmv": "asf",
}

TS_START = 1.4  # seconds; where ffmpeg-written MPEG-TS files usually start


def _configure_video(cc, codec: str, *, width, height, pix_fmt, fps, time_base, gop, bframes, quality,
                     fixed_gop: bool = False):
    """Set up a video encoder context: single-threaded, deterministic, small.
    ``fixed_gop``: no keyframe at scene changes and a fixed B-frame pattern (x264,
    FFmpeg's MPEG encoders), as broadcast encoders do: a shot may then start on a
    B-frame that no other picture references."""
    cc.width, cc.height = width, height
    cc.pix_fmt = pix_fmt
    cc.time_base = time_base
    cc.framerate = Fraction(fps)
    cc.thread_count = 1
    if codec == "libx264":
        cc.options = {
            "preset": "veryfast",
            "crf": str(quality or 26),
            "x264-params": f"keyint={gop}:min-keyint={max(1, min(gop, fps))}:"
            f"bframes={bframes}:threads=1:sliced-threads=0" + (":scenecut=0:b-adapt=0" if fixed_gop else ""),
        }
    elif codec == "libx265":
        cc.options = {
            "preset": "ultrafast",
            "crf": str(quality or 30),
            "x265-params": f"log-level=error:keyint={gop}:min-keyint={max(1, min(gop, fps))}:"
            f"bframes={bframes}:pools=none:frame-threads=1",
        }
    elif codec in ("libvpx", "libvpx-vp9"):
        cc.gop_size = gop
        cc.options = {"deadline": "realtime", "cpu-used": "8", "crf": str(quality or 32), "b": "0"}
    else:
        # FFmpeg's own encoders (mpeg4, mpeg2video, wmv2, mjpeg): a fixed quantiser.
        # (An option named "qscale" is silently ignored by avcodec_open2; qmin=qmax works.)
        cc.gop_size = gop
        if codec != "mjpeg":
            cc.max_b_frames = bframes
        q = str(quality or 6)
        cc.options = {"qmin": q, "qmax": q, **({"sc_threshold": "1000000000"} if fixed_gop else {})}


def _padded_frame(img: np.ndarray) -> av.VideoFrame:
    """A yuv420p frame whose line padding holds defined bytes (edge pixels).

    ``from_ndarray`` leaves the bytes between a row's end and its aligned line
    size as they were in memory. Encoders are allowed to read them (SIMD loads);
    with sizes that are not a multiple of 16 that is a possible source of
    run-to-run differences, so they are filled here. (Measured: for 426x240 the
    bytes come out the same either way on this machine, even with a dirty heap.)
    """
    h, w = img.shape[:2]
    yuv = av.VideoFrame.from_ndarray(img, format="bgr24").reformat(format="yuv420p").to_ndarray()
    cw, ch = (w + 1) // 2, (h + 1) // 2
    flat = yuv[h:].ravel()
    planes = [yuv[:h], flat[: cw * ch].reshape(ch, cw), flat[cw * ch : 2 * cw * ch].reshape(ch, cw)]
    frame = av.VideoFrame(w, h, "yuv420p")
    for plane, a in zip(frame.planes, planes):
        full = np.pad(a, ((0, 0), (0, plane.line_size - a.shape[1])), mode="edge")
        plane.update(np.ascontiguousarray(full))
    return frame


def _vop_type(data: bytes) -> str:
    """Coding type of the first MPEG-4 Part 2 VOP in ``data``: I, P, B or S."""
    i = data.find(b"\x00\x00\x01\xb6")
    return "IPBS"[data[i + 4] >> 6] if 0 <= i < len(data) - 4 else "?"


class _DivxPacker:
    """Turns FFmpeg ``mpeg4`` packets (decode order, one B-frame between
    references) into DivX 5 / Xvid "packed bitstream" AVI chunks.

    Video for Windows wants one chunk in, one frame out, so DivX stored each
    reference VOP together with the B-VOP that follows it in decode order, and a
    tiny not-coded VOP (N-VOP) in the next chunk as a placeholder::

        encoder (decode order):  I0  P2  B1  P4  B3  P6  B5 ...
        packed AVI chunks:       I0  P2+B1  N  P4+B3  N  P6+B5  N ...

    (the "2,0,2,0 frames per packet" of FFmpeg's ``mpeg4_unpack_bframes``
    docs). The user data ``DivX503b1393p`` (the string Xvid writes in packed
    mode; the trailing ``p`` is the flag) goes into every header so FFmpeg's
    decoder switches to ``divx_packed`` mode. The chunk count equals the frame
    count, as in a real file.

    What a decoder then reports (PyAV 18.1 / FFmpeg 8): the AVI demuxer gives
    chunk k pts k+1; the decoder keeps the B-VOP of a P+B chunk and decodes it
    when the next (N-VOP) chunk is fed, so it gets that chunk's pts. Output
    order is display order (I0 B1 P2 B3 P4 ...) but frame.pts read 1, 3, 2, 5,
    4, 7, 6, ... like DivX/Xvid files in the wild (…268, 270, 269…).
    (With two B-frames between references the same packing decoded one frame
    wrongly near a keyframe here, so the matrix uses one, as DivX did.)
    """

    USER_DATA = b"\x00\x00\x01\xb2DivX503b1393p"

    def __init__(self, fps: int) -> None:
        self.held: bytes | None = None
        self.tbits = max(1, (fps - 1).bit_length())  # vop_time_increment bits (resolution = fps)
        self.fps = fps
        self.slot = 0  # chunk index

    def _tag(self, data: bytes) -> bytes:
        if b"\x00\x00\x01\x20" not in data[:64]:  # no VOL header in this packet
            return data
        j = data.find(b"\x00\x00\x01\xb3")  # GOV, else the VOP
        if j < 0:
            j = data.find(b"\x00\x00\x01\xb6")
        return data[:j] + self.USER_DATA + data[j:]

    def _nvop(self) -> bytes:
        # vop_coding_type P, modulo_time_base 0, marker, time increment, marker,
        # vop_coded 0, then MPEG-4 stuffing (0 then 1s) to the byte boundary.
        bits = "01" + "0" + "1" + format(self.slot % self.fps, f"0{self.tbits}b") + "1" + "0"
        bits += "0" + "1" * ((8 - (len(bits) + 1) % 8) % 8)
        return b"\x00\x00\x01\xb6" + int(bits, 2).to_bytes(len(bits) // 8, "big")

    def _out(self, data: bytes) -> list[bytes]:
        self.slot += 1
        return [data]

    def feed(self, data: bytes) -> list[bytes]:
        data = self._tag(data)
        kind = _vop_type(data)
        if kind == "B" and self.held is not None:
            chunks = self._out(self.held + data)
            self.held = None
            return chunks + self._out(self._nvop())
        chunks = self._out(self.held) if self.held is not None else []
        self.held = None
        if kind == "B":  # a B-frame with no reference held: keep it as it is
            return chunks + self._out(data)
        self.held = data
        return chunks

    def flush(self) -> list[bytes]:
        chunks = self._out(self.held) if self.held is not None else []
        self.held = None
        return chunks


def _first_frame_time(path: Path, kind: str = "video") -> float:
    """frame.time of the earliest of the first decoded frames of the first
    ``kind`` stream (the file's t0)."""
    with av.open(str(path)) as c:
        times = []
        for i, f in enumerate(c.decode(**{kind: 0})):
            if f.time is not None:
                times.append(f.time)
            if i >= 12:
                break
    return round(min(times), 6) if times else 0.0


def make_format_video(
    path: Path,
    shots: list[Shot],
    *,
    klass: str,
    width: int = 512,
    height: int = 288,
    fps: int = 25,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    gop: int = 50,
    bframes: int = 2,
    quality: int | None = None,
    acodec: str | None = "aac",
    arate: int = 48000,
    rotation: int = 0,
    vfr: bool = False,
    gap: tuple[float, float] | None = None,
    sizes: list[tuple[float, int, int]] | None = None,
    packed_b: bool = False,
    pad_planes: bool = False,
    container_options: dict[str, str] | None = None,
    codec_tag: str | None = None,
    fixed_gop: bool = False,
    note: str | None = None,
    seed: int = 0,
) -> Truth:
    """Like :func:`make_video` for the format matrix: any container/encoder
    pair, plus the timing and stream quirks of real files.

    ``width``/``height``: displayed size (of the first segment with ``sizes``).
    ``gap``: (from, to) seconds; no frames (nor audio) in between, pts jump.
    ``sizes``: [(from seconds, w, h), ...] coded-size changes inside the one
    video stream: a fresh encoder per size (each keyframe carries its own
    SPS/PPS in-band), MPEG-TS only. Inside a shot the picture is scaled with
    the frame, face included (``face_short`` in the truth is the smaller one).
    ``packed_b``: MPEG-4 ASP in AVI with DivX-style packed B-frames (see
    :class:`_DivxPacker`); needs ``codec="mpeg4"`` and ``bframes=1``.
    ``pad_planes``: hand the encoder yuv420p frames with defined line padding.
    ``fixed_gop``: no keyframe at scene changes, a fixed B-frame pattern (see
    :func:`_configure_video`): shots may start on unreferenced B-frames.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = _CONTAINERS[path.suffix.lower()]
    if rotation % 90:
        raise ValueError("rotation must be a multiple of 90")
    if packed_b and (codec != "mpeg4" or bframes != 1 or fmt != "avi" or vfr or gap):
        raise ValueError("packed_b needs mpeg4 with bframes=1 in AVI, constant frame rate")
    if sizes and (fmt != "mpegts" or rotation):
        raise ValueError("size changes are written to MPEG-TS only, without rotation")
    coded_w, coded_h = (height, width) if rotation % 180 else (width, height)

    # Display times of the frames (relative to the first).
    counts = [int(round(s.seconds * fps)) for s in shots]
    n = sum(counts)
    if vfr:
        durs = _vfr_durations(n, fps, seed)
        time_base = Fraction(1, 1000)
        pts = np.concatenate([[0], np.cumsum(durs)[:-1]]).astype(int).tolist()
        end_pts = pts[-1] + durs[-1]
    else:
        time_base = Fraction(1, fps)
        pts = list(range(n))
        if gap:
            k0, jump = gap[0] * fps, (gap[1] - gap[0]) * fps
            if abs(k0 - round(k0)) > 1e-9 or abs(jump - round(jump)) > 1e-9 or jump <= 0:
                raise ValueError("gap must start and last whole frames")
            pts = [p + int(round(jump)) if p >= round(k0) else p for p in pts]
        end_pts = pts[-1] + 1
    times = [float(p * time_base) for p in pts]
    end_time = float(end_pts * time_base)
    segs = sorted(sizes) if sizes else [(0.0, width, height)]
    if segs[0][0] != 0.0 or (segs[0][1], segs[0][2]) != (width, height):
        raise ValueError("sizes must start with (0.0, width, height)")

    def seg_of(t: float) -> int:
        return max(i for i, s in enumerate(segs) if s[0] <= t + 1e-9)

    copts = {"fflags": "+bitexact"}
    if fmt == "mpegts":
        copts["output_ts_offset"] = str(TS_START)  # every stream starts at 1.4 s
    if fmt == "avi":
        # AVI has no timestamps, only chunk positions. With the default, the MP3
        # encoder's negative first pts makes libavformat shift every stream by
        # a frame, and the AVI muxer then writes an empty video chunk.
        copts["avoid_negative_ts"] = "disabled"
    copts.update(container_options or {})
    out = av.open(str(path), "w", format=fmt, container_options=copts)
    try:
        vs = out.add_stream(codec, rate=fps)
        cfg = dict(pix_fmt=pix_fmt, fps=fps, time_base=time_base, gop=gop, bframes=bframes, quality=quality,
                   fixed_gop=fixed_gop)
        _configure_video(vs.codec_context, codec, width=coded_w, height=coded_h, **cfg)
        if codec_tag:
            vs.codec_tag = codec_tag
        if rotation:
            vs.set_display_rotation(rotation)
        aus = None
        if acodec:
            aus = out.add_stream(acodec, rate=arate, layout="mono")
            if acodec == "wmav2":
                aus.bit_rate = 64000  # wmav2 refuses to open without a bit rate

        packer = _DivxPacker(fps) if packed_b else None
        chunk_i = 0

        def mux(packets) -> None:
            nonlocal chunk_i
            for packet in packets:
                if packer is None:
                    packet.stream = vs  # packets of a later encoder join the one stream
                    out.mux(packet)
                    continue
                for chunk in packer.feed(bytes(packet)):
                    _mux_chunk(out, vs, chunk, chunk_i, fps)
                    chunk_i += 1

        starts = [times[f] for f in np.cumsum([0] + counts[:-1])]  # display start of each shot
        track = (
            _AudioTrack(out, aus, shots, end_time, shot_starts=starts, gaps=[gap] if gap else ())
            if aus is not None
            else None
        )
        cc = vs.codec_context
        cur = 0
        truths: list[ShotTruth] = []
        frame_i = 0
        for si, (shot, count) in enumerate(zip(shots, counts)):
            start_frame = frame_i
            for k in range(count):
                t = k / max(1, count - 1)
                s_i = seg_of(times[frame_i])
                if s_i != cur:  # size change: finish this encoder, start another
                    mux(cc.encode(None))
                    cur = s_i
                    cc = av.CodecContext.create(codec, "w")
                    _configure_video(cc, codec, width=segs[s_i][1], height=segs[s_i][2], **cfg)
                _, w_s, h_s = segs[s_i]
                shot_s = shot if w_s == width else replace(shot, face_px=shot.face_px * w_s / width)
                img = render_frame(shot_s, t, w_s, h_s, seed * 1000 + si)
                if rotation:
                    img = np.ascontiguousarray(np.rot90(img, k=-(rotation // 90)))
                vf = _padded_frame(img) if pad_planes else av.VideoFrame.from_ndarray(img, format="bgr24")
                vf.pts = pts[frame_i]
                vf.time_base = time_base
                mux(cc.encode(vf))
                frame_i += 1
                if track is not None:
                    track.until(times[frame_i] if frame_i < n else end_time)
            truths.append(_shot_truth(si, shot, start_frame, frame_i, times, end_time, (width, height)))
        mux(cc.encode(None))
        if packer is not None:
            for chunk in packer.flush():
                _mux_chunk(out, vs, chunk, chunk_i, fps)
                chunk_i += 1
        if track is not None:
            track.finish()
    finally:
        out.close()

    cuts = [s.start_frame for s in truths[1:]]
    grid = not vfr and not gap
    truth = Truth(
        path=path.name,
        width=width,
        height=height,
        coded_width=coded_w,
        coded_height=coded_h,
        fps=float(fps),
        frames=n,
        duration=end_time,
        rotation=rotation,
        vfr=vfr,
        container=fmt,
        codec=codec,
        audio=aus is not None,
        gop=gop,
        bframes=bframes,
        cuts=cuts,
        cut_times=[times[c] for c in cuts],
        shots=truths,
        frame_times=None if grid and not packed_b else times,
        klass=klass,
        t0=_first_frame_time(path),
        audio_t0=_first_frame_time(path, "audio") if aus is not None else None,
        pix_fmt=pix_fmt,
        audio_codec=acodec if aus is not None else None,
        gaps=[[float(gap[0]), float(gap[1])]] if gap else None,
        sizes=[[float(t), int(w), int(h)] for t, w, h in segs] if sizes else None,
        note=note,
    )
    truth.save(truth_path(path))
    return truth


def _mux_chunk(out, vs, data: bytes, index: int, fps: int) -> None:
    """One AVI chunk of the packed stream; the AVI index gives it dts = index."""
    packet = av.Packet(data)
    packet.stream = vs
    packet.time_base = Fraction(1, fps)
    packet.pts = packet.dts = index
    packet.is_keyframe = _vop_type(data) == "I"
    out.mux(packet)


def _matrix_shots(i: int, lengths=(3.0, 2.0, 2.0)) -> list[Shot]:
    """Face shot, no-face shot, face shot (swappable faces of 140-145 px),
    subjects and backgrounds varied with ``i``."""
    faces = [("astronaut", 140.0), ("t1_mid", 145.0), ("hanks", 140.0)]
    bgs = ["coffee", "rocket", "chelsea"]
    (pa, fa), (pb, fb) = faces[i % 3], faces[(i + 1) % 3]
    return [
        Shot("face", lengths[0], pa, face_px=fa, background=bgs[i % 3]),
        Shot("noface", lengths[1], bgs[(i + 1) % 3]),
        Shot("face", lengths[2], pb, face_px=fb, background=bgs[(i + 2) % 3]),
    ]


# name -> (klass, make_format_video arguments). Audio starts with the video in
# every file that has audio (both at t0; MP2 is written 481 samples early,
# its encoder delay, as FFmpeg does).
FORMAT_MATRIX: dict[str, tuple[str, dict]] = {
    "basic.mp4": ("h264_aac_mp4", dict(note="plain H.264 + AAC in MP4: the reference file")),
    "hevc_opus.mkv": ("hevc_opus_mkv", dict(codec="libx265", acodec="libopus")),
    "vp9_opus.webm": ("vp9_opus_webm", dict(codec="libvpx-vp9", acodec="libopus")),
    "mpeg4_bframes.avi": (
        "mpeg4_asp_avi",
        dict(
            codec="mpeg4", bframes=2, acodec="libmp3lame",
            note="MPEG-4 ASP with 2 B-frames stored the standard way (one VOP per chunk); "
            "decoded frame.pts increase monotonically, starting at 1 (t0 = one frame)",
        ),
    ),
    "packed_b.avi": (
        "mpeg4_packed_b_avi",
        dict(
            codec="mpeg4", bframes=1, acodec="libmp3lame", packed_b=True, codec_tag="DX50",
            note="DivX-style packed B-frames (P+B in one chunk, then a 6-byte N-VOP chunk). "
            "Decoded frame.pts arrive out of order: 1, 3, 2, 5, 4, 7, 6, ..., 175, 174 "
            "(the demuxer gives chunk k pts k+1; a B-frame is decoded, from the decoder's "
            "buffer, while the N-VOP chunk after its reference's chunk is fed, and takes that "
            "chunk's pts). The pictures come out in display order; frame_times are their true "
            "display times (a plain grid).",
        ),
    ),
    "mpeg2_mp2.ts": (
        "mpeg2_mp2_ts",
        dict(codec="mpeg2video", gop=12, bframes=2, quality=8, acodec="mp2", note="MPEG-TS starting at 1.4 s"),
    ),
    "h264_10bit.mp4": ("h264_10bit_mp4", dict(pix_fmt="yuv420p10le")),
    "odd_size.mp4": (
        "odd_size",
        dict(width=426, height=240, pad_planes=True, note="426x240: width not a multiple of 16"),
    ),
    "rot90.mov": ("rotation", dict(width=288, height=512, rotation=90)),
    "rot180.mp4": ("rotation", dict(rotation=180)),
    "rot270.mp4": ("rotation", dict(width=288, height=512, rotation=270)),
    "fragmented.mp4": (
        "fragmented_mp4",
        dict(
            container_options={"movflags": "frag_keyframe+empty_moov+default_base_moof"},
            note="fragmented MP4: no edit list, so each track starts at its own first dts: "
            "the first video frame shows at 0.08 s (x264's B-frame delay), audio at 0.0",
        ),
    ),
    "mjpeg_pcm.avi": (
        "mjpeg_pcm_avi",
        dict(
            codec="mjpeg", pix_fmt="yuvj420p", width=480, height=270, quality=16, bframes=0,
            acodec="pcm_s16le", arate=16000, shots=_matrix_shots(12, (2.6, 1.6, 1.8)),
        ),
    ),
    "wmv2_wma.wmv": (
        "wmv2_wma_asf",
        dict(
            codec="wmv2", bframes=0, acodec="wmav2",
            note="ASF (ms clock): the WMA encoder's first packet has pts -2048 samples, so "
            "libavformat shifts both streams by 43 ms: the first video frame is at 0.043",
        ),
    ),
    "gap.mp4": (
        "timestamp_gap",
        dict(
            gap=(3.0, 6.0), shots=_matrix_shots(14, (3.0, 2.0, 2.0)),
            note="frames stop at 3.0 s and resume at 6.0 s (at the first cut); the audio "
            "has the same hole",
        ),
    ),
    "reschange_cut.ts": (
        "resolution_change",
        dict(
            sizes=[(0.0, 512, 288), (3.0, 640, 360)],
            note="512x288 then 640x360 from the first cut on, in one H.264 stream",
        ),
    ),
    "reschange_mid.ts": (
        "resolution_change",
        dict(
            sizes=[(0.0, 512, 288), (2.0, 640, 360)],
            shots=_matrix_shots(16, (4.0, 1.6, 1.4)),
            note="512x288 then 640x360 from 2.0 s, inside the first shot (the picture "
            "scales with the frame)",
        ),
    ),
    "vfr_phone.mp4": (
        "vfr_phone",
        dict(width=288, height=512, rotation=90, vfr=True, note="portrait phone clip: rotation 90 + VFR"),
    ),
    "long_shot.mp4": (
        "long_shot",
        dict(
            fps=10, gop=50, shots=[Shot("face", 40.0, "astronaut", face_px=140.0, background="rocket")],
            note="one 40 s face shot (for splitting long segments)",
        ),
    ),
}

# Encoders each file needs (the file is left out when one is missing).
FORMAT_ENCODERS: dict[str, tuple[str, ...]] = {
    name: tuple(
        c for c in (kw.get("codec", "libx264"), kw.get("acodec", "aac")) if c
    )
    for name, (_, kw) in FORMAT_MATRIX.items()
}
FORMAT_ENCODERS["dup_of_basic.mp4"] = FORMAT_ENCODERS["basic.mp4"]


def format_spec(name: str) -> tuple[str, list[Shot], dict, int]:
    """(klass, shots, other make_format_video arguments, seed) of one file of the
    format matrix: enough to render any of its frames again."""
    i = list(FORMAT_MATRIX).index(name)
    klass, kw = FORMAT_MATRIX[name]
    kw = dict(kw)
    shots = kw.pop("shots", None) or _matrix_shots(i)
    return klass, shots, kw, 300 + i


def formats_batch(out_dir: Path, names: list[str] | None = None) -> list[Path]:
    """The format matrix: one small file (~7 s, 512x288-ish, 25 fps) per
    real-world file class, plus ``dup_of_basic.mp4``, a byte copy of
    ``basic.mp4``. Files whose encoder this PyAV build lacks are left out (with
    a message on stderr). ``names`` limits the batch to some files."""
    import shutil
    import sys

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = list(FORMAT_MATRIX) + ["dup_of_basic.mp4"] if names is None else list(names)
    if "dup_of_basic.mp4" in wanted and "basic.mp4" not in wanted:
        wanted.insert(0, "basic.mp4")
    paths = []
    for name in FORMAT_MATRIX:
        if name not in wanted:
            continue
        missing = [c for c in FORMAT_ENCODERS[name] if c not in av.codecs_available]
        if missing:
            print(f"formats: skipping {name}: encoder(s) {missing} not in this PyAV build", file=sys.stderr)
            continue
        klass, shots, kw, seed = format_spec(name)
        make_format_video(out_dir / name, shots, klass=klass, seed=seed, **kw)
        paths.append(out_dir / name)
    if "dup_of_basic.mp4" in wanted and (out_dir / "basic.mp4") in paths:
        dup = out_dir / "dup_of_basic.mp4"
        shutil.copyfile(out_dir / "basic.mp4", dup)
        t = load_truth(out_dir / "basic.mp4")
        t.path, t.klass, t.duplicate_of = dup.name, "duplicate", "basic.mp4"
        t.note = "byte-identical copy of basic.mp4"
        t.save(truth_path(dup))
        paths.append(dup)
    return paths


def scale_batch(out_dir: Path, *, pieces: int = 150, seconds: float = 10.0) -> tuple[Path, Path]:
    """Same content two ways, for the scale figure: ``pieces/`` holds ``pieces``
    short files of one face shot each, ``joined/joined.mp4`` the same shots, in
    the same order, as one file. Small frames (384x216) so the comparison is
    about per-file costs, not pixels. Returns (pieces folder, joined folder)."""
    out_dir = Path(out_dir)
    cycle = [("astronaut", "coffee"), ("hanks", "rocket"), ("t1_mid", "chelsea"), ("camera", "coffee")]
    shots = [Shot("face", seconds, photo, face_px=120, background=bg)
             for photo, bg in (cycle[i % len(cycle)] for i in range(pieces))]
    seeds = [700_000 + i for i in range(pieces)]  # each shot rendered the same in both
    for i, shot in enumerate(shots):
        make_video(out_dir / "pieces" / f"piece_{i:04d}.mp4", [shot], width=384, height=216, shot_seeds=[seeds[i]])
    make_video(out_dir / "joined" / "joined.mp4", shots, width=384, height=216, shot_seeds=seeds)
    return out_dir / "pieces", out_dir / "joined"


PROFILES = {
    "tests": tests_batch,
    "demo": demo_batch,
    "bench720": lambda d: bench_batch(d, height=720),
    "bench1080": lambda d: bench_batch(d, height=1080),
    "formats": formats_batch,
    "scale": lambda d: sorted((d / "pieces").glob("*.mp4")) + [d / "joined" / "joined.mp4"]
    if scale_batch(d) else [],
}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m facecut.tools.make_media", description=__doc__.split("\n")[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--profile", choices=sorted(PROFILES), default="tests")
    args = ap.parse_args(argv)
    for p in PROFILES[args.profile](args.out_dir):
        t = load_truth(p)
        print(f"{p}  {t.width}x{t.height}  {t.duration:.2f}s  {len(t.shots)} shots  cuts={t.cut_times}")


if __name__ == "__main__":
    main()
