"""Inference process: batches of ring slots -> face model -> encoded Sample records.

Talks to the coordinator in the messages of facecut.protocol (Batch, Stop in;
ModelLoaded, ModelFailed, Want, Release, Results, Warn out).

The slots of a batch are copied out and released *before* the model runs, and
the next batch is asked for at the same moment, so decoders never wait on the
model and the next batch is already in the pipe when this one finishes.
Payloads are msgpack-encoded ``Sample`` records: the coordinator appends them
to the log as they are, never re-serialising.

Never imports av.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import msgspec
import numpy as np

from facecut import protocol
from facecut.config import AnalyzeConfig
from facecut.errors import FacecutError
from facecut.fsio import replace_with_retry, temp_name
from facecut.models.base import ModelSpec
from facecut.procs import cap_opencv_threads, recv_or_parent_death
from facecut.quality import sharpness
from facecut.records import Sample
from facecut.ring import FrameRing

log = logging.getLogger(__name__)


class InferSetup(msgspec.Struct, frozen=True, kw_only=True):
    """What an inference process is started with."""

    ring: tuple[str, int, int]  # FrameRing.spec
    model: ModelSpec
    thumb_side: int  # long side of the thumbnails it writes
    lower_priority: bool = False  # below the decoders' priority (more processes than cores)
    sharpness: bool = True  # measure each face's sharpness (facecut.quality)


def model_spec(cfg: AnalyzeConfig) -> ModelSpec:
    """The model the inference processes of a run with ``cfg`` load."""
    return ModelSpec(name=cfg.model, model_dir=cfg.model_dir or None, provider=cfg.provider,
                     threads=cfg.infer_threads, min_face=cfg.min_face, batch=cfg.batch, options=dict(cfg.model_options))


def infer_main(conn, setup: InferSetup) -> None:
    """Entry point of an inference process (see procs.start_worker)."""
    thumb_side, measure_sharpness = setup.thumb_side, setup.sharpness
    if setup.lower_priority:
        # More processes than cores (CPU inference): the decoders must never wait
        # for a core, inference soaks up what is left (measured: 14.1 s -> 13.7 s,
        # and no starved inference when one decoder shares 2 cores with 2 models).
        from facecut.procs import lower_priority as lower

        lower()
    try:
        model = setup.model.load()
    except FacecutError as ex:
        protocol.send(conn, protocol.ModelFailed(str(ex), ex.exit_code))
        return
    cap_opencv_threads(setup.model.threads)  # MTCNN's pyramid and crops: onnxruntime's count
    protocol.send(conn, protocol.ModelLoaded(model.name, model.provider, model.has_embeddings))
    ring = FrameRing.attach(setup.ring)
    enc = msgspec.msgpack.Encoder()
    thumb_errors = 0
    try:
        protocol.send(conn, protocol.Want())
        waited_since = time.perf_counter()
        while True:
            msg = recv_or_parent_death(conn, timeout=None)
            if isinstance(msg, protocol.Stop):
                break
            if not isinstance(msg, protocol.Batch):
                continue
            starved = time.perf_counter() - waited_since
            items = msg.items
            frames = [ring.read(it.slot, it.seq) for it in items]
            protocol.send(conn, protocol.Release([it.slot for it in items]))
            protocol.send(conn, protocol.Want())
            t = time.perf_counter()
            faces = detect_each(model, frames, [it.scale for it in items])
            busy = time.perf_counter() - t
            out = []
            for it, img, ff in zip(items, frames, faces):
                if isinstance(ff, Exception):
                    out.append(protocol.Result(it.job_id, it.n, None, 0, f"{type(ff).__name__}: {ff}"))
                    continue
                if measure_sharpness:
                    ff = [msgspec.structs.replace(f, sharp=sharpness(img, f.box, it.scale)) for f in ff]
                payload = enc.encode(Sample(k=it.k, pts=it.pts, time=it.time, scale=it.scale, faces=tuple(ff)))
                out.append(protocol.Result(it.job_id, it.n, payload, len(ff), ""))
                if it.thumb and ff:
                    try:
                        write_thumbnail(Path(os.fsdecode(it.thumb)), img, thumb_side)
                    except (OSError, ValueError) as ex:  # disk full, a file held open (Windows)...
                        thumb_errors += 1
                        if thumb_errors == 1 or thumb_errors % 100 == 0:
                            text = f"thumbnail not written ({thumb_errors} so far): {ex}"
                            protocol.send(conn, protocol.Warn(text))
            waited_since = time.perf_counter()
            protocol.send(conn, protocol.Results(out, busy, starved, time.process_time()))
    finally:
        model.close()
        ring.close()


def detect_each(model, frames: list, scales: list) -> list:
    """The model on a batch; when the batch raises, frame by frame, so one odd frame
    costs only itself: its entry is then the exception. When every frame of a
    batch of several fails, the model itself is broken (a lost device...): that
    is raised, the process ends and the coordinator's restart rules apply."""
    try:
        return model.detect(frames, scales)
    except Exception as batch_error:  # noqa: BLE001 - isolated below, frame by frame
        out = []
        for f, s in zip(frames, scales):
            try:
                out.append(model.detect([f], [s])[0])
            except Exception as ex:  # noqa: BLE001 - reported with the sample, the process goes on
                out.append(ex)
        if len(out) > 1 and all(isinstance(x, Exception) for x in out):
            raise batch_error
        return out


def write_thumbnail(path: Path, img: np.ndarray, side: int) -> None:
    """Small JPEG of an analysed frame (long side ``side``), written atomically."""
    import cv2

    h, w = img.shape[:2]
    s = side / max(h, w)
    if s < 1:
        img = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])
    if not ok:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        tmp.write_bytes(data.tobytes())
        replace_with_retry(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # never leave a half-written temp file behind
        raise
