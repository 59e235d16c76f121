"""insightface's ``buffalo_l`` pack, re-implemented without the insightface package.

Files (the folder insightface and roop-unleashed use, default
``~/.insightface/models/buffalo_l``; ``--model-dir`` / ``FACECUT_MODEL_DIR`` may name
that folder or its parent):

* ``det_10g.onnx``: SCRFD-10GF detector, batch fixed at 1, run frame by frame on a
  640 x 640 top-left letterbox, ``(v - 127.5) / 128``, RGB; strides 8/16/32 with 2
  anchors; score >= ``det_thresh`` (0.5); NMS 0.4. Same decode as insightface's
  ``SCRFD.detect`` (see :func:`facecut.models.postproc.scrfd_decode`).
* ``1k3d68.onnx``: 68 3D landmarks on a 192 x 192 crop (centre of the box, 1.5 x its
  long side), head pose from the mean-shape fit (pitch, yaw, roll in degrees, see
  :mod:`facecut.models.postproc` for the sign convention). Normalisation is inside
  the graph (mean 0, std 1).
* ``w600k_r50.onnx``: ArcFace, 512-d, on the 112 x 112 crop aligned on the 5
  detector keypoints (Umeyama similarity to the ArcFace template),
  ``(v - 127.5) / 127.5``, RGB; L2-normalised and stored as float16 bytes.

The landmark and recognition models run once per batch over every face of every
frame (chunked to ``max_rows``). Boxes are not clipped to the frame. The pipeline
is :class:`facecut.models.scrfd.Scrfd`'s; this backend insists on the pack's files
by name, as insightface and roop-unleashed do.
"""

from __future__ import annotations

import os
from pathlib import Path

from facecut.errors import ModelError

from .base import PROVIDERS, resolve_provider
from .folders import BUFFALO_L_FILES, ENV_DIR
from .scrfd import Scrfd

PACK = "buffalo_l"
FILES = BUFFALO_L_FILES


def default_model_dir() -> Path:
    """``$FACECUT_MODEL_DIR`` if set, else ``~/.insightface/models/buffalo_l``."""
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env).expanduser()
    return Path("~/.insightface/models").expanduser() / PACK


def find_dir(model_dir: Path | None) -> tuple[Path, list[str]]:
    """(folder, missing file names). Accepts the pack folder, its parent, or a
    roop-unleashed install (``models/buffalo_l`` below it)."""
    base = Path(model_dir).expanduser() if model_dir is not None else default_model_dir()
    for cand in (base, base / PACK, base / "models" / PACK):
        if all((cand / f).is_file() for f in FILES.values()):
            return cand, []
    missing = [f for f in FILES.values() if not (base / f).is_file()]
    return base, missing


def _missing_message(folder: Path, missing: list[str]) -> str:
    where = "does not exist" if not folder.is_dir() else f"lacks {', '.join(missing)}"
    return (
        f"buffalo_l model folder {folder} {where}. Expected the insightface buffalo_l "
        f"files {', '.join(FILES.values())} in that folder (or in a '{PACK}' folder "
        f"inside it). facecut does not download them: unpack insightface's buffalo_l "
        f"pack there, point --model-dir or ${ENV_DIR} at it, or use --model mtcnn "
        f"(or --model scrfd for a folder with other insightface files)."
    )


class BuffaloL(Scrfd):
    """buffalo_l backend: :class:`Scrfd` on the pack's three files. Options as
    :class:`Scrfd` (``det_size`` 640: the letterbox side; ``embed=False`` leaves
    ``emb`` None and skips the recogniser's session)."""

    name = PACK
    has_embeddings = True

    @classmethod
    def files_in(cls, model_dir: Path | None) -> tuple[Path, dict[str, Path]]:
        folder, missing = find_dir(model_dir)
        if missing:
            raise ModelError(_missing_message(folder, missing))
        return folder, {"detector": folder / FILES["detection"], "landmark": folder / FILES["landmark"],
                        "recognition": folder / FILES["recognition"]}

    @classmethod
    def describe(cls, model_dir: Path | None, provider: str) -> dict:
        folder, missing = find_dir(model_dir)
        return {
            "files": {r: str(folder / f) for r, f in FILES.items() if (folder / f).is_file()},
            "missing": missing,
            "model_dir": str(folder),
            "provider": PROVIDERS[resolve_provider(provider)],
            "has_embeddings": True,
            "error": _missing_message(folder, missing) if missing else None,
        }
