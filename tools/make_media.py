"""Deterministic test media with written truth: H.264 (libx264 via PyAV) + AAC.

Every video is a sequence of *shots* rendered from real photos shipped inside
installed packages (insightface's ``t1.jpg`` and ``Tom_Hanks_54745.png``,
scikit-image's ``astronaut``, ``camera``, ``coffee``, ``chelsea``, ``rocket``),
with a slow camera move inside each shot and a hard cut between shots. Next to
each video ``<name>.truth.json`` records what a test needs to know: the frame
index and time of every cut, which shots hold a swappable face, how large the
face is, when a face enters, and (for VFR files) every frame's time.

    python -m tools.make_media OUT_DIR --profile tests|demo|bench720|bench1080

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
from dataclasses import asdict, dataclass, field
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
    frame_times: list[float] | None = None  # every frame's time, VFR files only

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1))


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
) -> Truth:
    """Render and encode ``shots`` to ``path``; write ``<path>.truth.json``.

    ``width``/``height`` are the *displayed* size. With ``rotation`` (degrees
    counter-clockwise, as PyAV's ``frame.rotation`` reports) the coded picture is
    rotated the other way and the display matrix says how to turn it back.
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
                img = render_frame(shot, t, width, height, seed * 1000 + si)
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

    def __init__(self, out, aus, shots: list[Shot], end_time: float) -> None:
        self.out, self.aus = out, aus
        rate = self.rate = aus.codec_context.sample_rate
        self.fsize = aus.codec_context.frame_size or 1024
        self.pad = bool(aus.codec_context.frame_size)
        total = int(round(end_time * rate))
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
            chunk = self.wave[i : i + self.fsize]
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


PROFILES = {
    "tests": tests_batch,
    "demo": demo_batch,
    "bench720": lambda d: bench_batch(d, height=720),
    "bench1080": lambda d: bench_batch(d, height=1080),
}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m tools.make_media", description=__doc__.split("\n")[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--profile", choices=sorted(PROFILES), default="tests")
    args = ap.parse_args(argv)
    for p in PROFILES[args.profile](args.out_dir):
        t = load_truth(p)
        print(f"{p}  {t.width}x{t.height}  {t.duration:.2f}s  {len(t.shots)} shots  cuts={t.cut_times}")


if __name__ == "__main__":
    main()
