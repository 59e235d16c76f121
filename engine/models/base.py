"""The face-model interface, the backend registry, and the one place that builds
onnxruntime sessions.

Units: frames are uint8 ``H x W x 3`` **BGR** arrays (cv2 / PyAV ``bgr24``), already
in displayed orientation, possibly downscaled by the decoder. ``scale`` is
``frame_pixels / source_pixels`` (1.0 when not downscaled). Every coordinate a
model returns (box, landmarks, ``short``) is in *source* pixels: frame pixels / scale.

Providers: ``auto`` (DirectML, then CUDA, then CPU), ``dml``, ``cuda``, ``cpu``.
A session silently falls back to CPU when its provider cannot load, so
:func:`make_session` checks ``session.get_providers()[0]`` and raises
:class:`~facecut.errors.ProviderUnavailable` (exit 4) when the one asked for is not
the one in use.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import numpy as np

from facecut.errors import ConfigError, ModelError, ProviderUnavailable
from facecut.records import Face

from .graph import cpu_graph, rewrite_enabled

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- providers

PROVIDERS: dict[str, str] = {
    "dml": "DmlExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
AUTO_ORDER = ("dml", "cuda", "cpu")

# pip distributions that all install the same ``onnxruntime`` module.
ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml")

_INSTALL_HINT = {
    "dml": (
        "DirectML needs the Windows-only 'onnxruntime-directml' wheel (facecut's default on "
        "Windows): pip uninstall -y onnxruntime onnxruntime-gpu && "
        "pip install onnxruntime-directml"
    ),
    "cuda": (
        "CUDA needs 'onnxruntime-gpu' instead of the CPU build, plus the CUDA/cuDNN versions "
        "it was built for: pip uninstall -y onnxruntime onnxruntime-directml && "
        "pip install onnxruntime-gpu (or: pip install 'facecut[cuda]', then uninstall "
        "onnxruntime)"
    ),
    "cpu": "every onnxruntime flavour includes the CPU provider; reinstall onnxruntime",
}


def ort_flavours() -> list[str]:
    """Installed onnxruntime pip distributions with versions (more than one = broken)."""
    found = []
    for dist in ORT_DISTRIBUTIONS:
        try:
            found.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def _check_provider_name(provider: str) -> str:
    key = provider.lower()
    if key != "auto" and key not in PROVIDERS:
        raise ConfigError(
            f"unknown provider {provider!r}: expected one of auto, {', '.join(PROVIDERS)}"
        )
    return key


def resolve_provider(provider: str = "auto", available: Sequence[str] | None = None) -> str:
    """The short provider name (``dml``/``cuda``/``cpu``) a session would be asked for.

    Only looks at ``onnxruntime.get_available_providers()`` (cheap); whether the
    provider really loads is known after a session is built (:func:`make_session`).
    Raises :class:`ProviderUnavailable` for an explicit provider that is not listed.
    """
    key = _check_provider_name(provider)
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    if key == "auto":
        for cand in AUTO_ORDER:
            if PROVIDERS[cand] in available:
                return cand
        return "cpu"
    if PROVIDERS[key] not in available:
        raise ProviderUnavailable(_unavailable_message(key, list(available)))
    return key


def _unavailable_message(key: str, available: list[str], fell_back: bool = False) -> str:
    import onnxruntime as ort

    flavours = ort_flavours()
    what = (
        f"provider {key!r} ({PROVIDERS[key]}) is listed by onnxruntime but did not load "
        "(the session fell back to CPU; check the GPU driver / CUDA and cuDNN versions)"
        if fell_back
        else f"provider {key!r} ({PROVIDERS[key]}) is not available"
    )
    msg = (
        f"{what}. onnxruntime {ort.__version__} offers: {', '.join(available) or 'nothing'}; "
        f"installed: {', '.join(flavours) or 'no onnxruntime distribution found'}. "
        f"{_INSTALL_HINT[key]}."
    )
    if len(flavours) > 1:
        msg += (
            " Several onnxruntime flavours are installed and overwrite each other's files: "
            "uninstall all of them, then install exactly one."
        )
    if key != "cpu":
        msg += " Or run with --provider cpu."
    return msg


def _session_options(key: str, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3  # det_10g's declared output shapes trigger harmless warnings
    so.intra_op_num_threads = max(1, int(threads))
    so.inter_op_num_threads = 1
    # Spinning threads steal the decoder's core (measured 31 s vs 21 s for one job).
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if key == "dml":
        # DirectML requirements: no memory pattern, sequential execution (and one run
        # at a time per session: see ``Session.run``'s lock).
        so.enable_mem_pattern = False
    return so


class Session:
    """A thin wrapper over ``onnxruntime.InferenceSession``.

    ``provider`` is the onnxruntime provider actually in use (``get_providers()[0]``),
    ``key`` its short name; ``run`` serialises calls (DirectML must never run one
    session concurrently) and takes inputs by position.
    """

    def __init__(self, sess, path: Path, key: str):
        self.sess = sess
        self.path = path
        self.key = key
        self.provider = sess.get_providers()[0]
        self.inputs = sess.get_inputs()
        self.outputs = sess.get_outputs()
        self.input_names = [i.name for i in self.inputs]
        self.output_names = [o.name for o in self.outputs]
        self._lock = threading.Lock()

    def run(self, *arrays: np.ndarray) -> list[np.ndarray]:
        feeds = dict(zip(self.input_names, arrays, strict=True))
        with self._lock:
            return self.sess.run(self.output_names, feeds)


def make_session(path: str | os.PathLike, provider: str = "auto", threads: int = 1, *,
                 rewrite: bool | None = None, model_bytes: bytes | None = None) -> Session:
    """Build an onnxruntime session for ``path`` on ``provider`` with ``threads`` CPU threads.

    ``auto`` tries DirectML, then CUDA, then CPU, keeping the first that really loads.
    An explicit provider that is missing or silently falls back to CPU raises
    :class:`ProviderUnavailable`. A missing or unreadable file raises :class:`ModelError`.
    On the CPU provider the model is loaded with its PRelu rewritten into operations
    onnxruntime keeps in its blocked layout (bit-identical, see
    :mod:`facecut.models.graph`); ``rewrite=False`` (or ``FACECUT_GRAPH_REWRITE=0``
    when ``rewrite`` is None) loads the file as it is. ``model_bytes``: the model to
    load instead of the file's own graph (a rewrite of ``path``, e.g.
    :func:`facecut.models.graph.batched_scrfd`), loaded as it is.
    """
    import onnxruntime as ort

    key = _check_provider_name(provider)
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    available = ort.get_available_providers()
    candidates = [c for c in AUTO_ORDER if PROVIDERS[c] in available] if key == "auto" else [key]
    if key != "auto" and PROVIDERS[key] not in available:
        raise ProviderUnavailable(_unavailable_message(key, available))
    if not candidates:  # an onnxruntime without CPU provider does not exist; be safe anyway
        candidates = ["cpu"]
    if rewrite is None:
        rewrite = rewrite_enabled()
    last_used = None
    for cand in candidates:
        providers = [PROVIDERS[cand]]
        if cand != "cpu":
            providers.append(PROVIDERS["cpu"])  # for nodes the GPU provider does not cover
        try:
            source = model_bytes or (cpu_graph(str(path)) if cand == "cpu" and rewrite else None) or str(path)
            sess = ort.InferenceSession(
                source, sess_options=_session_options(cand, threads), providers=providers
            )
        except Exception as ex:  # onnxruntime raises its own exception types
            if key == "auto" and cand != "cpu":
                log.warning("%s failed for %s (%s); trying the next provider", cand, path, ex)
                continue
            raise ModelError(f"cannot load {path} with {PROVIDERS[cand]}: {ex}") from ex
        last_used = sess.get_providers()[0]
        if last_used == PROVIDERS[cand]:
            log.debug("session %s on %s, %d thread(s)", path.name, cand, threads)
            return Session(sess, path, cand)
        if key != "auto":
            raise ProviderUnavailable(_unavailable_message(cand, available, fell_back=True))
        log.warning("%s did not load for %s (got %s); trying the next", cand, path, last_used)
    raise ProviderUnavailable(  # auto and not even CPU stuck: a broken install
        f"no onnxruntime provider could run {path} (last used: {last_used}); "
        f"installed: {', '.join(ort_flavours())}"
    )


# --------------------------------------------------------------------------- interface


class FaceModel(ABC):
    """A face detector (plus pose, plus optional recognition) over batches of frames.

    Subclasses set the class constant ``name`` and are registered under it
    (see :func:`load_model`); ``has_embeddings`` tells whether ``Face.emb`` is filled.
    Instances are not thread-safe; build one per inference process, after spawn.
    """

    name: ClassVar[str] = ""
    has_embeddings: bool = False
    provider: str = ""  # onnxruntime provider actually in use, e.g. "CPUExecutionProvider"

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.name:
            _REGISTRY[cls.name] = cls

    @abstractmethod
    def detect(
        self, frames: Sequence[np.ndarray], scales: Sequence[float]
    ) -> list[list[Face]]:
        """Faces of each frame (same order), boxes/landmarks in source pixels."""

    def close(self) -> None:
        """Release the sessions. The model is unusable afterwards."""

    def __enter__(self) -> FaceModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @classmethod
    @abstractmethod
    def describe(cls, model_dir: Path | None, provider: str) -> dict:
        """What ``facecut doctor`` shows: files found/missing, provider, embeddings."""

    @classmethod
    def model_files(cls, model_dir: Path | None, options: dict) -> dict[str, Path]:
        """Role -> the file this backend would load from ``model_dir`` with ``options``
        (its ``load_model`` options; {} when it cannot tell: the load then fails and
        says why). Cheap: no session, no provider."""
        return {}


_REGISTRY: dict[str, type[FaceModel]] = {}
_BUILTIN = ("facecut.models.mtcnn", "facecut.models.scrfd", "facecut.models.buffalo")
_ORDER = ("mtcnn", "buffalo_l", "scrfd")  # the default, the production pack, any SCRFD folder


def _load_builtin() -> None:
    for mod in _BUILTIN:
        importlib.import_module(mod)


def backends() -> dict[str, type[FaceModel]]:
    """Registered backends by name (built-in ones first)."""
    _load_builtin()
    first = [n for n in _ORDER if n in _REGISTRY]
    return {n: _REGISTRY[n] for n in [*first, *(n for n in _REGISTRY if n not in first)]}


def check_options(name: str, opts: dict) -> None:
    """Raise ConfigError unless backend ``name`` takes every option in ``opts``
    (``--model-opt``; checked before any process starts: the message names the
    options it has). An unknown ``name`` is left to :func:`load_model`."""
    import inspect

    cls = backends().get(name) if opts else None
    if cls is None:
        return
    kw = inspect.Parameter.KEYWORD_ONLY
    common_names = [p.name for p in inspect.signature(load_model).parameters.values() if p.kind is kw]  # every backend's
    params = inspect.signature(cls.__init__).parameters
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())  # takes **opts
    own = [p for p in params if p not in common_names and params[p].kind is kw]
    common = [k for k in opts if k in common_names]
    if common:
        raise ConfigError(f"--model-opt {', '.join(common)}: set with its own option "
                          "(--model-dir, --provider, --infer-threads, --min-face, --batch)")
    bad = [] if open_ended else [k for k in opts if k not in own]
    if bad:
        raise ConfigError(f"model {name!r} has no option {', '.join(bad)} (its options: {', '.join(own) or 'none'})")


def model_files_identity(name: str, model_dir: Path | str | None, options: dict | None = None) -> dict[str, str]:
    """Role -> ``"file-name size digest"`` of the files backend ``name`` would load
    from ``model_dir``: what a log records, so a run with other weights in the folder
    does not continue it. The digest (BLAKE2b, 64 bits) covers the size and 1 MiB at
    the start, middle and end of the file: other weights change it, and it costs
    ~3 MiB of reading even for insightface's 166 MB recogniser."""
    import hashlib

    cls = backends().get(name)
    if cls is None:
        return {}
    out = {}
    for role, path in sorted(cls.model_files(Path(model_dir) if model_dir else None, options or {}).items()):
        try:
            size = path.stat().st_size
            h = hashlib.blake2b(str(size).encode(), digest_size=8)
            with open(path, "rb") as fh:
                for at in sorted({0, max(0, size // 2 - 2**19), max(0, size - 2**20)}):
                    fh.seek(at)
                    h.update(fh.read(2**20))
        except OSError:
            continue  # unreadable: the load fails and says why
        out[role] = f"{path.name} {size} {h.hexdigest()}"
    return out


def check_frames(frames: Sequence[np.ndarray], scales: Sequence[float]) -> None:
    """Validate a batch at the edge: say what was expected and what arrived."""
    if len(frames) != len(scales):
        raise ValueError(f"got {len(frames)} frames but {len(scales)} scales")
    for i, (f, s) in enumerate(zip(frames, scales, strict=True)):
        if f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3:
            raise ValueError(
                f"frame {i}: expected uint8 HxWx3 BGR, got {f.dtype} {tuple(f.shape)}"
            )
        if not (s > 0):
            raise ValueError(f"frame {i}: scale must be > 0, got {s}")


def load_model(
    name: str,
    *,
    model_dir: Path | None = None,
    provider: str = "auto",
    threads: int = 1,
    min_face: float = 80.0,
    batch: int | None = None,
    **opts: Any,
) -> FaceModel:
    """Build the backend registered as ``name``.

    ``min_face``: the scorer's size gate in source pixels; detectors that can
    (MTCNN) skip faces far below it. ``batch``: the number of frames the caller
    will usually pass per :meth:`FaceModel.detect` (a hint for fixed shapes).
    ``model_dir``: model folder for backends with downloaded weights
    (default ``$FACECUT_MODEL_DIR`` or the backend's own default).
    ``opts``: backend options (see each backend's docstring).
    """
    known = backends()
    cls = known.get(name)
    if cls is None:
        raise ConfigError(f"unknown model {name!r}: expected one of {', '.join(known)}")
    _check_provider_name(provider)
    if threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    if not min_face > 0:
        raise ConfigError(f"min_face must be > 0 source pixels, got {min_face}")
    if batch is not None and batch < 1:
        raise ConfigError(f"batch must be >= 1, got {batch}")
    try:
        return cls(
            model_dir=None if model_dir is None else Path(model_dir),
            provider=provider,
            threads=threads,
            min_face=float(min_face),
            batch=batch,
            **opts,
        )
    except TypeError as ex:
        if "unexpected keyword argument" not in str(ex):
            raise
        raise ConfigError(f"model {name!r} has no such option: {ex}") from ex


class ModelSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Which model to build and how: :func:`load_model`'s arguments as one record,
    the form they cross a process boundary in (an inference process, a bench
    worker). ``options``: the backend's own (``--model-opt``)."""

    name: str = "mtcnn"
    model_dir: str | None = None
    provider: str = "auto"
    threads: int = 1
    min_face: float = 80.0
    batch: int | None = None
    options: dict[str, Any] = {}

    def load(self) -> FaceModel:
        return load_model(self.name, model_dir=Path(self.model_dir) if self.model_dir else None,
                          provider=self.provider, threads=self.threads, min_face=self.min_face, batch=self.batch,
                          **self.options)


def describe_backends(model_dir: Path | None = None, provider: str = "auto") -> list[dict]:
    """For ``facecut doctor``: one dict per backend, cheap, never raises.

    Keys: ``name``, ``ok`` (files complete and provider usable), ``files``
    (role -> path found), ``missing`` (file names not found), ``model_dir``,
    ``provider`` (onnxruntime provider it would ask for, e.g. ``CUDAExecutionProvider``,
    or None when unusable), ``has_embeddings``, ``error``.
    """
    try:
        known = backends()
    except Exception as ex:  # a broken install must still be reportable
        return [{"name": "?", "ok": False, "error": f"cannot import the backends: {ex}"}]
    out = []
    for name, cls in known.items():
        try:
            info = cls.describe(None if model_dir is None else Path(model_dir), provider)
        except Exception as ex:
            info = {"ok": False, "error": f"{type(ex).__name__}: {ex}"}
        info.setdefault("files", {})
        info.setdefault("missing", [])
        info.setdefault("model_dir", None)
        info.setdefault("has_embeddings", cls.has_embeddings)
        info.setdefault("error", None)
        if "provider" not in info:
            try:
                info["provider"] = PROVIDERS[resolve_provider(provider)]
            except Exception as ex:
                info["provider"] = None
                info["ok"] = False
                info["error"] = info["error"] or str(ex)
        info.setdefault("ok", info["error"] is None and not info["missing"])
        out.append({"name": name, **info})
    return out


def faces_from_arrays(
    boxes: np.ndarray,
    kps: np.ndarray,
    scores: np.ndarray,
    angles: np.ndarray,
    scale: float,
    embs: Sequence[bytes | None] | None = None,
) -> list[Face]:
    """Build :class:`Face` records from frame-pixel arrays, mapping to source pixels.

    ``boxes`` (n, 4) x1 y1 x2 y2, ``kps`` (n, 5, 2), ``scores`` (n,),
    ``angles`` (n, 3) pitch, yaw, roll in degrees (as insightface orders them).
    """
    inv = 1.0 / float(scale)
    b = np.asarray(boxes, dtype=np.float64) * inv
    k = np.asarray(kps, dtype=np.float64).reshape(len(b), 10) * inv
    short = np.minimum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
    faces = []
    for i in range(len(b)):
        pitch, yaw, roll = (float(v) for v in angles[i])
        faces.append(
            Face(
                box=tuple(float(v) for v in b[i]),
                kps=tuple(float(v) for v in k[i]),
                score=float(scores[i]),
                yaw=yaw,
                pitch=pitch,
                roll=roll,
                short=float(short[i]),
                emb=None if embs is None else embs[i],
            )
        )
    return faces
