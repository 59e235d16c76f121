"""Model files told apart by what their graphs are, and the folders users keep them in.

Users already have insightface's models on disk, under several names:

* insightface: ``~/.insightface/models/<pack>/`` (``buffalo_l``: ``det_10g.onnx``,
  ``1k3d68.onnx``, ``w600k_r50.onnx``, plus 2d106det and genderage; ``buffalo_s``,
  ``buffalo_m``, ``antelopev2`` with other detector and recogniser sizes);
* roop-unleashed: ``<roop>/models/buffalo_l/`` (the same pack);
* FaceFusion: ``<facefusion>/.assets/models/`` (``scrfd_2.5g.onnx``,
  ``arcface_w600k_r50.onnx``, with many others: swappers, enhancers, masks).

A file's role comes from its graph's inputs and outputs, never from its name
alone (:func:`model_kind`):

* ``detector``: SCRFD with keypoints: one image input (N, 3, H, W) and nine
  outputs, scores / boxes / keypoints (last axis 1, 4, 10) for strides 8, 16, 32,
  with or without a batch axis (insightface's ``det_10g`` has none; exported
  files such as the ``scrfd`` package's have one and a fixed 640 x 640 input);
* ``landmark``: 1k3d68, a (N, 3, 192, 192) input and 3309 values per face;
* ``recognition``: ArcFace, a (N, 3, 112, 112) input and one embedding row.

:func:`find_models` lists a folder's files by role; :func:`usual_places` the
folders ``facecut doctor`` looks in.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import facecut.models.onnxwire as wire

ENV_DIR = "FACECUT_MODEL_DIR"
ENV_ROOP = "FACECUT_ROOP_DIR"  # a roop-unleashed install folder
ENV_FACEFUSION = "FACECUT_FACEFUSION_DIR"  # a FaceFusion install folder
ROLES = ("detector", "landmark", "recognition")
# Sub-folders where the known tools keep their models, searched below a given folder.
LAYOUTS = ("", "buffalo_l", "models/buffalo_l", "models", ".assets/models")
# The files of insightface's buffalo_l pack that facecut uses (facecut.models.buffalo).
BUFFALO_L_FILES = {"detection": "det_10g.onnx", "landmark": "1k3d68.onnx", "recognition": "w600k_r50.onnx"}
# Files whose names say what they are, tried first (the others are still classified).
PREFERRED = ("det_10g.onnx", "scrfd_10g_bnkps.onnx", "scrfd_2.5g.onnx", "scrfd_2.5g_bnkps.onnx",
             "scrfd.onnx", "det_2.5g.onnx", "det_500m.onnx",
             "1k3d68.onnx", "w600k_r50.onnx", "arcface_w600k_r50.onnx", "glintr100.onnx", "w600k_mbf.onnx")


@dataclass(frozen=True)
class ModelFile:
    path: Path
    role: str  # one of ROLES
    detail: str = ""  # e.g. "SCRFD, fixed 640x640, batch axis" or "512-d"


@dataclass
class Found:
    """A folder's usable files by role, best first."""

    folder: Path
    files: dict[str, list[ModelFile]] = field(default_factory=dict)

    def first(self, role: str) -> ModelFile | None:
        got = self.files.get(role)
        return got[0] if got else None


def _value_info(f, start: int, end: int) -> tuple[str, list]:
    """(name, dims) of a ValueInfoProto in [start, end): type = 2 -> TypeProto.tensor_type
    = 1 -> shape = 2 -> dim = 1, each dim_value = 1 (an int) or dim_param = 2 (a
    name, given as None when empty: an unknown size)."""
    name = (wire.strings(f, start, end, wire.VALUE_INFO_NAME) or [""])[0]

    def sub(lo: int, hi: int, number: int) -> list[wire.Field]:
        f.seek(lo)
        return [x for x in list(wire.fields(f, hi)) if x.number == number and x.wire == 2]

    dims: list = []
    for t in sub(start, end, 2):
        for tt in sub(t.value, t.end, 1):
            for shape in sub(tt.value, tt.end, 2):
                for d in sub(shape.value, shape.end, 1):
                    value = wire.ints(f, d.value, d.end, 1)
                    param = wire.strings(f, d.value, d.end, 2)
                    dims.append(value[0] if value else (param[0] if param and param[0] else None))
    return name, dims


def graph_io(path) -> tuple[list[tuple[str, list]], list[tuple[str, list]]]:
    """(inputs, outputs) of an ONNX file's graph as (name, dims) lists, read at
    the wire level (:mod:`facecut.models.onnxwire`) without its weights: a 500 MB
    model in milliseconds, and no ``onnx`` import. Inputs that are initializers
    (older exports list them) are left out."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        graph = next((x for x in wire.fields(f, size) if x.number == wire.MODEL_GRAPH and x.wire == 2), None)
        if graph is None:
            raise ValueError("no graph")
        f.seek(graph.value)
        inputs, outputs, names = [], [], set()
        for x in list(wire.fields(f, graph.end)):
            if x.wire != 2:
                continue
            if x.number in (wire.GRAPH_INPUT, wire.GRAPH_OUTPUT):
                (inputs if x.number == wire.GRAPH_INPUT else outputs).append(_value_info(f, x.value, x.end))
            elif x.number == wire.GRAPH_INITIALIZER:
                names.update(wire.strings(f, x.value, x.end, wire.TENSOR_NAME)[:1])
    return [i for i in inputs if i[0] not in names], outputs


_CACHE: dict[tuple, ModelFile | None] = {}


def model_kind(path: Path) -> ModelFile | None:
    """What ``path`` is (see the module doc), or None: not one of facecut's roles,
    or not a readable ONNX model."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        return None
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _CACHE:
        _CACHE[key] = _classify(path)
    return _CACHE[key]


def _classify(path: Path) -> ModelFile | None:
    if path.suffix.lower() != ".onnx":
        return None
    try:
        inputs, outputs = graph_io(path)
    except Exception:  # noqa: BLE001 - anything unreadable is simply not a model here
        return None
    if len(inputs) != 1:
        return None
    shape = inputs[0][1]
    if len(shape) != 4 or shape[1] != 3:
        return None
    outs = [dims for _, dims in outputs]
    h, w = shape[2], shape[3]
    if len(outs) == 9 and sorted(o[-1] for o in outs) == [1, 1, 1, 4, 4, 4, 10, 10, 10]:
        fixed = f"fixed {w}x{h}" if isinstance(h, int) and isinstance(w, int) else "any size"
        batched = "batch axis" if all(len(o) == 3 for o in outs) else "no batch axis"
        return ModelFile(path, "detector", f"SCRFD with keypoints, {fixed}, {batched}")
    if len(outs) == 1 and len(outs[0]) == 2:
        if (h, w) == (192, 192) and outs[0][1] == 3309:
            return ModelFile(path, "landmark", "68 3D landmarks (1k3d68)")
        if (h, w) == (112, 112) and isinstance(outs[0][1], int) and 64 <= outs[0][1] <= 2048:
            return ModelFile(path, "recognition", f"ArcFace, {outs[0][1]}-d")
    return None


def _rank(p: Path) -> tuple:
    return (PREFERRED.index(p.name) if p.name in PREFERRED else len(PREFERRED), p.name)


def find_models(folder: Path) -> Found:
    """``folder``'s usable model files by role, in ``folder`` itself or where
    insightface, roop-unleashed or FaceFusion keep them below it (``LAYOUTS``).
    The first layout that has a detector wins, so one tool's files never mix
    with another's."""
    folder = Path(folder).expanduser()
    for sub in LAYOUTS:
        d = folder / sub if sub else folder
        if not d.is_dir():
            continue
        found = Found(d)
        for p in sorted(d.glob("*.onnx"), key=_rank):
            m = model_kind(p)
            if m is not None:
                found.files.setdefault(m.role, []).append(m)
        if found.first("detector") is not None:
            return found
    return Found(folder)


def usual_places() -> list[Path]:
    """Folders ``facecut doctor`` looks in: ``$FACECUT_MODEL_DIR``, every pack in
    ``~/.insightface/models``, and the install folders named by
    ``$FACECUT_ROOP_DIR`` and ``$FACECUT_FACEFUSION_DIR``."""
    out: list[Path] = []
    for env in (ENV_DIR, ENV_ROOP, ENV_FACEFUSION):
        v = os.environ.get(env)
        if v:
            out.append(Path(v).expanduser())
    home = Path("~/.insightface/models").expanduser()
    if home.is_dir():
        out += sorted(p for p in home.iterdir() if p.is_dir())
    seen, uniq = set(), []
    for p in out:
        if p not in seen:
            seen.add(p)
            uniq.append(p)
    return uniq


def survey() -> list[dict]:
    """For ``facecut doctor``: each usual place with its files by role and the
    backend they make (``buffalo_l`` for a complete pack, else ``scrfd``)."""
    rows = []
    for place in usual_places():
        found = find_models(place)
        if not found.files:
            rows.append({"folder": str(place), "backend": None, "files": {}})
            continue
        names = {m.path.name for ms in found.files.values() for m in ms}
        backend = "buffalo_l" if set(BUFFALO_L_FILES.values()) <= names else ("scrfd" if found.first("detector") else None)
        rows.append({
            "folder": str(found.folder), "backend": backend,
            "files": {r: [f"{m.path.name} ({m.detail})" for m in found.files.get(r, [])] for r in ROLES},
        })
    return rows
