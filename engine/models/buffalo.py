"""insightface's ``buffalo_l`` pack, re-implemented without the insightface package.

Files (the folder insightface and roop-unleashed use, default
``~/.insightface/models/buffalo_l``; ``--model-dir`` / ``FACECUT_MODEL_DIR`` may name
that folder or its parent):

* ``det_10g.onnx``: SCRFD-10GF detector, batch fixed at 1, run frame by frame on a
  640 x 640 top-left letterbox, ``(v - 127.5) / 128``, RGB; strides 8/16/32 with 2
  anchors; score >= ``det_thresh`` (0.5); NMS 0.4. Same decode as insightface's
  ``SCRFD.detect`` (see :func:`engine.models.postproc.scrfd_decode`).
* ``1k3d68.onnx``: 68 3D landmarks on a 192 x 192 crop (centre of the box, 1.5 x its
  long side), head pose from the mean-shape fit (pitch, yaw, roll in degrees, see
  :mod:`engine.models.postproc` for the sign convention). Normalisation is inside
  the graph (mean 0, std 1).
* ``w600k_r50.onnx``: ArcFace, 512-d, on the 112 x 112 crop aligned on the 5
  detector keypoints (Umeyama similarity to the ArcFace template),
  ``(v - 127.5) / 127.5``, RGB; L2-normalised and stored as float16 bytes.

The landmark and recognition models run once per batch over every face of every
frame (chunked to ``max_rows``). Boxes are not clipped to the frame.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from engine.errors import ConfigError, ModelError
from engine.records import Face, embedding_to_bytes

from .base import (
    PROVIDERS,
    FaceModel,
    Session,
    check_frames,
    faces_from_arrays,
    make_session,
    resolve_provider,
)
from .postproc import (
    ARCFACE_DST,
    landmark_decode,
    landmark_transforms,
    pose_from_landmarks68,
    scrfd_decode,
    scrfd_letterbox,
    umeyama,
)

log = logging.getLogger(__name__)

ENV_DIR = "FACECUT_MODEL_DIR"
PACK = "buffalo_l"
FILES = {"detection": "det_10g.onnx", "landmark": "1k3d68.onnx", "recognition": "w600k_r50.onnx"}


def default_model_dir() -> Path:
    """``$FACECUT_MODEL_DIR`` if set, else ``~/.insightface/models/buffalo_l``."""
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env).expanduser()
    return Path("~/.insightface/models").expanduser() / PACK


def find_dir(model_dir: Path | None) -> tuple[Path, list[str]]:
    """(folder, missing file names). Accepts the pack folder or its parent."""
    base = Path(model_dir).expanduser() if model_dir is not None else default_model_dir()
    for cand in (base, base / PACK):
        if all((cand / f).is_file() for f in FILES.values()):
            return cand, []
    missing = [f for f in FILES.values() if not (base / f).is_file()]
    return base, missing


def _missing_message(folder: Path, missing: list[str]) -> str:
    where = "does not exist" if not folder.is_dir() else f"lacks {', '.join(missing)}"
    return (
        f"buffalo_l model folder {folder} {where}. Expected the insightface buffalo_l "
        f"files {', '.join(FILES.values())} in that folder (or in a '{PACK}' folder "
        f"inside it). facecut does not download them: unpack insightface's buffalo_l "
        f"pack there, point --model-dir or ${ENV_DIR} at it, or use --model mtcnn."
    )


class BuffaloL(FaceModel):
    """buffalo_l backend. Options (``load_model(..., **opts)``):

    ``det_thresh`` (0.5), ``nms_thresh`` (0.4), ``det_size`` (640: the letterbox side),
    ``embed`` (True: run ArcFace; False leaves ``emb`` None and skips the file's
    session), ``max_rows`` (64: faces per landmark/recognition run).
    ``min_face`` is not used for detection (SCRFD has a fixed input size).
    """

    name = PACK
    has_embeddings = True
    LANDMARK_SIZE = 192
    LANDMARK_MEAN, LANDMARK_STD = 0.0, 1.0  # 1k3d68 normalises inside the graph
    ARCFACE_SIZE = 112
    ARCFACE_MEAN, ARCFACE_STD = 127.5, 127.5
    DET_MEAN, DET_STD = 127.5, 128.0

    def __init__(
        self,
        *,
        model_dir: Path | None = None,
        provider: str = "auto",
        threads: int = 1,
        min_face: float = 80.0,
        batch: int | None = None,
        det_thresh: float = 0.5,
        nms_thresh: float = 0.4,
        det_size: int = 640,
        embed: bool = True,
        max_rows: int = 64,
    ):
        folder, missing = find_dir(model_dir)
        if missing:
            raise ModelError(_missing_message(folder, missing))
        self.model_dir = folder
        self.det_thresh = float(det_thresh)
        self.nms_thresh = float(nms_thresh)
        if det_size % 32:
            raise ConfigError(f"det_size must be a multiple of 32, got {det_size}")
        self.det_size = int(det_size)
        self.max_rows = max(1, int(max_rows))
        self.batch = batch
        self.min_face = min_face
        self.det = make_session(folder / FILES["detection"], provider, threads)
        key = self.det.key
        self.lmk = make_session(folder / FILES["landmark"], key, threads)
        self.rec: Session | None = (
            make_session(folder / FILES["recognition"], key, threads) if embed else None
        )
        self.has_embeddings = self.rec is not None
        self.provider = self.det.provider
        n_out = len(self.det.outputs)
        if n_out != 9:
            raise ModelError(
                f"{self.det.path}: expected SCRFD with 9 outputs (scores, boxes, keypoints "
                f"for strides 8/16/32), got {n_out}"
            )

    @classmethod
    def describe(cls, model_dir: Path | None, provider: str) -> dict:
        folder, missing = find_dir(model_dir)
        return {
            "files": {r: str(folder / f) for r, f in FILES.items() if (folder / f).is_file()},
            "missing": missing,
            "model_dir": str(folder),
            "provider": PROVIDERS[resolve_provider(provider)],
            "has_embeddings": True,
            "error": _missing_message(folder, missing) if missing else None,
        }

    def close(self) -> None:
        self.det = self.lmk = self.rec = None  # type: ignore[assignment]

    # ----------------------------------------------------------------- stages

    def detect_one(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """SCRFD on one frame: det (n, 5) float32 x1 y1 x2 y2 score, kps (n, 5, 2)."""
        size = (self.det_size, self.det_size)
        canvas, det_scale = scrfd_letterbox(frame, size)
        blob = cv2.dnn.blobFromImage(
            canvas, 1.0 / self.DET_STD, size, (self.DET_MEAN,) * 3, swapRB=True
        )
        outs = self.det.run(blob)
        return scrfd_decode(outs, (self.det_size, self.det_size), det_scale,
                            self.det_thresh, self.nms_thresh)

    def _run_rows(self, sess: Session, blob: np.ndarray) -> np.ndarray:
        """Run a batchable model over ``blob`` rows, ``max_rows`` at a time. On DirectML
        the last chunk is padded so every run has the same shape."""
        outs = []
        for at in range(0, len(blob), self.max_rows):
            part = blob[at : at + self.max_rows]
            n = len(part)
            if sess.key == "dml" and n < self.max_rows and len(blob) > self.max_rows:
                pad = np.zeros((self.max_rows - n, *part.shape[1:]), part.dtype)
                part = np.concatenate([part, pad])
            outs.append(sess.run(part)[0][:n])
        return np.concatenate(outs)

    def landmarks(self, frames: Sequence[np.ndarray], fid: np.ndarray, boxes: np.ndarray):
        """(n, 68, 3) image-space landmarks and (n, 3) pitch, yaw, roll."""
        size = self.LANDMARK_SIZE
        m = landmark_transforms(boxes, size)
        crops = [cv2.warpAffine(frames[f], m[k], (size, size), borderValue=0.0)
                 for k, f in enumerate(fid)]
        blob = cv2.dnn.blobFromImages(crops, 1.0 / self.LANDMARK_STD, (size, size),
                                      (self.LANDMARK_MEAN,) * 3, swapRB=True)
        pts = landmark_decode(self._run_rows(self.lmk, blob), m, size)
        return pts, pose_from_landmarks68(pts)

    def embeddings(self, frames: Sequence[np.ndarray], fid: np.ndarray,
                   kps: np.ndarray) -> np.ndarray:
        """(n, 512) float32 L2-normalised ArcFace embeddings (NaN rows: no alignment)."""
        size = self.ARCFACE_SIZE
        m = umeyama(kps, ARCFACE_DST * (size / 112.0))
        ok = np.isfinite(m).all(axis=(1, 2))
        m[~ok] = np.array([[1.0, 0, 0], [0, 1.0, 0]])
        crops = [cv2.warpAffine(frames[f], m[k], (size, size), borderValue=0.0)
                 for k, f in enumerate(fid)]
        blob = cv2.dnn.blobFromImages(crops, 1.0 / self.ARCFACE_STD, (size, size),
                                      (self.ARCFACE_MEAN,) * 3, swapRB=True)
        feat = self._run_rows(self.rec, blob).astype(np.float32)
        feat /= np.maximum(np.linalg.norm(feat, axis=1, keepdims=True), 1e-12)
        feat[~ok] = np.nan
        return feat

    def detect(self, frames: Sequence[np.ndarray], scales: Sequence[float]) -> list[list[Face]]:
        check_frames(frames, scales)
        dets = [self.detect_one(f) for f in frames]
        counts = [len(d) for d, _ in dets]
        if not sum(counts):
            return [[] for _ in frames]
        fid = np.repeat(np.arange(len(frames)), counts)
        det = np.concatenate([d for d, _ in dets])
        kps = np.concatenate([k for _, k in dets])
        _, angles = self.landmarks(frames, fid, det[:, :4])
        embs: list[bytes | None] = [None] * len(det)
        if self.rec is not None:
            feat = self.embeddings(frames, fid, kps)
            embs = [None if not np.isfinite(v).all() else embedding_to_bytes(v) for v in feat]
        out, at = [], 0
        for n, sc in zip(counts, scales):
            sl = slice(at, at + n)
            out.append(faces_from_arrays(det[sl, :4], kps[sl], det[sl, 4], angles[sl], sc,
                                         embs[sl]))
            at += n
        return out
