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

import logging
import os
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def rewrite_enabled() -> bool:
    """Whether CPU sessions load rewritten graphs (``FACECUT_GRAPH_REWRITE=0``: no)."""
    return os.environ.get("FACECUT_GRAPH_REWRITE", "1") != "0"


def cpu_graph(path: str) -> bytes | None:
    """``path``'s model with PRelu rewritten (see the module doc), serialised; None
    when it has no PRelu with a constant slope (load the file itself). Not cached:
    the bytes of a large model (ArcFace: 166 MB) would stay in every process."""
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError:  # a dependency of facecut; without it the model runs as it is
        log.debug("onnx is not installed: %s loads without the PRelu rewrite", path)
        return None
    model = onnx.load(path)
    g = model.graph
    slopes = {i.name: i for i in g.initializer}
    names = {n for node in g.node for n in (*node.input, *node.output, node.name)} | set(slopes)
    names |= {v.name for v in (*g.input, *g.output)}

    def fresh(base: str) -> str:
        name, k = base, 0
        while name in names:
            k += 1
            name = f"{base}_{k}"
        names.add(name)
        return name

    nodes = []
    rewritten = 0
    for node in g.node:
        if node.op_type != "PRelu" or node.input[1] not in slopes:
            nodes.append(node)
            continue
        x, a = node.input
        y = node.output[0]
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
            helper.make_node("Add", [pos, scaled], [y], name=fresh(f"{p}/sum")),
        ]
        rewritten += 1
    if not rewritten:
        return None
    del g.node[:]
    g.node.extend(nodes)
    log.debug("%s: %d PRelu rewritten for the CPU provider", Path(path).name, rewritten)
    return model.SerializeToString()


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
