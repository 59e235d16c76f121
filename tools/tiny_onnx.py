"""Tiny stand-ins for insightface's buffalo_l models, for tests without the real weights.

Each model has the exact input/output names, ranks and sizes of the real file, and
outputs that depend on the pixels (so crops, alignment and decode are exercised),
but only a few kilobytes of random weights:

* ``det_10g.onnx``: input ``input.1`` [1, 3, ?, ?]; nine outputs ``448 471 494`` (scores,
  [h*w*2, 1] for strides 8/16/32), ``451 474 497`` (box distances, [.., 4]),
  ``454 477 500`` (keypoint offsets, [.., 10]); declared at 640 x 640 like the real one.
  Per stride: average pool -> 1x1 conv -> NHWC -> rows of (y, x, anchor).
* ``1k3d68.onnx``: input ``data`` [None, 3, 192, 192], output ``fc1`` [None, 3309]
  (1103 x/y/z points in [-1, 1] crop units; the last 68 are a rotated mean face plus
  a pixel-dependent perturbation). Its first node is a BatchNormalization named
  ``bn_data``, as in the real (mxnet-converted) file, so insightface picks mean 0 / std 1.
* ``w600k_r50.onnx``: input ``input.1`` [None, 3, 112, 112], output ``683`` [None, 512];
  a strided conv + per-channel PRelu (the real IResNet's activation, which facecut
  rewrites for the CPU provider) + linear layer (sensitive to alignment), no Sub/Mul
  nodes up front, so insightface picks mean 127.5 / std 127.5 like for the real file.

``python -m facecut.tools.tiny_onnx OUT_DIR`` writes the three files (a fake buffalo_l folder).
Needs the ``onnx`` package.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

OPSET = 13
IR_VERSION = 8  # readable by every onnxruntime facecut supports (>= 1.17)
DET_OUTPUTS = ("448", "471", "494", "451", "474", "497", "454", "477", "500")
STRIDES = (8, 16, 32)


def _model(graph, onnx):
    model = onnx.helper.make_model(
        graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)], producer_name="facecut-tiny"
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def _init(name: str, arr: np.ndarray, onnx):
    return onnx.numpy_helper.from_array(np.asarray(arr), name)


def build_det_10g(path: Path, seed: int = 1) -> Path:
    """A tiny SCRFD with det_10g's signature (2 anchors, strides 8/16/32, keypoints)."""
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    nodes, inits, outputs = [], [], {}
    kinds = (("score", 1), ("bbox", 4), ("kps", 10))
    names = iter(DET_OUTPUTS)
    name_of = {}
    for kind, _ in kinds:
        for s in STRIDES:
            name_of[(kind, s)] = next(names)
    for s in STRIDES:
        pooled = f"pool{s}"
        nodes.append(helper.make_node("AveragePool", ["input.1"], [pooled],
                                      kernel_shape=[s, s], strides=[s, s], name=f"AvgPool_{s}"))
        for kind, k in kinds:
            w = rng.normal(0, 1.0, (2 * k, 3, 1, 1)).astype(np.float32)
            b = np.zeros(2 * k, np.float32)
            if kind == "score":
                # Faces in the photos are skin-coloured: favour red over blue, so only a
                # few percent of cells pass 0.5 and they cluster (NMS has work to do).
                w[:, :, 0, 0] = [[-2.5, 0.5, 2.8], [-2.2, 0.2, 2.6]]
                b[:] = [-1.2, -1.0]
            elif kind == "bbox":
                w *= 0.3
                b[:] = np.tile([1.6, 1.8, 1.6, 2.0], 2)
            else:
                w *= 0.5
                b[:] = np.tile([-0.6, -0.5, 0.6, -0.5, 0.0, 0.1, -0.5, 0.6, 0.5, 0.6], 2)
            inits += [_init(f"w_{kind}{s}", w, onnx), _init(f"b_{kind}{s}", b, onnx)]
            conv, nhwc = f"conv_{kind}{s}", f"nhwc_{kind}{s}"
            nodes.append(helper.make_node("Conv", [pooled, f"w_{kind}{s}", f"b_{kind}{s}"], [conv],
                                          name=f"Conv_{kind}{s}"))
            nodes.append(helper.make_node("Transpose", [conv], [nhwc], perm=[0, 2, 3, 1],
                                          name=f"Transpose_{kind}{s}"))
            shape = f"shape_{kind}{s}"
            inits.append(_init(shape, np.array([-1, k], np.int64), onnx))
            rows = f"rows_{kind}{s}"
            out = name_of[(kind, s)]
            if kind == "score":
                nodes.append(helper.make_node("Reshape", [nhwc, shape], [rows]))
                nodes.append(helper.make_node("Sigmoid", [rows], [out]))
            elif kind == "bbox":
                nodes.append(helper.make_node("Reshape", [nhwc, shape], [rows]))
                nodes.append(helper.make_node("Softplus", [rows], [out]))
            else:
                nodes.append(helper.make_node("Reshape", [nhwc, shape], [out]))
            cells = (640 // s) * (640 // s) * 2
            outputs[out] = helper.make_tensor_value_info(out, TensorProto.FLOAT, [cells, k])
    graph = helper.make_graph(
        nodes, "tiny_det_10g",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "?", "?"])],
        [outputs[n] for n in DET_OUTPUTS], inits,
    )
    onnx.save(_model(graph, onnx), str(path))
    return path


def _meanshape() -> np.ndarray:
    from importlib import resources

    with resources.files("facecut.data").joinpath("meanshape_68.npy").open("rb") as f:
        return np.load(f).astype(np.float64)


def build_1k3d68(path: Path, seed: int = 2, pose=(10.0, -25.0, 5.0)) -> Path:
    """A tiny 1k3d68: 3309 outputs whose last 68 points are a posed mean face."""
    import onnx
    from onnx import TensorProto, helper

    from facecut.models.postproc import angles_to_matrix

    rng = np.random.default_rng(seed)
    face = _meanshape() @ angles_to_matrix(*pose).T * 0.9  # ~ the crop's central 2/3
    pts = np.concatenate([rng.uniform(-0.5, 0.5, (1103 - 68, 3)), face]).astype(np.float32)
    bias = np.arctanh(np.clip(pts.reshape(-1), -0.95, 0.95))  # Tanh below gives pts back
    weight = rng.normal(0, 0.08, (3309, 3)).astype(np.float32)
    ones, zeros = np.ones(3, np.float32), np.zeros(3, np.float32)
    inits = [
        _init("bn_gamma", ones, onnx), _init("bn_beta", zeros, onnx),
        _init("bn_mean", zeros, onnx), _init("bn_var", ones - 1e-5, onnx),
        _init("fc_w", weight, onnx), _init("fc_b", bias, onnx),
    ]
    nodes = [
        helper.make_node("BatchNormalization", ["data", "bn_gamma", "bn_beta", "bn_mean", "bn_var"],
                         ["bn"], epsilon=1e-5, name="bn_data"),
        # Pixels are 0..255 here (normalisation is "inside the graph"): bring to ~[-1, 1].
        helper.make_node("GlobalAveragePool", ["bn"], ["gap"], name="pool"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["fc_raw"], transB=1,
                         alpha=1.0 / 255.0, name="fc"),
        helper.make_node("Tanh", ["fc_raw"], ["fc1"], name="tanh"),
    ]
    graph = helper.make_graph(
        nodes, "tiny_1k3d68",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["None", 3, 192, 192])],
        [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, ["None", 3309])], inits,
    )
    onnx.save(_model(graph, onnx), str(path))
    return path


def build_w600k_r50(path: Path, seed: int = 3) -> Path:
    """A tiny ArcFace: strided conv over the aligned crop, PRelu, linear layer to 512."""
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    inits = [
        _init("conv_w", rng.normal(0, 0.2, (4, 3, 8, 8)).astype(np.float32), onnx),
        _init("conv_b", np.zeros(4, np.float32), onnx),
        # Slopes of both signs and above 1, like the real file's (shape [C, 1, 1]).
        _init("prelu_a", np.array([0.25, -0.4, 1.3, 0.05], np.float32).reshape(4, 1, 1), onnx),
        _init("fc_w", rng.normal(0, 0.05, (512, 4 * 14 * 14)).astype(np.float32), onnx),
        _init("fc_b", rng.normal(0, 0.1, 512).astype(np.float32), onnx),
    ]
    nodes = [
        helper.make_node("Conv", ["input.1", "conv_w", "conv_b"], ["c"], strides=[8, 8],
                         name="Conv_0"),
        helper.make_node("PRelu", ["c", "prelu_a"], ["r"], name="PRelu_1"),
        helper.make_node("Flatten", ["r"], ["f"], name="Flatten_2"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["683"], transB=1, name="Gemm_3"),
    ]
    graph = helper.make_graph(
        nodes, "tiny_w600k_r50",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["None", 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, ["None", 512])], inits,
    )
    onnx.save(_model(graph, onnx), str(path))
    return path


def build_template_arcface(path: Path, d: int = 512) -> Path:
    """A small but real recognition model with ArcFace's interface ((N, 3, 112, 112)
    aligned crop, ``(v - 127.5) / 127.5``, RGB -> (N, d)): grey 16 x 16 thumbnail of
    the crop, mean removed, times a matrix with orthonormal columns. The cosine of
    two embeddings is then the correlation of the two aligned faces: a template
    matcher, the oldest face recogniser there is. Same-photo faces correlate
    > 0.95, different people < 0.3 on the test media."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(d, 256)))
    inits = [numpy_helper.from_array(np.full((1, 3, 1, 1), 1 / 3, np.float32), "grey"),
             numpy_helper.from_array(q.astype(np.float32), "proj"),
             numpy_helper.from_array(np.zeros(d, np.float32), "bias")]
    nodes = [helper.make_node("Conv", ["input.1", "grey"], ["g"]),
             helper.make_node("AveragePool", ["g"], ["thumb"], kernel_shape=[7, 7], strides=[7, 7]),
             helper.make_node("Flatten", ["thumb"], ["flat"]),
             helper.make_node("ReduceMean", ["flat"], ["mean"], axes=[1], keepdims=1),
             helper.make_node("Sub", ["flat", "mean"], ["centred"]),
             helper.make_node("Gemm", ["centred", "proj", "bias"], ["683"], transB=1)]
    graph = helper.make_graph(
        nodes, "template", [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["N", 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, ["N", d])], inits)
    model = _model(graph, onnx)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def build_buffalo_l(folder: Path) -> Path:
    """Write tiny det_10g.onnx, 1k3d68.onnx and w600k_r50.onnx into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    build_det_10g(folder / "det_10g.onnx")
    build_1k3d68(folder / "1k3d68.onnx")
    build_w600k_r50(folder / "w600k_r50.onnx")
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="folder to write the three .onnx files into")
    args = ap.parse_args()
    folder = build_buffalo_l(args.out)
    for f in sorted(folder.glob("*.onnx")):
        print(f"{f}  {f.stat().st_size} bytes")


if __name__ == "__main__":
    main()
