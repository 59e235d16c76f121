"""SCRFD detection, with 1k3d68 pose and ArcFace embeddings when the folder has them.

``--model scrfd --model-dir FOLDER``: the detector is any SCRFD-with-keypoints file
in FOLDER (or where insightface, roop-unleashed or FaceFusion keep their models
below it), found by its graph (:mod:`facecut.models.folders`). Two layouts exist,
told apart from the graph, never from the file name (:class:`ScrfdDetector`):

* insightface's packs (``det_10g.onnx``, ``det_500m.onnx``): dynamic input size,
  outputs without a batch axis, in the order scores, boxes, keypoints for
  strides 8, 16, 32;
* exported files (the ``scrfd`` package's ``scrfd.onnx``, FaceFusion's
  ``scrfd_2.5g.onnx``): a fixed input (640 x 640), a batch axis, and outputs
  named ``score_8`` ... ``kps_32`` in any order.

Either way each frame is letterboxed at the top-left of a ``det_size`` square,
``(v - 127.5) / 128``, RGB; score >= ``det_thresh`` (0.5); NMS 0.4; the decode of
insightface's ``SCRFD.detect`` (:func:`facecut.models.postproc.scrfd_decode`).

Pose: from 1k3d68 (68 3D landmarks, as buffalo_l) when the folder has it, else
from the 5 keypoints (:func:`facecut.models.postproc.pose_from_5points`, as MTCNN).
Embeddings: ArcFace on the 112 x 112 crop aligned on the 5 keypoints,
``(v - 127.5) / 127.5``, L2-normalised, when the folder has a recogniser.
:class:`facecut.models.buffalo.BuffaloL` is this pipeline on buffalo_l's three files.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from facecut.errors import ConfigError, ModelError
from facecut.records import Face, embedding_to_bytes

from .base import PROVIDERS, FaceModel, Session, check_frames, faces_from_arrays, make_session, resolve_provider
from .folders import ENV_DIR, Found, find_models
from .postproc import (
    ARCFACE_DST,
    landmark_decode,
    landmark_transforms,
    pose_from_5points,
    pose_from_landmarks68,
    scrfd_decode,
    scrfd_letterbox,
    umeyama,
)

STRIDES = (8, 16, 32)
_NAMED = re.compile(r"^(score|bbox|kps)_(8|16|32)$")


class ScrfdDetector:
    """One SCRFD session and its layout (read from the graph): the output order
    as scores, boxes, keypoints per stride, and the input size when it is fixed.
    ``batch`` > 1: the graph is rewritten to take that many frames at once
    (:func:`facecut.models.graph.batched_scrfd`, fixed shape; a short batch is
    padded), with every frame's detections those of one frame at a time."""

    MEAN, STD = 127.5, 128.0

    def __init__(self, path: Path, provider: str = "auto", threads: int = 1, det_size: int = 640,
                 det_thresh: float = 0.5, nms_thresh: float = 0.4, batch: int = 1):
        self.batch = max(1, int(batch))
        graph = None
        if self.batch > 1:
            from .graph import batched_scrfd

            graph = batched_scrfd(str(path), self.batch)
        sess = self.sess = make_session(path, provider, threads, model_bytes=graph)
        outs = sess.outputs
        if len(outs) != 9:
            raise ModelError(f"{sess.path}: expected SCRFD with 9 outputs (scores, boxes, keypoints "
                             f"for strides 8/16/32), got {len(outs)}")
        named = [_NAMED.match(o.name) for o in outs]
        if all(named):
            where = {(m[1], int(m[2])): i for i, m in enumerate(named)}
            self.order = [where[(kind, s)] for kind in ("score", "bbox", "kps") for s in STRIDES]
        else:  # insightface's order; grouped by what each output is, graph order within a group
            by_last = {1: [], 4: [], 10: []}
            for i, o in enumerate(outs):
                by_last.setdefault(o.shape[-1], []).append(i)
            if [len(by_last[k]) for k in (1, 4, 10)] != [3, 3, 3]:
                raise ModelError(f"{sess.path}: outputs {[o.shape for o in outs]} are not SCRFD's")
            self.order = by_last[1] + by_last[4] + by_last[10]
        shape = sess.inputs[0].shape
        h, w = shape[2], shape[3]
        self.fixed = (w, h) if isinstance(h, int) and isinstance(w, int) else None
        if self.fixed is not None:
            if self.fixed[0] != self.fixed[1]:
                raise ModelError(f"{sess.path}: a fixed input of {w}x{h}; only square inputs are supported")
            det_size = self.fixed[0]
        if det_size % 32:
            raise ConfigError(f"det_size must be a multiple of 32, got {det_size}")
        self.det_size = int(det_size)
        self.det_thresh, self.nms_thresh = float(det_thresh), float(nms_thresh)
        self.layout = ("fixed %dx%d" % self.fixed if self.fixed else "any size") + \
            (", named outputs" if all(named) else "") + (f", {self.batch} frames a run" if self.batch > 1 else "")

    def detect_one(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One BGR frame: det (n, 5) float32 x1 y1 x2 y2 score, kps (n, 5, 2), in its pixels."""
        return self.detect_many([frame])[0]

    def detect_many(self, frames: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`detect_one` of each frame, ``batch`` frames a run."""
        size = (self.det_size, self.det_size)
        out = []
        for at in range(0, len(frames), self.batch):
            boxed = [scrfd_letterbox(f, size) for f in frames[at : at + self.batch]]
            blob = cv2.dnn.blobFromImages([c for c, _ in boxed], 1.0 / self.STD, size, (self.MEAN,) * 3,
                                          swapRB=True)
            if len(boxed) < self.batch:  # fixed shape: pad with blank frames
                blob = np.concatenate([blob, np.zeros((self.batch - len(boxed), *blob.shape[1:]), blob.dtype)])
            outs = self.sess.run(blob)
            # per frame: a batch axis, or (insightface's 2-d layout) equal runs of rows
            per_frame = [o if o.ndim == 3 else np.split(o, self.batch) for o in (outs[i] for i in self.order)]
            for j, (_, det_scale) in enumerate(boxed):
                mine = [o[j] for o in per_frame]
                out.append(scrfd_decode(mine, size, det_scale, self.det_thresh, self.nms_thresh))
        return out


class Scrfd(FaceModel):
    """SCRFD backend. Options (``load_model(..., **opts)``): ``det_thresh`` (0.5),
    ``nms_thresh`` (0.4), ``det_size`` (640; a fixed-size export sets its own),
    ``det_batch`` (1: frames per detector run; more runs a rewritten fixed-batch
    graph, see :class:`ScrfdDetector`), ``embed`` (True: run the recogniser if
    there is one), ``max_rows`` (64: faces per landmark/recognition run).
    ``min_face`` is not used for detection."""

    name = "scrfd"
    has_embeddings = True  # when the folder has a recogniser (the instance says)
    LANDMARK_SIZE = 192
    LANDMARK_MEAN, LANDMARK_STD = 0.0, 1.0  # 1k3d68 normalises inside the graph
    ARCFACE_SIZE = 112
    ARCFACE_MEAN, ARCFACE_STD = 127.5, 127.5

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
        det_batch: int = 1,
        embed: bool = True,
        max_rows: int = 64,
    ):
        folder, files = self.files_in(model_dir)
        self.model_dir = folder
        self.files = files
        self.max_rows = max(1, int(max_rows))
        self.batch = batch
        self.min_face = min_face
        self.detector = ScrfdDetector(files["detector"], provider, threads, det_size, det_thresh, nms_thresh,
                                      det_batch)
        det = self.det = self.detector.sess
        key = det.key
        self.lmk = make_session(files["landmark"], key, threads) if files.get("landmark") else None
        rec = files.get("recognition")
        self.rec: Session | None = make_session(rec, key, threads) if embed and rec else None
        self.has_embeddings = self.rec is not None
        self.provider = det.provider

    # ----------------------------------------------------------------- files

    @classmethod
    def files_in(cls, model_dir: Path | None) -> tuple[Path, dict[str, Path]]:
        """(folder, role -> file) for ``model_dir`` (default ``$FACECUT_MODEL_DIR``);
        raises ModelError saying what is missing."""
        found = cls._survey(model_dir)
        det = found.first("detector")
        if det is None:
            raise ModelError(cls._missing(found.folder))
        files = {"detector": det.path}
        for role in ("landmark", "recognition"):
            m = found.first(role)
            if m is not None:
                files[role] = m.path
        return found.folder, files

    @staticmethod
    def _folder(model_dir: Path | None) -> Path | None:
        """The folder asked for: ``model_dir``, else ``$FACECUT_MODEL_DIR``, else None."""
        if model_dir is not None:
            return Path(model_dir)
        env = os.environ.get(ENV_DIR)
        return Path(env) if env else None

    @classmethod
    def _survey(cls, model_dir: Path | None) -> Found:
        folder = cls._folder(model_dir)
        if folder is None:
            raise ModelError("--model scrfd needs a model folder: --model-dir FOLDER or "
                             f"${ENV_DIR} (an insightface pack, roop-unleashed's models folder, "
                             "FaceFusion's .assets/models, or a folder with an SCRFD .onnx file)")
        return find_models(folder)

    @staticmethod
    def _missing(folder: Path) -> str:
        where = "does not exist" if not folder.is_dir() else "holds no SCRFD detector with keypoints"
        return (f"model folder {folder} {where}: expected an SCRFD .onnx file (insightface's det_10g.onnx, "
                "FaceFusion's scrfd_2.5g.onnx, ...) in it or in buffalo_l/, models/buffalo_l/ or "
                ".assets/models/ below it. facecut downloads nothing; or use --model mtcnn.")

    @classmethod
    def model_files(cls, model_dir: Path | None, options: dict) -> dict[str, Path]:
        try:
            files = cls.files_in(model_dir)[1]
        except ModelError:
            return {}
        if options.get("embed") is False:  # the recogniser is not loaded
            files.pop("recognition", None)
        return files

    @classmethod
    def describe(cls, model_dir: Path | None, provider: str) -> dict:
        try:
            folder, files = cls.files_in(model_dir)
        except ModelError as ex:
            given = cls._folder(model_dir)
            return {"files": {}, "missing": ["an SCRFD detector"] if given else [],
                    "model_dir": str(given or ""),
                    "provider": PROVIDERS[resolve_provider(provider)], "has_embeddings": False, "error": str(ex)}
        return {"files": {r: str(p) for r, p in files.items()}, "missing": [], "model_dir": str(folder),
                "provider": PROVIDERS[resolve_provider(provider)], "has_embeddings": "recognition" in files,
                "error": None}

    def close(self) -> None:
        self.det = self.lmk = self.rec = self.detector = None  # type: ignore[assignment]

    # ----------------------------------------------------------------- stages

    def detect_one(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.detector.detect_one(frame)

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
        """(n, d) float32 L2-normalised ArcFace embeddings (NaN rows: no alignment)."""
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
        dets = self.detector.detect_many(frames)
        counts = [len(d) for d, _ in dets]
        if not sum(counts):
            return [[] for _ in frames]
        fid = np.repeat(np.arange(len(frames)), counts)
        det = np.concatenate([d for d, _ in dets])
        kps = np.concatenate([k for _, k in dets])
        if self.lmk is not None:
            _, angles = self.landmarks(frames, fid, det[:, :4])
        else:
            angles = pose_from_5points(kps)
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
