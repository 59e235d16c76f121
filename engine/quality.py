"""How well a clip will swap: one score 0-100 from parts measured on its faces.

Measured during analysis, per face, in the inference process on the frame
already in the ring (:func:`sharpness`, stored as ``Face.sharp``); everything
else comes from the logs, so a re-score recomputes the quality without decoding.

The parts of a clip (:func:`clip_quality`), over the samples of its span, the
*main face* of a sample being the largest face of the clip's tracks in it:

==============  =====================================================  ======
part            measure                                                weight
==============  =====================================================  ======
``face_px``     median short side of the main face, source pixels      25
``yaw``,        median ``|yaw|`` and ``|pitch|`` of the main face,      25
``pitch``       degrees (frontalness)
``sharpness``   median sharpness of the main face (below)              20
``stability``   median movement of the main face between consecutive   10
                samples, in face sizes (box jitter)
``presence``    share of the span's samples that have the main face    10
``crowded``     share of the span's samples with another face at least  10
                half the main face's size
==============  =====================================================  ======

Each part maps to 0..1 (1 best) by a documented ramp (:data:`RAMPS`): size from
48 px (0) to 160 px (1), inswapper_128's working size and some margin; yaw 0 at
60 degrees and pitch 0 at 40 degrees (their mean, yaw counting twice);
sharpness on a log scale from 20 (0) to 1000 (1): the test media's
sharp faces measure about 700, the same faces out of focus (sigma 3 px) under 200; stability 0 at half a face size per
sample; presence as it is; crowded inverted. ``score`` is the weighted mean times
100; a part that was not measured (sharpness in logs written before it existed)
leaves the mean, the other weights keep their proportions.

Sharpness: the variance of the Laplacian of the face box, in gray, resized to
64 x 64 (so faces of every size are compared at one scale; a face upscaled from
fewer pixels is blurrier, which is also what the swap will see). Measured cost:
``facecut bench --stages quality``.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from facecut.records import ClipQuality

SHARP_SIDE = 64  # px: the face crop is resized to this square before the Laplacian

WEIGHTS = {"face_px": 25.0, "frontal": 25.0, "sharpness": 20.0, "stability": 10.0, "presence": 10.0,
           "alone": 10.0}
# (value giving 0, value giving 1) of each part's linear ramp (sharpness: of its log10)
RAMPS = {"face_px": (48.0, 160.0), "yaw": (60.0, 0.0), "pitch": (40.0, 0.0), "sharpness": (math.log10(20.0), 3.0),
         "stability": (0.5, 0.0)}


def sharpness(img: np.ndarray, box, scale: float) -> float:
    """Sharpness of the face ``box`` (source pixels) in ``img`` (a BGR frame of
    the source scaled by ``scale``): see the module doc. -1 for an empty crop."""
    h, w = img.shape[:2]
    if not all(math.isfinite(v) for v in box):
        return -1.0
    x1, y1, x2, y2 = (int(round(v * scale)) for v in box)
    x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
    if x2 - x1 < 2 or y2 - y1 < 2:
        return -1.0
    gray = cv2.cvtColor(img[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY)
    small = cv2.resize(gray, (SHARP_SIDE, SHARP_SIDE), interpolation=cv2.INTER_AREA)
    _, std = cv2.meanStdDev(cv2.Laplacian(small, cv2.CV_32F))
    return round(float(std[0, 0]) ** 2, 2)


def _ramp(value: float, part: str) -> float:
    lo, hi = RAMPS[part]
    return min(1.0, max(0.0, (value - lo) / (hi - lo)))


def clip_quality(main: dict[str, np.ndarray], n_span: int, crowded: int) -> ClipQuality:
    """The quality of a clip from its main faces, one per sample that has one, in
    sample order: ``main`` holds arrays ``short``, ``yaw``, ``pitch``, ``sharp``
    and ``box`` (n, 4); ``n_span`` is the number of samples in the clip's span,
    ``crowded`` how many of them show another face at least half the main one's size."""
    n = len(main["short"])
    if n == 0 or n_span <= 0:
        return ClipQuality(score=0.0, face_px=0.0, yaw=0.0, pitch=0.0, sharpness=None, stability=0.0,
                           presence=0.0, crowded=0.0)
    face_px = float(np.median(main["short"]))
    yaw = float(np.median(np.abs(main["yaw"])))
    pitch = float(np.median(np.abs(main["pitch"])))
    sharp = main["sharp"][main["sharp"] >= 0]
    sharp_v = float(np.median(sharp)) if len(sharp) else None
    box = main["box"]
    centre = (box[:, :2] + box[:, 2:]) / 2
    moves = np.linalg.norm(np.diff(centre, axis=0), axis=1) / np.maximum(main["short"][1:], 1.0)
    stability = float(np.median(moves)) if len(moves) else 0.0
    presence = min(1.0, n / n_span)
    crowded_share = min(1.0, crowded / n_span)
    parts = {
        "face_px": _ramp(face_px, "face_px"),
        "frontal": (2 * _ramp(yaw, "yaw") + _ramp(pitch, "pitch")) / 3,
        "stability": _ramp(stability, "stability"),
        "presence": presence,
        "alone": 1.0 - crowded_share,
    }
    if sharp_v is not None:
        parts["sharpness"] = _ramp(math.log10(max(sharp_v, 1.0)), "sharpness")
    total = sum(WEIGHTS[k] for k in parts)
    score = 100.0 * sum(WEIGHTS[k] * v for k, v in parts.items()) / total
    return ClipQuality(
        score=round(score, 1), face_px=round(face_px, 1), yaw=round(yaw, 1), pitch=round(pitch, 1),
        sharpness=None if sharp_v is None else round(sharp_v, 1), stability=round(stability, 3),
        presence=round(presence, 3), crowded=round(crowded_share, 3),
    )
