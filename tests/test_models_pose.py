"""Head-pose sign convention and the 5-point (MTCNN) pose.

Convention (insightface's 1k3d68 pose, and ours): yaw > 0 when the face turns
towards the image's right (nose tip to larger x), pitch > 0 when it tilts up
(nose tip moves up), roll > 0 when it rotates clockwise on screen (the eye on
the image's right is lower). Checked here on synthetic rotations of the mean
face with insightface's own transform functions, then on real photos.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from _models_fixtures import insightface_image

from facecut.models import load_model
from facecut.models import postproc as pp

T = pytest.importorskip("insightface.utils.transform")


def rotated_face(pitch, yaw, roll, scale=100.0):
    """The 68-point mean face rotated and scaled, in image coordinates (y down)."""
    m = pp.mean_shape_68().astype(np.float64)
    return scale * m @ pp.angles_to_matrix(pitch, yaw, roll).T + [300.0, 200.0, 0.0]


def insightface_pose(pts):
    p = T.estimate_affine_matrix_3d23d(pp.mean_shape_68(), pts)
    _, r, _ = T.P2sRt(p)
    return np.array(T.matrix2angle(r))


def five_points(pts):
    return np.stack([pts[36:42].mean(0), pts[42:48].mean(0), pts[30], pts[48], pts[54]])[:, :2]


def test_pose68_equals_insightface():
    rng = np.random.default_rng(0)
    angles = rng.uniform([-40, -80, -40], [40, 80, 40], (25, 3))
    pts = np.stack([rotated_face(*a) + rng.normal(0, 0.5, (68, 3)) for a in angles])
    ours = pp.pose_from_landmarks68(pts.astype(np.float32))
    ref = np.stack([insightface_pose(p.astype(np.float32)) for p in pts])
    np.testing.assert_allclose(ours, ref, atol=1e-3)


@pytest.mark.parametrize("axis, moves", [
    ("yaw", "nose tip to the image's right"),
    ("pitch", "nose tip up"),
    ("roll", "image-right eye down"),
])
def test_sign_convention_physical_meaning(axis, moves):
    angles = {"pitch": 0.0, "yaw": 0.0, "roll": 0.0}
    angles[axis] = 20.0
    pts = rotated_face(angles["pitch"], angles["yaw"], angles["roll"])
    flat = rotated_face(0, 0, 0)
    if axis == "yaw":
        assert pts[30, 0] - pts[:, 0].mean() > flat[30, 0] - flat[:, 0].mean() + 5
    elif axis == "pitch":
        assert pts[30, 1] - pts[:, 1].mean() < flat[30, 1] - flat[:, 1].mean() - 5
    else:
        assert pts[42:48, 1].mean() > pts[36:42, 1].mean() + 5
    ref = dict(zip(("pitch", "yaw", "roll"), insightface_pose(pts.astype(np.float32))))
    ours5 = dict(zip(("pitch", "yaw", "roll"), pp.pose_from_5points(five_points(pts)[None])[0]))
    assert ref[axis] == pytest.approx(20.0, abs=1e-3)
    assert ours5[axis] > 5.0, f"{axis}: {moves} must be positive for MTCNN too"


def test_five_point_fit_recovers_template_rotations():
    rng = np.random.default_rng(1)
    angles = rng.uniform([-30, -60, -40], [30, 60, 40], (40, 3))
    tpl = pp.five_point_template()
    kps = np.stack([(70 * tpl @ pp.angles_to_matrix(*a).T)[:, :2] + [200, 150] for a in angles])
    np.testing.assert_allclose(pp.pose_from_5points(kps), angles, atol=0.5)


def test_five_point_pose_of_a_face_does_not_depend_on_its_batch():
    """The fit is vectorised over faces (and its difference quotients over a stacked
    batch): a face's angles are the same to the bit alone or among others."""
    rng = np.random.default_rng(7)
    angles = rng.uniform([-30, -60, -40], [30, 60, 40], (12, 3))
    tpl = pp.five_point_template()
    kps = np.stack([(rng.uniform(20, 200) * tpl @ pp.angles_to_matrix(*a).T)[:, :2] + rng.normal(0, 2, (5, 2))
                    for a in angles])
    together = pp.pose_from_5points(kps)
    alone = np.concatenate([pp.pose_from_5points(k[None]) for k in kps])
    assert np.array_equal(together, alone)
    assert np.array_equal(pp.pose_from_5points(kps[3:9]), together[3:9])


def test_five_point_yaw_tracks_insightface_on_the_mean_face():
    """The 68-point face's own 5 points: same yaw sign, similar size (pitch's zero differs:
    see five_point_template)."""
    for yaw in (-60, -40, -20, 20, 40, 60):
        for pitch in (-15, 0, 15):
            pts = rotated_face(pitch, yaw, 5.0)
            ref = insightface_pose(pts.astype(np.float32))
            ours = pp.pose_from_5points(five_points(pts)[None])[0]
            assert np.sign(ours[1]) == np.sign(ref[1])
            assert ours[1] == pytest.approx(ref[1], rel=0.35)
            if abs(yaw) <= 40:
                assert ours[2] == pytest.approx(ref[2], abs=8)


# --------------------------------------------------------------------------- real photos


@pytest.fixture(scope="module")
def mtcnn():
    return load_model("mtcnn", provider="cpu", min_face=40)


def nearest(faces, x, y):
    return min(faces, key=lambda f: abs((f.box[0] + f.box[2]) / 2 - x)
               + abs((f.box[1] + f.box[3]) / 2 - y))


def test_mirror_flips_yaw_and_roll(mtcnn):
    img = insightface_image("t1.jpg")
    w = img.shape[1]
    faces = mtcnn.detect([img], [1.0])[0]
    mirrored = mtcnn.detect([cv2.flip(img, 1)], [1.0])[0]
    turned = [f for f in faces if abs(f.yaw) >= 10]
    assert len(turned) >= 3
    for f in faces:
        cx, cy = (f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2
        g = nearest(mirrored, w - 1 - cx, cy)
        if abs(f.yaw) >= 10:
            assert np.sign(g.yaw) == -np.sign(f.yaw)
            assert abs(g.yaw) == pytest.approx(abs(f.yaw), abs=8)
        if abs(f.roll) >= 5:
            assert np.sign(g.roll) == -np.sign(f.roll)


def test_squeeze_toward_profile_increases_yaw(mtcnn):
    """Narrower for the same height reads as more turned.

    On the landmarks themselves (pure geometry) it holds face by face. On squeezed
    pixels the detector re-places its landmarks with a frontal prior, so one face
    can move the other way; the turned faces together must still read as more turned.
    """
    img = insightface_image("t1.jpg")
    h, w = img.shape[:2]
    faces = mtcnn.detect([img], [1.0])[0]
    kps = np.array([f.kps for f in faces]).reshape(-1, 5, 2)
    yaw = pp.pose_from_5points(kps)[:, 1]
    centre = kps.mean(axis=1, keepdims=True)
    narrow = kps.copy()
    narrow[:, :, 0] = centre[:, :, 0] + 0.7 * (kps[:, :, 0] - centre[:, :, 0])
    yaw_narrow = pp.pose_from_5points(narrow)[:, 1]
    turned = np.abs(yaw) >= 5
    assert turned.sum() >= 4
    assert (np.abs(yaw_narrow[turned]) > np.abs(yaw[turned]) + 2).all()
    assert (np.sign(yaw_narrow[turned]) == np.sign(yaw[turned])).all()

    squeezed = cv2.resize(img, (int(w * 0.6), h), interpolation=cv2.INTER_AREA)
    sq = mtcnn.detect([squeezed], [1.0])[0]
    before, after = [], []
    for f in faces:
        if abs(f.yaw) < 10:
            continue
        cx, cy = (f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2
        g = nearest(sq, cx * 0.6, cy)
        assert np.sign(g.yaw) == np.sign(f.yaw)
        before.append(abs(f.yaw))
        after.append(abs(g.yaw))
    assert len(before) >= 3
    assert np.mean(after) > np.mean(before) + 2
