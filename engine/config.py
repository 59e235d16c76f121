"""Frozen, validated configuration of each stage (built once by the CLI or a caller).

``msgspec.convert`` checks types and bounds and reports expected vs got.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

from facecut.errors import ConfigError

Pos = Annotated[int, Meta(ge=1)]
NonNeg = Annotated[int, Meta(ge=0)]
PosF = Annotated[float, Meta(gt=0)]

# How the decoder makes the shot detector's small frames (facecut.shotdetect.ShotFrames):
# nearest-pixel samples, no low-pass filter, like PySceneDetect's own downscale
# (cv2.INTER_LINEAR in its SceneManager samples single pixels at integer factors).
# Part of ``detector_params``: logs made another way are not resumed with this one.
SHOT_FILTER = "nearest"
HWACCELS = ("none", "auto", "cuda", "d3d11va", "dxva2", "vaapi", "videotoolbox", "qsv")  # --hwaccel

# What ``--fast-decode`` lets the decoder skip (bench/README: "Decode options" has
# the measured speed and what each changes in the results):
#   ref-frames     (the default) pictures no other picture references and no
#                  sample needs are not decoded (most B-frames); every sample is
#                  the frame a full decode samples, to the bit, and a shot cut
#                  found next to skipped pictures is placed on its exact frame by
#                  decoding that stretch again (facecut.refframes.RefFramesOnly);
#   off            every frame decoded (same results, slower: for comparison);
#   deblock-noref  every frame, no deblocking on frames no other frame
#                  references (no drift; sampled B-frames differ slightly);
#   deblock-all    every frame, no deblocking at all (pictures drift within a GOP).
FAST_DECODE = ("ref-frames", "off", "deblock-noref", "deblock-all")
EXACT_DECODE = ("ref-frames", "off")  # levels whose samples and cuts are a full decode's


def comparable_params(params: str) -> str:
    """A log's ``model_params`` / ``detector_params`` as the current version writes
    them: an exact decode level is not recorded (logs made with ``ref-frames``
    before it became exact, 2026-12, name it; their samples lie within two frames
    of these, so such a folder goes on instead of being refused)."""
    try:
        p = json.loads(params)
    except ValueError:
        return params
    if not isinstance(p, dict) or p.get("fast_decode") not in EXACT_DECODE:
        return params
    del p["fast_decode"]
    return json.dumps(p, sort_keys=True)


class AnalyzeConfig(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Options of ``facecut analyze`` (and the analysis part of ``run``)."""

    # sampling and decode
    fps: Annotated[float, Meta(gt=0, le=120)] = 2.0
    max_side: Annotated[int, Meta(ge=0)] = 1280  # long-side cap of analysed frames (0 = none)
    decoders: Pos = 1
    decoder_threads: NonNeg = 0  # 0: split the CPU count between decoders
    error_budget: NonNeg = 50
    fast_decode: Literal[FAST_DECODE] = "ref-frames"
    hwaccel: Literal[HWACCELS] = "none"  # hardware decoder (facecut.media), software when it cannot
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
    infer_procs: NonNeg = 0  # 0: 1 on a GPU provider, one per core on CPU
    infer_threads: Pos = 1
    min_face: PosF = 80.0  # size gate (source px); the detector looks down to ~60 % of it
    # backend options passed to load_model as they are (``--model-opt KEY=VALUE``:
    # MTCNN's min_size_ratio, thresholds..., SCRFD's det_thresh, det_size...);
    # recorded in ``model_params``, so logs made with others are not continued
    model_options: dict[str, bool | int | float | str | list[float]] = {}
    # not an option: role -> "name size digest" of the files the model loads here
    # (facecut.models.base.model_files_identity), bound by the planner
    # (facecut.resume.plan_run) so that logs record them and a run with other weights
    # in the model folder does not continue them
    model_files: dict[str, str] = {}
    # report support
    thumb_every: Annotated[float, Meta(ge=0)] = 2.0  # s between thumbnails of face frames (0 = none)
    thumb_side: Annotated[int, Meta(ge=32)] = 320
    # quality score support: measure each face's sharpness in the inference processes
    # (facecut.quality; off only to measure what it costs: bench --stages quality)
    sharpness: bool = True
    retry_failed: bool = False

    def model_params(self) -> str:
        """Canonical JSON of everything that changes what the model writes to a log."""
        p = {"model": self.model, "min_face": self.min_face, "max_side": self.max_side}
        if self.model_options:  # absent when none: logs made before the option match
            p["model_options"] = dict(sorted(self.model_options.items()))
        if self.model_files:
            p["model_files"] = dict(sorted(self.model_files.items()))
        if self.fast_decode not in EXACT_DECODE:  # the model saw other pixels (absent otherwise: older logs match)
            p["fast_decode"] = self.fast_decode
        return json.dumps(p, sort_keys=True)

    def detector_params(self) -> str:
        p = {"threshold": self.threshold, "min_scene_len": self.min_scene_len, "shot_width": self.shot_width,
             "shot_filter": SHOT_FILTER}
        if self.fast_decode not in EXACT_DECODE:
            p["fast_decode"] = self.fast_decode
        return json.dumps(p, sort_keys=True)


def build(cls, **values):
    """Validate ``values`` (None means "default") into a frozen config."""
    clean = {k: v for k, v in values.items() if v is not None}
    try:
        return msgspec.convert(clean, cls)
    except msgspec.ValidationError as ex:
        raise ConfigError(f"invalid option: {ex}") from ex


# --------------------------------------------------------------------------- track + score
#
# CLI names: ``--`` + the field name with ``-`` for ``_``; every option also
# reads ``FACECUT_`` + the upper-case field name (``max_yaw`` -> ``--max-yaw``,
# ``FACECUT_MAX_YAW``), except where a field's comment names another.


class TrackConfig(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Options of ``facecut track`` (and the tracking inside ``score`` and ``run``).

    Faces are linked sample to sample within a shot, never across a cut: first by
    box overlap, then (for faces the overlap left over, e.g. after a short gap in
    detection or a fast move) by embedding similarity when both sides have
    embeddings, else by position and size continuity.

    ==================  ====================  ========================  =======
    field               CLI                   env                       default
    ==================  ====================  ========================  =======
    iou                 ``--track-iou``       ``FACECUT_TRACK_IOU``     0.3
    max_gap             ``--track-max-gap``   ``FACECUT_TRACK_MAX_GAP`` 1.0
    stitch_sim          ``--stitch-sim``      ``FACECUT_STITCH_SIM``    0.5
    stitch_shift        ``--stitch-shift``    ``FACECUT_STITCH_SHIFT``  1.0
    stitch_size         ``--stitch-size``     ``FACECUT_STITCH_SIZE``   1.5
    ==================  ====================  ========================  =======
    """

    iou: Annotated[float, Meta(gt=0, le=1)] = 0.3  # least IoU with a track's last box
    max_gap: Annotated[float, Meta(ge=0, le=60)] = 1.0  # s without detection a track survives
    stitch_sim: Annotated[float, Meta(ge=-1, le=1)] = 0.5  # least cosine similarity to stitch
    stitch_shift: Annotated[float, Meta(gt=0, le=10)] = 1.0  # most centre shift, face sizes
    stitch_size: Annotated[float, Meta(ge=1, le=10)] = 1.5  # most size ratio


class ScoreConfig(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Options of ``facecut score`` (and the scoring inside ``run``): quality gates,
    segment rules and the identity filter. Defaults match the old chain.

    ======================  =========================  =================================  =======
    field                   CLI                        env                                default
    ======================  =========================  =================================  =======
    max_yaw                 ``--max-yaw``              ``FACECUT_MAX_YAW``                75 (deg)
    max_pitch               ``--max-pitch``            ``FACECUT_MAX_PITCH``              45 (deg)
    min_face                ``--min-face``             ``FACECUT_MIN_FACE``               80 (px)
    min_det_score           ``--min-det-score``        ``FACECUT_MIN_DET_SCORE``          0.5
    track_gate              ``--track-gate``           ``FACECUT_TRACK_GATE``             0.70
    min_dur                 ``--min-dur``              ``FACECUT_MIN_DUR``                1 (s)
    max_dur                 ``--max-dur``              ``FACECUT_MAX_DUR``                120 (s)
    long                    ``--long split|reject``    ``FACECUT_LONG``                   split
    bridge_gap              ``--bridge-gap``           ``FACECUT_BRIDGE_GAP``             3 (s)
    merge_gap               ``--merge-gap``            ``FACECUT_MERGE_GAP``              2 (s)
    identity                ``--identity PATH``        ``FACECUT_IDENTITY``               none
    identity_threshold      ``--identity-threshold``   ``FACECUT_IDENTITY_THRESHOLD``     0.65
    people_threshold        ``--people-threshold``     ``FACECUT_PEOPLE_THRESHOLD``       0.6
    model_dir               ``--model-dir``            ``FACECUT_MODEL_DIR``              none
    provider                ``--provider``             ``FACECUT_PROVIDER``               auto
    track                   the ``TrackConfig`` options above
    ======================  =========================  =================================  =======

    ``min_face`` is the same option as ``analyze --min-face`` (in ``run`` one value
    serves both); raising it here needs no new analysis, lowering it below the
    analysis' value cannot bring back faces the detector was told to skip.
    ``model_dir``/``provider`` are only used by ``--identity`` (the reference faces
    are embedded with the model named in the logs).
    """

    max_yaw: Annotated[float, Meta(ge=0, le=180)] = 75.0  # degrees, |yaw| of a usable face
    max_pitch: Annotated[float, Meta(ge=0, le=180)] = 45.0  # degrees, |pitch|
    min_face: PosF = 80.0  # short side of the box, source pixels
    min_det_score: Annotated[float, Meta(ge=0, le=1)] = 0.5
    track_gate: Annotated[float, Meta(ge=0, le=1)] = 0.70  # share of a track's detections that must pass
    min_dur: Annotated[float, Meta(ge=0)] = 1.0  # s, shortest segment
    max_dur: PosF = 120.0  # s, longest clip
    # A segment longer than max_dur: "split" into near-equal parts <= max_dur (a long
    # talking head is the best material there is); "reject" drops it as too_long.
    long: Literal["split", "reject"] = "split"
    bridge_gap: Annotated[float, Meta(ge=0)] = 3.0  # s, failing stretches shorter than this are bridged
    merge_gap: Annotated[float, Meta(ge=0)] = 2.0  # s, segments of one shot closer than this are fused
    identity: str | None = None  # image, folder of images, roop-unleashed face set (.fsz), or person:K
    identity_threshold: Annotated[float, Meta(ge=0, le=2)] = 0.65  # most cosine distance
    people_threshold: Annotated[float, Meta(ge=0, le=2)] = 0.6  # most cosine distance within a people group
    model_dir: str | None = None
    provider: Literal["auto", "dml", "cuda", "cpu"] = "auto"
    track: TrackConfig = TrackConfig()

    def __post_init__(self) -> None:
        if self.min_dur > self.max_dur:
            raise ValueError(f"min_dur ({self.min_dur} s) must not exceed max_dur ({self.max_dur} s)")
