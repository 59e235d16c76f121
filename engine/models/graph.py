"""Graph rewrites applied to a model before onnxruntime's CPU provider loads it.

PRelu (MTCNN's three nets, ArcFace's IResNet) is the one activation onnxruntime's
CPU provider cannot fuse into its blocked (NCHWc) convolutions: every PRelu
leaves the blocked layout, runs a slow broadcasting kernel and reorders back.
Profiled on 720p frames with one thread, PRelu plus those reorders were 35 % of
P-Net, 37 % of R-Net and 24 % of O-Net.

:func:`cpu_graph` replaces each ``PRelu(x, a)`` by operations that stay blocked::

    r = Relu(x)
    y = r + a * (x + (-1) * r)        # a * min(x, 0) + max(x, 0)

and is **bit-identical** to PRelu: ``x + (-1) * r`` is exactly ``min(x, 0)``, and of
``r`` and ``a * min(x, 0)`` one is always zero, so the only rounding is ``a * x`` for
negative ``x``, as in PRelu (even when onnxruntime fuses the adds into
multiply-adds). Measured, MTCNN on 720p, one thread: P-Net 13.9 -> 10.7 ms
(level 320 x 180), R-Net 4.7 -> 3.1 ms and O-Net 30.4 -> 22.2 ms (64 crops);
``tests/test_models_mtcnn.py`` checks the outputs are equal to the bit.

Only for the CPU provider: DirectML and CUDA run PRelu as one native kernel.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import numpy as np

import facecut.models.onnxwire as wire

log = logging.getLogger(__name__)


def rewrite_enabled() -> bool:
    """Whether CPU sessions load rewritten graphs (``FACECUT_GRAPH_REWRITE=0``: no)."""
    return os.environ.get("FACECUT_GRAPH_REWRITE", "1") != "0"


_DTYPES = {1: np.float32, 10: np.float16, 11: np.float64}  # TensorProto.DataType: FLOAT, FLOAT16, DOUBLE


def cpu_graph(path: str) -> bytes | None:
    """``path``'s model with PRelu rewritten (see the module doc), serialised; None
    when it has no PRelu with a constant slope (load the file itself). Not cached:
    the bytes of a large model (ArcFace: 166 MB) would stay in every process.

    Edited at the protobuf wire level (:mod:`facecut.models.onnxwire`): the
    ``onnx`` package costs an inference process ~0.9 s of CPU to import, more than
    the rewrite saves on a short video. Every field but the rewritten nodes and
    the added initializers is copied byte for byte; ``tests/test_models_mtcnn.py``
    checks the result against the same rewrite made with the ``onnx`` package."""
    data = Path(path).read_bytes()
    f = io.BytesIO(data)
    graph = next((x for x in wire.fields(f, len(data)) if x.number == wire.MODEL_GRAPH and x.wire == 2), None)
    if graph is None:
        return None
    f.seek(graph.value)
    parts = list(wire.fields(f, graph.end))
    names: set[str] = set()
    slopes: dict[str, tuple[list[int], int]] = {}  # initializer name -> (dims, data type)
    nodes = []  # (field, op_type, inputs, outputs, name, domain)
    for x in parts:
        if x.wire != 2:
            continue
        if x.number == wire.GRAPH_NODE:
            t = wire.texts(f, x.value, x.end, (wire.NODE_INPUT, wire.NODE_OUTPUT, wire.NODE_NAME,
                                               wire.NODE_OP_TYPE, wire.NODE_DOMAIN))
            inputs, outputs = t[wire.NODE_INPUT], t[wire.NODE_OUTPUT]
            name, op, domain = ((t[n] or [""])[0] for n in (wire.NODE_NAME, wire.NODE_OP_TYPE, wire.NODE_DOMAIN))
            nodes.append((x, op, inputs, outputs, name, domain))
            names.update(inputs, outputs, [name])
        elif x.number == wire.GRAPH_INITIALIZER:
            name = (wire.strings(f, x.value, x.end, wire.TENSOR_NAME) or [""])[0]
            dtype = wire.ints(f, x.value, x.end, wire.TENSOR_DATA_TYPE)
            slopes[name] = (wire.ints(f, x.value, x.end, wire.TENSOR_DIMS), dtype[0] if dtype else 0)
            names.add(name)
        elif x.number in (wire.GRAPH_INPUT, wire.GRAPH_OUTPUT):
            names.update(wire.strings(f, x.value, x.end, wire.VALUE_INFO_NAME)[:1])

    def fresh(base: str) -> str:
        name, k = base, 0
        while name in names:
            k += 1
            name = f"{base}_{k}"
        names.add(name)
        return name

    replaced: dict[int, bytes] = {}  # offset of a PRelu node -> the nodes replacing it
    added = []
    for x, op, inputs, outputs, name, domain in nodes:
        if op != "PRelu" or domain not in ("", "ai.onnx") or len(inputs) != 2 or inputs[1] not in slopes:
            continue
        dims, dtype = slopes[inputs[1]]
        if dtype not in _DTYPES:
            continue
        x_in, a = inputs
        y = outputs[0]
        p = name or fresh("prelu")
        minus1 = fresh(f"{p}/minus1")
        added.append(wire.message(wire.GRAPH_INITIALIZER, wire.tensor(
            minus1, dims, dtype, np.full(dims, -1, np.dtype(_DTYPES[dtype]).newbyteorder("<")).tobytes())))
        pos, neg_pos, neg, scaled = (fresh(f"{p}/{s}") for s in ("pos", "neg_pos", "neg", "scaled"))
        new = [
            wire.node("Relu", [x_in], [pos], fresh(f"{p}/relu")),
            wire.node("Mul", [pos, minus1], [neg_pos], fresh(f"{p}/negate")),
            wire.node("Add", [x_in, neg_pos], [neg], fresh(f"{p}/min0")),
            wire.node("Mul", [neg, a], [scaled], fresh(f"{p}/slope")),
            wire.node("Add", [pos, scaled], [y], fresh(f"{p}/sum")),
        ]
        replaced[x.start] = b"".join(wire.message(wire.GRAPH_NODE, n) for n in new)
    if not replaced:
        return None
    view = memoryview(data)
    body = b"".join([*(replaced.get(x.start, view[x.start:x.end]) for x in parts), *added])
    log.debug("%s: %d PRelu rewritten for the CPU provider", Path(path).name, len(replaced))
    return b"".join([view[:graph.start], wire.message(wire.MODEL_GRAPH, body), view[graph.end:]])


def batched_scrfd(path: str, batch: int) -> bytes:
    """An SCRFD file exported for one frame, rewritten to take ``batch`` frames at
    once, fixed (the fixed shapes DirectML wants; a short batch is padded by the
    caller). The leading 1 of the input, of 3-d ``Reshape`` targets ([1, -1, k]),
    of ``Resize`` sizes and of the outputs becomes ``batch``; 2-d targets
    ([-1, k], insightface's packs) stay, their rows then run frame after frame.
    Every frame's outputs are those of the batch-1 graph, to the bit
    (``tests/test_models_scrfd.py``)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(path)
    g = model.graph
    dim0 = g.input[0].type.tensor_type.shape.dim[0]
    dim0.Clear()
    dim0.dim_value = batch
    inits = {i.name: i for i in g.initializer}
    for node in g.node:
        at = {"Reshape": 1, "Resize": 3}.get(node.op_type)
        if at is None or len(node.input) <= at or node.input[at] not in inits:
            continue
        t = inits[node.input[at]]
        a = numpy_helper.to_array(t).copy()
        if a.ndim == 1 and a.size >= (3 if node.op_type == "Reshape" else 4) and a[0] == 1:
            a[0] = batch
            t.CopyFrom(numpy_helper.from_array(a, t.name))
    del g.value_info[:]  # shapes inferred again by onnxruntime
    for o in g.output:
        d = o.type.tensor_type.shape.dim
        if len(d) == 3:
            d[0].Clear()
            d[0].dim_value = batch
        elif len(d):
            d[0].Clear()
            d[0].dim_param = "rows"
    return model.SerializeToString()
