"""What a machine runs with: its provider, its process counts, its tuning profile.

The one home of per-machine settings. The profile is written by ``facecut bench
--sweep --save-profile``: ``facecut run`` / ``analyze`` (and each cluster worker,
:func:`machine_config`) take their decoder / inference-process / batch / thread
counts, and the ``--fast-decode`` level (only one the sweep found to leave cuts
and clips unchanged), from it when the options are not given. One profile per
execution provider, in the user's config folder (platformdirs).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from platformdirs import user_config_dir

log = logging.getLogger(__name__)

COUNTS = ("decoders", "infer_procs", "batch", "infer_threads", "ring_slots")  # the per-machine counts
KEYS = (*COUNTS, "fast_decode")  # what a profile holds


def machine_provider(provider: str) -> str:
    """The short provider name (``dml``/``cuda``/``cpu``) ``provider`` means on this
    machine; as given when onnxruntime cannot tell (the inference process then
    reports the problem properly)."""
    try:
        from facecut.models import resolve_provider

        return resolve_provider(provider)
    except Exception:  # noqa: BLE001 - see above
        return provider


def on_gpu(provider: str) -> bool:
    """Whether inference runs on a GPU provider (then one process, and the CPU is the decoders')."""
    return machine_provider(provider) in ("dml", "cuda")


def default_decoders() -> int:
    """Decoder processes without a profile: half the cores."""
    from facecut.procs import cpu_count

    return max(1, cpu_count() // 2)


def infer_processes(cfg) -> int:
    """Inference processes of a run (``cfg``: an AnalyzeConfig): as configured, else
    1 on a GPU (DirectML must not run sessions concurrently) and one single-thread
    model per core on CPU, below the decoders' priority (measured on 2 cores:
    1 decoder + 2 models 14.1 s, + 1 model 17.9 s)."""
    from facecut.procs import cpu_count

    if cfg.infer_procs:
        return cfg.infer_procs
    return 1 if on_gpu(cfg.provider) else cpu_count()


DECODER_CREDIT = 2  # free ring slots a decoder may hold


@dataclass(frozen=True)
class RunSizing:
    """The processes and ring of one analysis run on this machine."""

    gpu: bool  # inference on a GPU provider
    decoders: int
    decoder_threads: int
    infer_procs: int
    infer_below: bool  # inference processes run below the decoders' priority
    ring_slots: int


def size_run(cfg, videos: int) -> RunSizing:
    """How a run of ``videos`` videos with ``cfg`` (an AnalyzeConfig) is laid out here."""
    from facecut.procs import cpu_count

    gpu = on_gpu(cfg.provider)
    n_infer = infer_processes(cfg)
    n_dec = min(cfg.decoders, max(1, videos))
    # Decoder threads: the cores not taken by CPU inference, split between decoders.
    busy = n_dec + (0 if gpu else n_infer * cfg.infer_threads)
    return RunSizing(
        gpu=gpu, decoders=n_dec, decoder_threads=cfg.decoder_threads or max(1, cpu_count() // busy),
        infer_procs=n_infer, infer_below=not gpu and n_infer * cfg.infer_threads + n_dec > cpu_count(),
        ring_slots=cfg.ring_slots or (DECODER_CREDIT * n_dec + 2 * cfg.batch * n_infer + 4),
    )


def fill_from_profile(vals: dict, provider: str, pinned=None) -> dict:
    """``vals`` (AnalyzeConfig fields) with what is not set taken from this machine:
    its profile for ``provider``, else the defaults. Not set: None in ``vals`` or,
    when ``pinned`` is given, every count not named in it."""
    from facecut.config import AnalyzeConfig

    prof = load_profile(machine_provider(provider))
    defaults = AnalyzeConfig()
    out = dict(vals)
    for k in KEYS:
        unset = out.get(k) is None if pinned is None else (k in COUNTS and k not in pinned)
        if unset:
            if k in prof:
                out[k] = prof[k]
                log.info("%s=%s from the bench profile", k, prof[k])
            elif k == "decoders":
                out[k] = default_decoders()
            elif pinned is not None:
                out[k] = getattr(defaults, k)
    return out


def machine_config(cfg, pinned):
    """``cfg`` (an AnalyzeConfig) with the counts not in ``pinned`` taken from this
    machine: its bench profile for its provider, else the defaults a local
    ``facecut run`` uses here. ``pinned=None``: use ``cfg`` exactly as given."""
    if pinned is None:
        return cfg
    import msgspec

    from facecut.config import AnalyzeConfig, build

    vals = fill_from_profile(msgspec.structs.asdict(cfg), cfg.provider, pinned)
    return build(AnalyzeConfig, **vals)


def profile_path(provider: str) -> Path:
    return Path(user_config_dir("facecut", appauthor=False)) / f"profile-{provider}.json"


def load_profile(provider: str) -> dict:
    """The saved settings for ``provider`` (empty when none saved or unreadable)."""
    path = profile_path(provider)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as ex:
        log.warning("ignoring unreadable profile %s: %s", path, ex)
        return {}
    return {k: data["settings"][k] for k in KEYS if k in data.get("settings", {})}


def save_profile(provider: str, settings: dict, measured: dict) -> Path:
    from facecut.fsio import atomic_write_text

    path = profile_path(provider)
    data = {"provider": provider, "settings": {k: settings[k] for k in KEYS if k in settings}, "measured": measured}
    atomic_write_text(path, json.dumps(data, indent=1))
    return path
