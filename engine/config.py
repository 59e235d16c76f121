"""Frozen, validated configuration of each stage (built once by the CLI or a caller).

``msgspec.convert`` checks types and bounds and reports expected vs got.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

from engine.errors import ConfigError

Pos = Annotated[int, Meta(ge=1)]
NonNeg = Annotated[int, Meta(ge=0)]
PosF = Annotated[float, Meta(gt=0)]


class AnalyzeConfig(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Options of ``facecut analyze`` (and the analysis part of ``run``)."""

    # sampling and decode
    fps: Annotated[float, Meta(gt=0, le=120)] = 2.0
    max_side: Annotated[int, Meta(ge=0)] = 1280  # long-side cap of analysed frames (0 = none)
    decoders: Pos = 1
    decoder_threads: NonNeg = 0  # 0: split the CPU count between decoders
    error_budget: NonNeg = 50
    # shot detection (PySceneDetect, fed by the decoder)
    detector: Literal["adaptive", "content", "none"] = "adaptive"
    threshold: float | None = None
    min_scene_len: Annotated[int, Meta(ge=6)] = 15  # frames
    shot_width: Annotated[int, Meta(ge=32, le=1920)] = 256
    # ring and batching
    ring_slots: NonNeg = 0  # 0: derived from decoders, infer procs and batch
    batch: Annotated[int, Meta(ge=1, le=256)] = 8
    batch_timeout: Annotated[float, Meta(ge=0, le=10)] = 0.05  # s to wait for a full batch
    # inference
    model: str = "mtcnn"
    model_dir: str | None = None
    provider: Literal["auto", "dml", "cuda", "cpu"] = "auto"
    infer_procs: NonNeg = 0  # 0: 1 on a GPU provider, CPU count - decoders on CPU
    infer_threads: Pos = 1
    min_face: PosF = 80.0  # size gate (source px); the detector looks down to ~60 % of it
    # report support
    thumb_every: Annotated[float, Meta(ge=0)] = 2.0  # s between thumbnails of face frames (0 = none)
    thumb_side: Annotated[int, Meta(ge=32)] = 320
    retry_failed: bool = False

    def model_params(self) -> str:
        """Canonical JSON of everything that changes what the model writes to a log."""
        return json.dumps(
            {"model": self.model, "min_face": self.min_face, "max_side": self.max_side}, sort_keys=True
        )

    def detector_params(self) -> str:
        return json.dumps(
            {"threshold": self.threshold, "min_scene_len": self.min_scene_len, "shot_width": self.shot_width},
            sort_keys=True,
        )


def build(cls, **values):
    """Validate ``values`` (None means "default") into a frozen config."""
    clean = {k: v for k, v in values.items() if v is not None}
    try:
        return msgspec.convert(clean, cls)
    except msgspec.ValidationError as ex:
        raise ConfigError(f"invalid option: {ex}") from ex
