"""Pure numpy post-processing shared by the backends: NMS, SCRFD decode, landmark
crop transforms, head pose, ArcFace alignment.

Everything here works on whole stacks (one row per face) and has no model or
provider knowledge. Where a function re-implements insightface (0.7.3 and 2.1
agree on these), it keeps insightface's dtypes and operation order so results
match to float rounding; tests compare against insightface's own classes.

Pose convention (insightface's 1k3d68 and our MTCNN landmark fit alike): angles
in degrees, ``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)`` maps the mean 3D face (x to the
image right, y down, z towards the camera) onto image x/y. Consequences, checked
by tests on synthetic rotations of the mean face:

* yaw < 0 when the face turns towards the image's left (nose tip moves to smaller x),
  yaw > 0 towards the image's right;
* pitch > 0 when the face tilts up (chin forward, nose tip moves up in the image);
* roll > 0 when the face rotates clockwise as seen on screen (the eye on the image's
  right is lower).
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import numpy as np

try:  # OpenCV's greedy NMS (cv2.dnn): the same rule in C++; numpy below otherwise
    from cv2.dnn import NMSBoxes as _cv2_nms
except ImportError:  # an OpenCV build without dnn
    _cv2_nms = None

# --------------------------------------------------------------------------- NMS


def nms(
    boxes: np.ndarray, scores: np.ndarray, thresh: float, mode: str = "union"
) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, best score first.

    Areas use the ``+1`` pixel convention of insightface and MTCNN. Ties keep input
    order (stable sort), so a frame's result never depends on what else is batched.
    ``mode``: ``union`` (IoU) or ``min`` (intersection over the smaller box). A box
    is dropped when its overlap with a kept one is ``> thresh``.
    Arithmetic stays in the dtype of ``boxes`` (float32 for SCRFD parity).
    """
    n = len(boxes)
    if n == 0:
        return np.empty(0, dtype=np.intp)
    if (mode == "union" and boxes.dtype == np.float64 and n > 16 and _cv2_nms is not None
            and scores.min() > 0):  # OpenCV drops scores <= its threshold (0)
        # Same greedy rule, stable descending sort and ``> thresh`` test, in C++ (4-15x
        # faster on P-Net's candidate lists). Widths + 1 give the +1 pixel areas; scores
        # go through float32, exact for scores that come from float32 outputs.
        rects = np.column_stack([boxes[:, :2], boxes[:, 2:4] - boxes[:, :2] + 1])
        keep = _cv2_nms(rects, np.asarray(scores, dtype=np.float32), 0.0, float(thresh))
        return np.asarray(keep, dtype=np.intp).ravel()
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        xx1 = np.maximum(x1[i], x1[rest])
        yy1 = np.maximum(y1[i], y1[rest])
        xx2 = np.minimum(x2[i], x2[rest])
        yy2 = np.minimum(y2[i], y2[rest])
        w = np.maximum(0.0, xx2 - xx1 + 1)
        h = np.maximum(0.0, yy2 - yy1 + 1)
        inter = w * h
        if mode == "min":
            ovr = inter / np.minimum(areas[i], areas[rest])
        else:
            ovr = inter / (areas[i] + areas[rest] - inter)
        order = rest[ovr <= thresh]
    return np.asarray(keep, dtype=np.intp)


def grouped_nms(
    boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray, thresh: float, mode: str = "union"
) -> np.ndarray:
    """:func:`nms` within each group id (frame, or frame x pyramid level).

    Returns kept indices ordered by group, then by decreasing score.
    """
    if len(boxes) == 0:
        return np.empty(0, dtype=np.intp)
    order = np.argsort(groups, kind="stable")
    g = groups[order]
    cuts = np.flatnonzero(np.diff(g)) + 1
    out = []
    for idx in np.split(order, cuts):
        if len(idx) == 1:
            out.append(idx)
        else:
            out.append(idx[nms(boxes[idx], scores[idx], thresh, mode)])
    return np.concatenate(out)


# --------------------------------------------------------------------------- SCRFD


@lru_cache(maxsize=32)
def anchor_centers(height: int, width: int, stride: int, num_anchors: int) -> np.ndarray:
    """(height*width*num_anchors, 2) float32 x, y centres in input pixels, row-major
    over (y, x, anchor), exactly as insightface's SCRFD builds them."""
    centers = np.stack(np.mgrid[:height, :width][::-1], axis=-1).astype(np.float32)
    centers = (centers * stride).reshape((-1, 2))
    if num_anchors > 1:
        centers = np.stack([centers] * num_anchors, axis=1).reshape((-1, 2))
    centers.setflags(write=False)
    return centers


def scrfd_letterbox(img: np.ndarray, size: tuple[int, int] = (640, 640)):
    """Keep-aspect resize into a zero canvas at the top-left (insightface's rule).

    ``size`` is (width, height). Returns (canvas uint8, det_scale) with
    ``det_scale = new_height / img_height``.
    """
    import cv2

    im_ratio = float(img.shape[0]) / img.shape[1]
    model_ratio = float(size[1]) / size[0]
    if im_ratio > model_ratio:
        new_height = size[1]
        new_width = int(new_height / im_ratio)
    else:
        new_width = size[0]
        new_height = int(new_width * im_ratio)
    det_scale = float(new_height) / img.shape[0]
    canvas = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    canvas[:new_height, :new_width] = cv2.resize(img, (new_width, new_height))
    return canvas, det_scale


def scrfd_decode(
    outs: list[np.ndarray],
    input_hw: tuple[int, int],
    det_scale: float,
    thresh: float = 0.5,
    nms_thresh: float = 0.4,
    strides: tuple[int, ...] = (8, 16, 32),
    num_anchors: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode SCRFD's outputs (scores per stride, then boxes, then keypoints).

    Returns ``det`` (n, 5) float32 x1 y1 x2 y2 score and ``kps`` (n, 5, 2) float32,
    in the pixels of the image given to :func:`scrfd_letterbox`, best first, after NMS.
    Outputs with a leading batch axis (batch-1 exports) are accepted.
    """
    fmc = len(strides)
    outs = [o[0] if o.ndim == 3 else o for o in outs]
    scores_l, boxes_l, kps_l = [], [], []
    for idx, stride in enumerate(strides):
        scores = outs[idx]
        bbox_preds = outs[idx + fmc] * stride
        kps_preds = outs[idx + 2 * fmc] * stride
        centers = anchor_centers(input_hw[0] // stride, input_hw[1] // stride, stride, num_anchors)
        pos = np.where(scores >= thresh)[0]
        c = centers[pos]
        d = bbox_preds[pos]
        boxes_l.append(np.stack([c[:, 0] - d[:, 0], c[:, 1] - d[:, 1],
                                 c[:, 0] + d[:, 2], c[:, 1] + d[:, 3]], axis=-1))
        k = kps_preds[pos]
        kx = c[:, 0:1] + k[:, 0::2]
        ky = c[:, 1:2] + k[:, 1::2]
        kps_l.append(np.stack([kx, ky], axis=-1))
        scores_l.append(scores[pos])
    scores = np.vstack(scores_l)
    if scores.size == 0:
        return np.empty((0, 5), np.float32), np.empty((0, 5, 2), np.float32)
    order = np.argsort(-scores.ravel(), kind="stable")
    boxes = np.vstack(boxes_l) / det_scale
    kps = np.vstack(kps_l) / det_scale
    det = np.hstack((boxes, scores)).astype(np.float32, copy=False)[order]
    kps = kps[order]
    keep = nms(det, det[:, 4], nms_thresh)
    return det[keep], kps[keep]


# --------------------------------------------------------------------------- 1k3d68


def landmark_transforms(boxes: np.ndarray, size: int = 192) -> np.ndarray:
    """(n, 2, 3) float64 crop transforms for the 3D landmark model.

    Centre on the box, scale ``size / (1.5 * max(w, h))``, no rotation (insightface's
    ``Landmark.get``; the scale is computed in float32 like there).
    """
    b = np.asarray(boxes, dtype=np.float32)[:, :4]
    w = b[:, 2] - b[:, 0]
    h = b[:, 3] - b[:, 1]
    cx = (b[:, 2] + b[:, 0]) / 2
    cy = (b[:, 3] + b[:, 1]) / 2
    s = np.float32(size) / (np.maximum(w, h) * np.float32(1.5))
    m = np.zeros((len(b), 2, 3), dtype=np.float64)
    m[:, 0, 0] = s
    m[:, 1, 1] = s
    m[:, 0, 2] = -(cx * s).astype(np.float64) + size / 2
    m[:, 1, 2] = -(cy * s).astype(np.float64) + size / 2
    return m


def invert_affine(m: np.ndarray) -> np.ndarray:
    """Inverse of a stack of (n, 2, 3) affine transforms (like cv2.invertAffineTransform)."""
    a = m[:, :, :2]
    inv = np.linalg.inv(a)
    t = -np.einsum("nij,nj->ni", inv, m[:, :, 2])
    return np.concatenate([inv, t[:, :, None]], axis=2)


def landmark_decode(pred: np.ndarray, m: np.ndarray, size: int = 192, num: int = 68) -> np.ndarray:
    """1k3d68 output (n, 3309) -> (n, 68, 3) float32 points in image pixels.

    Keeps the last ``num`` points; x, y = (v + 1) * size/2, z = v * size/2, then maps
    x, y back through the inverse crop transform and scales z by its scale.
    """
    pts = pred.reshape(len(pred), -1, 3)[:, -num:, :].astype(np.float32, copy=True)
    half = size // 2
    pts[:, :, 0:2] += 1
    pts[:, :, 0:2] *= half
    pts[:, :, 2] *= half
    im = invert_affine(m)
    out = np.empty_like(pts)
    out[:, :, 0:2] = np.einsum("nij,nkj->nki", im[:, :, :2], pts[:, :, 0:2]) + im[:, None, :, 2]
    zscale = np.sqrt(im[:, 0, 0] ** 2 + im[:, 0, 1] ** 2)
    out[:, :, 2] = pts[:, :, 2] * zscale[:, None]
    return out


@lru_cache(maxsize=1)
def mean_shape_68() -> np.ndarray:
    """insightface's 68-point mean 3D face, (68, 3) float32 (see engine/data/NOTICE)."""
    with resources.files("facecut.data").joinpath("meanshape_68.npy").open("rb") as f:
        arr = np.load(f)
    arr.setflags(write=False)
    return arr


@lru_cache(maxsize=4)
def _affine_pinv(n_key: int) -> np.ndarray:
    shape = mean_shape_68() if n_key == 68 else five_point_template()
    xh = np.hstack((shape, np.ones([shape.shape[0], 1])))
    return np.linalg.pinv(xh)  # (4, n): lstsq solution = pinv @ Y for full-rank X


def matrix_to_angles(r: np.ndarray) -> np.ndarray:
    """(n, 3, 3) rotations -> (n, 3) degrees (pitch, yaw, roll), insightface's
    ``matrix2angle`` (ZYX Euler decomposition) vectorised."""
    sy = np.sqrt(r[:, 0, 0] ** 2 + r[:, 1, 0] ** 2)
    singular = sy < 1e-6
    x = np.where(singular, np.arctan2(-r[:, 1, 2], r[:, 1, 1]), np.arctan2(r[:, 2, 1], r[:, 2, 2]))
    y = np.arctan2(-r[:, 2, 0], sy)
    z = np.where(singular, 0.0, np.arctan2(r[:, 1, 0], r[:, 0, 0]))
    return np.degrees(np.stack([x, y, z], axis=1))


def angles_to_matrix(pitch, yaw, roll) -> np.ndarray:
    """Inverse of :func:`matrix_to_angles`: ``Rz(roll) @ Ry(yaw) @ Rx(pitch)``, degrees."""
    x, y, z = (np.radians(np.asarray(v, dtype=np.float64)) for v in (pitch, yaw, roll))
    cx, sx, cy, sy, cz, sz = np.cos(x), np.sin(x), np.cos(y), np.sin(y), np.cos(z), np.sin(z)
    r = np.empty(np.shape(x) + (3, 3))
    r[..., 0, 0] = cz * cy
    r[..., 0, 1] = cz * sy * sx - sz * cx
    r[..., 0, 2] = cz * sy * cx + sz * sx
    r[..., 1, 0] = sz * cy
    r[..., 1, 1] = sz * sy * sx + cz * cx
    r[..., 1, 2] = sz * sy * cx - cz * sx
    r[..., 2, 0] = -sy
    r[..., 2, 1] = cy * sx
    r[..., 2, 2] = cy * cx
    return r


def _rows_to_angles(p: np.ndarray) -> np.ndarray:
    """Affine rows (n, 2, 3) -> angles as insightface's P2sRt + matrix2angle."""
    r1 = p[:, 0, :] / np.linalg.norm(p[:, 0, :], axis=1, keepdims=True)
    r2 = p[:, 1, :] / np.linalg.norm(p[:, 1, :], axis=1, keepdims=True)
    r3 = np.cross(r1, r2)
    return matrix_to_angles(np.stack([r1, r2, r3], axis=1))


def pose_from_landmarks68(pts: np.ndarray) -> np.ndarray:
    """(n, 68, 3) image-space 3D landmarks -> (n, 3) degrees pitch, yaw, roll.

    Least-squares affine fit of the mean shape onto the points (3 x 4 matrix P),
    normalised first two rows -> rotation -> Euler angles (insightface's
    ``estimate_affine_matrix_3d23d``, ``P2sRt``, ``matrix2angle``). Only the x, y
    rows matter: the columns of a least-squares fit are independent.
    """
    if len(pts) == 0:
        return np.empty((0, 3))
    p = np.einsum("ij,njk->nki", _affine_pinv(68), pts.astype(np.float64))  # (n, 3, 4)
    return _rows_to_angles(p[:, :2, :3])


# --------------------------------------------------------------------------- 5-point pose


@lru_cache(maxsize=1)
def five_point_template() -> np.ndarray:
    """A frontal face's 5 points (image-left eye, image-right eye, nose tip, mouth
    corners) in 3D, (5, 3) float64, centred, in mean-shape units.

    x, y: the ArcFace alignment template (:data:`ARCFACE_DST`), i.e. where detectors
    such as MTCNN and SCRFD put these points on an upright frontal face (nose tip at
    ~50 % of the eye-mouth height). Not the 68-point mean shape's own x, y: its nose
    tip sits at 31 % of that height, which read detector landmarks as ~45 degrees of
    pitch. z: depths of the same points on the mean shape (eye contours' mean, nose
    tip 30, mouth corners 48 and 54), which is what makes yaw observable.
    """
    m = mean_shape_68().astype(np.float64)
    pts3 = np.stack([m[36:42].mean(0), m[42:48].mean(0), m[30], m[48], m[54]])
    dst = ARCFACE_DST.astype(np.float64)
    unit = np.linalg.norm(pts3[1, :2] - pts3[0, :2]) / np.linalg.norm(dst[1] - dst[0])
    out = np.column_stack([dst * unit, pts3[:, 2]])
    return out - out.mean(0)


# Residual weights (x, y) per point: the mouth corners' heights move with expression
# (a smile lifts them towards the nose and would read as pitch), so they count little.
FIVE_POINT_WEIGHTS = np.array([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 0.1], [1.0, 0.1]])


def _residual5(params: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """Weighted residuals (n, 10) of the rigid fit. params (n, 4): pitch, yaw, roll
    (degrees), log-scale; the translation is solved in closed form (weighted means)."""
    r = angles_to_matrix(params[:, 0], params[:, 1], params[:, 2])[:, :2, :]
    proj = np.exp(params[:, 3])[:, None, None] * np.einsum("nij,kj->nki", r, five_point_template())
    w = FIVE_POINT_WEIGHTS
    t = ((obs - proj) * w).sum(axis=1, keepdims=True) / w.sum(axis=0)
    return ((proj + t - obs) * np.sqrt(w)).reshape(len(obs), 10)


def pose_from_5points(kps: np.ndarray, iters: int = 12) -> np.ndarray:
    """(n, 5, 2) landmarks (image-left eye, image-right eye, nose, mouth left,
    mouth right) -> (n, 3) degrees pitch, yaw, roll, in 1k3d68's convention.

    Geometry: a rigid weak-perspective fit of a frontal 5-point face with depth
    (:func:`five_point_template`): find scale s, rotation R and translation t
    minimising ``sum w |s R[:2] X + t - x|^2`` (Levenberg-Marquardt, vectorised over
    faces, started from the insightface-style affine solution; the mouth corners'
    heights are down-weighted, :data:`FIVE_POINT_WEIGHTS`). One scale serves both
    image axes, so a face narrower than the template for its height reads as turned;
    the nose tip's offset from the eye/mouth midline gives the side and most of the
    magnitude. R is decomposed like insightface's ``matrix2angle``, so the signs are
    1k3d68's (see the module docstring): yaw > 0 towards the image's right.

    Limits: it assumes average proportions, so a naturally narrow or wide face or a
    long nose biases yaw by some degrees; near-frontal faces (|yaw| < ~5 degrees)
    have a noisy sign; pitch rests on the nose height between the eyes and is
    coarse (an expression, a camera above or below, and the template's definition
    of "frontal" all shift it; its zero may differ from 1k3d68's by a constant);
    weak perspective ignores close-up distortion; beyond ~60 degrees of yaw
    detectors put the hidden eye on the silhouette and the estimate saturates.
    Roll is reliable. Use yaw for ranking and gating, pitch only coarsely.
    """
    kps = np.asarray(kps, dtype=np.float64).reshape(-1, 5, 2)
    n = len(kps)
    if n == 0:
        return np.empty((0, 3))
    obs = kps - kps.mean(axis=1, keepdims=True)
    # Start: the affine solution (what insightface does with 68 points).
    tpl = five_point_template()
    p = np.einsum("ij,njk->nki", _affine_pinv(5), np.concatenate(
        [obs, np.zeros((n, 5, 1))], axis=2))[:, :2, :3]
    start = _rows_to_angles(p)
    spread = np.sqrt((obs ** 2).sum(axis=(1, 2)) / (tpl[:, :2] ** 2).sum())
    params = np.column_stack([start, np.log(np.maximum(spread, 1e-9))])
    params = np.nan_to_num(params)
    lam = np.full(n, 1e-3)
    res = _residual5(params, obs)
    cost = (res ** 2).sum(1)
    eps = np.array([1e-3, 1e-3, 1e-3, 1e-6])
    steps = np.concatenate([np.diag(eps), -np.diag(eps)])[:, None, :]  # (8, 1, 4): +d_j, then -d_j
    obs8 = np.broadcast_to(obs, (8, *obs.shape)).reshape(8 * n, 5, 2)
    for _ in range(iters):
        # The 8 central-difference evaluations in one call (row by row the same numbers).
        both = _residual5((params[None] + steps).reshape(8 * n, 4), obs8).reshape(8, n, -1)
        jac = np.ascontiguousarray(((both[:4] - both[4:]) / (2 * eps)[:, None, None]).transpose(1, 2, 0))
        jtj = np.einsum("nki,nkj->nij", jac, jac)
        jtr = np.einsum("nki,nk->ni", jac, res)
        diag = np.einsum("nii->ni", jtj)
        a = jtj + lam[:, None, None] * (np.eye(4) * (diag[:, None, :] + 1e-12))
        try:
            step = np.linalg.solve(a, -jtr[:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:
            break
        trial = params + np.nan_to_num(step)
        trial[:, :3] = np.clip(trial[:, :3], -179.0, 179.0)
        tres = _residual5(trial, obs)
        tcost = (tres ** 2).sum(1)
        better = tcost < cost
        params = np.where(better[:, None], trial, params)
        res = np.where(better[:, None], tres, res)
        cost = np.where(better, tcost, cost)
        lam = np.where(better, lam * 0.3, lam * 10.0)
    # Re-express through the rotation matrix so the Euler branch is insightface's.
    r = angles_to_matrix(params[:, 0], params[:, 1], params[:, 2])
    return matrix_to_angles(r)


# --------------------------------------------------------------------------- ArcFace

ARCFACE_DST = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
     [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transforms (rotation, uniform scale, translation)
    mapping each ``src[i]`` (n, k, 2) onto ``dst`` (k, 2): (n, 2, 3) float64.

    Umeyama (PAMI 1991) as scikit-image's ``SimilarityTransform.estimate`` does it,
    reflection and rank-deficient cases included; degenerate inputs give NaN.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    n, k, dim = src.shape
    src_mean = src.mean(axis=1)
    dst_mean = dst.mean(axis=0)
    src_d = src - src_mean[:, None, :]
    dst_d = dst - dst_mean
    a = np.einsum("kd,nke->nde", dst_d, src_d) / k  # (n, 2, 2) = dst_d.T @ src_d / k
    d = np.ones((n, dim))
    d[np.linalg.det(a) < 0, dim - 1] = -1
    u, s, v = np.linalg.svd(a)
    tol = s.max(axis=1) * dim * np.finfo(float).eps
    rank = (s > tol[:, None]).sum(axis=1)
    # rank == dim - 1: the sign comes from det(U) det(V) instead of det(A).
    d_rank = np.ones((n, dim))
    d_rank[np.linalg.det(u) * np.linalg.det(v) <= 0, dim - 1] = -1
    d_rot = np.where((rank == dim - 1)[:, None], d_rank, d)
    rot = np.einsum("nij,nj,njk->nik", u, d_rot, v)
    scale = (s * d).sum(axis=1) / src_d.var(axis=1).sum(axis=1)
    t = dst_mean - scale[:, None] * np.einsum("nij,nj->ni", rot, src_mean)
    m = np.concatenate([rot * scale[:, None, None], t[:, :, None]], axis=2)
    m[rank == 0] = np.nan
    return m
