"""buffalo_l plumbing against insightface's own model_zoo classes, on tiny ONNX models
with the real files' signatures (tools/tiny_onnx.py); no real weights needed.

insightface 2.1's SCRFD, Landmark and ArcFaceONNX are driven directly on the tiny
files (SCRFD at an explicit 640 x 640, which is what buffalo_l users run; 2.1's own
default would also try 128 x 128). Every number must match: detections, keypoints,
68 landmarks, pose, embeddings; for one frame and for a batch of 8 mixed frames
with downscale factors.
"""

from __future__ import annotations

import os
import warnings

import cv2
import numpy as np
import pytest
from _models_fixtures import insightface_image, skimage_image

from facecut.errors import ModelError
from facecut.models import buffalo as B
from facecut.models import load_model
from facecut.records import embedding_from_bytes

insightface = pytest.importorskip("insightface")
pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from facecut.tools.tiny_onnx import build_buffalo_l

    return build_buffalo_l(tmp_path_factory.mktemp("buffalo_l"))


@pytest.fixture(scope="module")
def ours(tiny_dir):
    model = load_model("buffalo_l", model_dir=tiny_dir, provider="cpu")
    yield model
    model.close()


@pytest.fixture(scope="module")
def theirs(tiny_dir):
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX
    from insightface.model_zoo.landmark import Landmark
    from insightface.model_zoo.scrfd import SCRFD

    det = SCRFD(model_file=str(tiny_dir / "det_10g.onnx"))
    det.prepare(-1, input_size=(640, 640), det_thresh=0.5)
    lmk = Landmark(model_file=str(tiny_dir / "1k3d68.onnx"))
    rec = ArcFaceONNX(model_file=str(tiny_dir / "w600k_r50.onnx"))
    # The tiny files are built so insightface infers the real files' normalisation.
    assert (lmk.input_mean, lmk.input_std) == (0.0, 1.0)
    assert (rec.input_mean, rec.input_std) == (127.5, 127.5)
    assert lmk.require_pose and lmk.lmk_num == 68
    return det, lmk, rec


def reference(theirs, img):
    """insightface's pipeline on one frame: (det, kps, landmarks, pose, normed embedding)."""
    from insightface.app.common import Face

    det_m, lmk_m, rec_m = theirs
    det, kps = det_m.detect(img, input_size=(640, 640))
    lms, poses, embs = [], [], []
    for i in range(len(det)):
        face = Face(bbox=det[i, :4], kps=kps[i], det_score=det[i, 4])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # skimage 0.26 `estimate`
            lms.append(lmk_m.get(img, face))
            rec_m.get(img, face)
        poses.append(face.pose)
        embs.append(face.normed_embedding)
    return det, kps, np.array(lms).reshape(-1, 68, 3), np.array(poses).reshape(-1, 3), \
        np.array(embs).reshape(-1, 512)


def frames8():
    t1 = insightface_image("t1.jpg")
    astro = skimage_image("astronaut")
    frames = [
        t1,
        astro,
        skimage_image("coffee"),
        cv2.resize(t1, (640, 443), interpolation=cv2.INTER_AREA),  # downscaled: 0.5
        cv2.flip(astro, 1),
        t1[100:700, 200:1100].copy(),  # portrait-ish crop, letterboxed differently
        cv2.resize(astro, (256, 256), interpolation=cv2.INTER_AREA),  # 0.5
        np.ascontiguousarray(t1[:, ::-1]),
    ]
    scales = [1.0, 1.0, 1.0, 640 / 1280, 1.0, 1.0, 0.5, 1.0]
    return frames, scales


def assert_frame_matches(faces, ref, scale):
    det, kps, _, pose, emb = ref
    assert len(faces) == len(det)
    for f, d, k, p, e in zip(faces, det, kps, pose, emb):
        np.testing.assert_allclose(np.array(f.box) * scale, d[:4], rtol=0, atol=1e-3)
        np.testing.assert_allclose(f.score, d[4], atol=1e-6)
        np.testing.assert_allclose(np.array(f.kps).reshape(5, 2) * scale, k, atol=1e-3)
        np.testing.assert_allclose(f.short * scale, min(d[2] - d[0], d[3] - d[1]), atol=1e-3)
        np.testing.assert_allclose([f.pitch, f.yaw, f.roll], p, atol=1e-3)
        # float16 storage: ~1e-3 relative per component.
        np.testing.assert_allclose(embedding_from_bytes(f.emb), e, atol=2e-3)
        assert abs(np.linalg.norm(embedding_from_bytes(f.emb)) - 1) < 2e-3


def test_meanshape_file_equals_insightface():
    import pickle

    from _models_fixtures import meanshape_pkl_path

    from facecut.models.postproc import mean_shape_68

    with open(meanshape_pkl_path(), "rb") as fh:
        ref = pickle.load(fh)
    np.testing.assert_array_equal(mean_shape_68(), ref)


def test_batch_1_matches_insightface(ours, theirs):
    img = insightface_image("t1.jpg")
    faces = ours.detect([img], [1.0])[0]
    ref = reference(theirs, img)
    assert len(ref[0]) >= 5  # the tiny detector must give the decode/NMS some work
    assert_frame_matches(faces, ref, 1.0)


def test_batch_8_matches_insightface(ours, theirs):
    frames, scales = frames8()
    out = ours.detect(frames, scales)
    assert len(out) == 8
    total = 0
    for faces, frame, scale in zip(out, frames, scales):
        assert_frame_matches(faces, reference(theirs, frame), scale)
        total += len(faces)
    assert total >= 10


def test_decode_and_nms_match_insightface_parts(ours, theirs):
    """The pure functions, outside the model: same outputs give the same detections."""
    from facecut.models.postproc import scrfd_decode, scrfd_letterbox

    det_m = theirs[0]
    img = skimage_image("astronaut")
    canvas, scale = scrfd_letterbox(img, (640, 640))
    blob = cv2.dnn.blobFromImage(canvas, 1 / 128, (640, 640), (127.5,) * 3, swapRB=True)
    outs = ours.det.run(blob)
    det, kps = scrfd_decode(outs, (640, 640), scale, 0.3, 0.4)  # lower threshold: more boxes
    ref_det, ref_kps = det_m.detect(img, input_size=(640, 640), det_thresh=0.3)
    np.testing.assert_allclose(det, ref_det, atol=1e-4)
    np.testing.assert_allclose(kps, ref_kps, atol=1e-4)


def test_umeyama_matches_skimage():
    from skimage.transform import SimilarityTransform

    from facecut.models.postproc import ARCFACE_DST, umeyama

    rng = np.random.default_rng(0)
    src = ARCFACE_DST[None] * rng.uniform(0.5, 3, (20, 1, 1)) + rng.normal(0, 4, (20, 5, 2))
    src[3] = src[3, :, ::-1]  # a mirrored one: reflection handling
    ours = umeyama(src, ARCFACE_DST)
    for i in range(len(src)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            t = SimilarityTransform()
            t.estimate(src[i], ARCFACE_DST)
        np.testing.assert_allclose(ours[i], t.params[:2], atol=1e-5)  # float32 template


def test_no_faces_gives_empty_lists(ours):
    out = ours.detect([np.zeros((300, 400, 3), np.uint8)] * 2, [1.0, 1.0])
    assert out == [[], []]


def test_embed_false_skips_recognition(tiny_dir):
    m = load_model("buffalo_l", model_dir=tiny_dir, provider="cpu", embed=False)
    assert not m.has_embeddings
    faces = m.detect([insightface_image("t1.jpg")], [1.0])[0]
    assert faces and all(f.emb is None for f in faces)


# --------------------------------------------------------------------------- folders


def test_missing_folder_names_the_files(tmp_path):
    with pytest.raises(ModelError) as ei:
        load_model("buffalo_l", model_dir=tmp_path / "nope", provider="cpu")
    msg = str(ei.value)
    for name in ("det_10g.onnx", "1k3d68.onnx", "w600k_r50.onnx", "does not exist"):
        assert name in msg
    assert ei.value.exit_code == 4


def test_incomplete_folder_lists_what_is_missing(tmp_path, tiny_dir):
    (tmp_path / "det_10g.onnx").write_bytes((tiny_dir / "det_10g.onnx").read_bytes())
    with pytest.raises(ModelError, match=r"lacks 1k3d68\.onnx, w600k_r50\.onnx"):
        load_model("buffalo_l", model_dir=tmp_path, provider="cpu")


def test_parent_folder_and_env_var(tmp_path, tiny_dir, monkeypatch):
    pack = tmp_path / "models" / "buffalo_l"
    pack.mkdir(parents=True)
    for f in B.FILES.values():
        os.symlink(tiny_dir / f, pack / f)
    folder, missing = B.find_dir(tmp_path / "models")
    assert folder == pack and missing == []
    monkeypatch.setenv("FACECUT_MODEL_DIR", str(pack))
    assert B.default_model_dir() == pack
    m = load_model("buffalo_l", provider="cpu")  # found through the variable
    assert m.model_dir == pack
    monkeypatch.delenv("FACECUT_MODEL_DIR")
    assert B.default_model_dir().parts[-3:] == (".insightface", "models", "buffalo_l")
