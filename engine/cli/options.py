"""The command line's options, each declared once (every one also reads
``FACECUT_<NAME>``, shown in ``--help``), and the configs built from them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click
import msgspec

log = logging.getLogger("facecut")



def opt(*decls: str, **kw):
    """``click.option`` whose env var is ``FACECUT_`` + the long name (``--filter-from``
    -> ``FACECUT_FILTER_FROM``), shown in ``--help``."""
    long = next(d for d in decls if d.startswith("--"))
    name = long[2:].split("/")[0].replace("-", "_").upper()
    kw.setdefault("envvar", f"FACECUT_{name}")
    kw.setdefault("show_envvar", True)
    kw.setdefault("show_default", "default" in kw and kw["default"] is not None)
    return click.option(*decls, **kw)


def options(*opts):
    """One decorator for several options, shown in ``--help`` in this order."""

    def deco(f):
        for o in reversed(opts):
            f = o(f)
        return f

    return deco


class IdentityArg(click.ParamType):
    """``--identity``: person:K as it is, else a path that must exist."""

    name = "PATH|person:K"

    def convert(self, value, param, ctx):
        if isinstance(value, str) and value.startswith("person:"):
            if not value[7:].isdigit():
                self.fail(f"{value!r}: expected person:N", param, ctx)
            return value
        return _path(exists=True).convert(value, param, ctx)


def _path(**kw):
    return click.Path(path_type=Path, **kw)

WORK_OPT = opt("-w", "--work", type=_path(file_okay=False), required=True, help="Work folder (logs, plan, report).")


# Options more than one command takes, declared once (help texts may say what they are for there).
MIN_FACE_OPT = opt("--min-face", type=float, default=80.0, help="Size gate: short side of a usable face, source pixels.")
MODEL_OPT = opt("--model-opt", "model_opt", multiple=True, metavar="KEY=VALUE",
                help="A backend option, repeatable (e.g. min_size_ratio=0.85 for mtcnn: faster, finds no face under "
                     "85 % of --min-face; det_thresh=0.6 for scrfd). README: Model options.")


def model_options(pairs) -> dict:
    """``--model-opt`` KEY=VALUE pairs -> {key: value}; a value reads as true/false,
    an integer or a number when it is one, a list of numbers when it is several
    separated by commas (thresholds=0.6,0.7,0.8), else as text."""
    out: dict = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise click.BadParameter(f"{pair!r}: expected KEY=VALUE, KEY a name such as min_size_ratio",
                                     param_hint="--model-opt")
        text = text.strip()
        if text.lower() in ("true", "false"):
            out[key] = text.lower() == "true"
        elif "," in text and all(_number(t) is not None for t in text.split(",")):
            out[key] = [float(t) for t in text.split(",")]
        else:
            n = _number(text)
            out[key] = text if n is None else n
    return out


def _number(text: str) -> int | float | None:
    for kind in (int, float):
        try:
            return kind(text.strip())
        except ValueError:
            pass
    return None


def provider_opt(help: str = "onnxruntime execution provider."):
    return opt("--provider", type=click.Choice(["auto", "dml", "cuda", "cpu"]), default="auto", help=help)


def model_dir_opt(help: str):
    return opt("--model-dir", type=_path(), default=None, help=help)


def scan_options(f):
    f = opt("--skip-pattern", default=None, help="Skip files whose relative path matches this regular expression.")(f)
    f = opt("--filter-from", default=None, metavar="NAME", help="Start at this file (relative path or name) in sorted order.")(f)
    f = opt(
        "--ext",
        "extensions",
        envvar="FACECUT_EXT",
        default=",".join(e[1:] for e in _default_exts()),
        help="Video file extensions, comma-separated.",
    )(f)
    return f


def _default_exts():
    from facecut.scan import DEFAULT_EXTENSIONS

    return DEFAULT_EXTENSIONS


def analyze_options(f):
    """Options of the analysis stage (shared by `analyze` and `run`)."""
    from facecut.config import FAST_DECODE, HWACCELS
    from facecut.profile import default_decoders

    opts = [
        opt("--fps", type=float, default=2.0, help="Frames sampled per second of video."),
        opt("--max-side", type=int, default=1280, help="Downscale analysed frames whose long side exceeds this (0 = never)."),
        opt("--decoders", type=int, default=None, help=f"Decoder processes [default: bench profile, else {default_decoders()}]."),
        opt("--infer-procs", type=int, default=None, help="Inference processes [default: bench profile, else 1 on GPU, one per core on CPU (below the decoders' priority)]."),
        opt("--infer-threads", type=int, default=None, help="onnxruntime threads per inference process [default: bench profile, else 1]."),
        opt("--batch", type=int, default=None, help="Frames per inference batch [default: bench profile, else 8]."),
        opt("--batch-timeout", type=float, default=0.05, help="Seconds to wait for a full batch."),
        opt("--ring-slots", type=int, default=None, help="Frame ring slots [default: from decoders x batch]."),
        opt("--model", type=click.Choice(["mtcnn", "buffalo_l", "scrfd"]), default="mtcnn",
            help="Face model backend: mtcnn (embedded), buffalo_l (insightface's pack), scrfd (any SCRFD file, "
                 "with 1k3d68 and ArcFace when its folder has them)."),
        model_dir_opt("Model folder: an insightface pack, a roop-unleashed install or its models folder, FaceFusion's "
                      ".assets/models [default: ~/.insightface/models/buffalo_l]."),
        provider_opt(),
        MIN_FACE_OPT,
        MODEL_OPT,
        opt("--detector", type=click.Choice(["adaptive", "content", "none"]), default="adaptive", help="Shot-cut detector."),
        opt("--threshold", type=float, default=None, help="Shot detector threshold [default: the detector's]."),
        opt("--min-scene-len", type=int, default=15, help="Shortest shot, frames."),
        opt("--fast-decode", type=click.Choice(list(FAST_DECODE)), default=None,
            help="What the decoder may skip. ref-frames: pictures nothing references and no sample needs "
                 "(same samples and cuts as decoding every frame, faster); off: nothing; deblock-noref / "
                 "deblock-all: deblocking of non-reference / all frames (faster, results differ slightly). "
                 "README: Decode options [default: bench profile, else ref-frames]."),
        opt("--hwaccel", type=click.Choice(list(HWACCELS)), default="none",
            help="Hardware video decoder to try (software when it cannot open or decode a stream; "
                 "`facecut doctor` lists the ones that work here)."),
        opt("--retry-failed", is_flag=True, help="Analyse videos that failed in an earlier run again."),
    ]
    return options(*opts)(f)


def _analyze_config(kw: dict, work: Path | None = None):
    """The analysis options: given ones, then this machine's bench profile, then
    the defaults. A ``--fast-decode`` level not given yields to the one the work
    folder's logs were made with (a profile saved later must not stop a resume)."""
    from facecut.config import EXACT_DECODE, AnalyzeConfig, build

    keys = [
        "fps", "max_side", "decoders", "infer_procs", "infer_threads", "batch", "batch_timeout", "ring_slots",
        "model", "model_dir", "provider", "min_face", "detector", "threshold", "min_scene_len", "retry_failed",
        "fast_decode", "hwaccel",
    ]
    vals = {k: kw.pop(k) for k in keys}
    vals["model_options"] = model_options(kw.pop("model_opt", ()))
    if vals["model_dir"] is not None:
        vals["model_dir"] = str(vals["model_dir"])
    # Counts not given on the command line (or env) come from this machine's bench profile.
    from facecut.profile import fill_from_profile

    chosen = vals["fast_decode"] is not None
    vals = fill_from_profile(vals, vals["provider"])
    if not chosen and work is not None:
        from facecut.resume import logged_fast_decode
        from facecut.workdir import WorkDir

        logged = logged_fast_decode(WorkDir(work))
        now = vals["fast_decode"] or AnalyzeConfig().fast_decode
        if logged is not None and logged != now and not {logged, now} <= set(EXACT_DECODE):
            log.info("--fast-decode %s, as the logs in %s were made", logged, work)
            vals["fast_decode"] = logged
    cfg = build(AnalyzeConfig, **vals)
    if cfg.model_options:
        from facecut.models.base import check_options

        check_options(cfg.model, cfg.model_options)
    return cfg


def progress_options(f):
    f = opt("--json-progress", is_flag=True, help="Write JSON lines of progress snapshots to stdout (for scripts).")(f)
    f = opt("--no-dashboard", is_flag=True, help="Plain progress lines instead of the live dashboard.")(f)
    return f


def gate_options(f):
    """Track + score options (shared by `track`, `score` and `run`)."""
    opts = [
        opt("--max-yaw", type=float, default=None, help="Largest |yaw| of a usable face, degrees [75]."),
        opt("--max-pitch", type=float, default=None, help="Largest |pitch|, degrees [45]."),
        opt("--min-det-score", type=float, default=None, help="Least detector score [0.5]."),
        opt("--track-gate", type=float, default=None, help="Share of a track's frames that must pass [0.70]."),
        opt("--min-dur", type=float, default=None, help="Shortest clip, seconds [1]."),
        opt("--max-dur", type=float, default=None, help="Longest clip, seconds [120]."),
        opt("--long", type=click.Choice(["split", "reject"]), default=None,
            help="A segment longer than --max-dur: split into near-equal parts, or reject it [split]."),
        opt("--bridge-gap", type=float, default=None, help="Bridge failing stretches shorter than this, seconds [3]."),
        opt("--merge-gap", type=float, default=None, help="Fuse segments of one shot closer than this, seconds [2]."),
        opt("--identity", type=IdentityArg(), default=None,
            help="Keep only this person: an image, a folder of images, a roop-unleashed .fsz face set, or "
                 "person:K (a people group of the report)."),
        opt("--identity-threshold", type=float, default=None, help="Largest cosine distance to the identity [0.65]."),
        opt("--people-threshold", type=float, default=None,
            help="Largest cosine distance within a people group (embedding models) [0.6]."),
    ]
    return options(*opts)(track_options(f))


def track_options(f):
    """The tracker's options (`track`, and through gate_options `score` and `run`)."""
    opts = [
        opt("--track-iou", type=float, default=None, help="Least IoU to link a face to a track [0.3]."),
        opt("--track-max-gap", type=float, default=None, help="Seconds without detection a track survives [1]."),
        opt("--stitch-sim", type=float, default=None, help="Least embedding cosine to stitch a gap [0.5]."),
        opt("--stitch-shift", type=float, default=None, help="Largest centre shift to stitch, in face sizes [1]."),
        opt("--stitch-size", type=float, default=None, help="Largest size ratio to stitch [1.5]."),
    ]
    return options(*opts)(f)


_TRACK_KEYS = {"track_iou": "iou", "track_max_gap": "max_gap", "stitch_sim": "stitch_sim",
               "stitch_shift": "stitch_shift", "stitch_size": "stitch_size"}

_SCORE_KEYS = ["max_yaw", "max_pitch", "min_det_score", "track_gate", "min_dur", "max_dur", "long", "bridge_gap",
               "merge_gap", "identity", "identity_threshold", "people_threshold"]


def _track_config(kw: dict):
    from facecut.config import TrackConfig, build

    return build(TrackConfig, **{_TRACK_KEYS[k]: kw.pop(k) for k in list(_TRACK_KEYS)})


def _score_config(kw: dict, *, min_face, model_dir, provider):
    from facecut.config import ScoreConfig, build

    track = _track_config(kw)
    vals = {k: kw.pop(k) for k in _SCORE_KEYS}
    if vals["identity"] is not None:
        vals["identity"] = str(vals["identity"])
    return build(ScoreConfig, **vals, min_face=min_face, model_dir=str(model_dir) if model_dir else None,
                 provider=provider, track=msgspec.to_builtins(track))


def cut_options(f):
    f = opt("--write-sidecar", is_flag=True, help="Write a JSON with its plan entry next to each clip.")(f)
    f = opt("--accurate", is_flag=True, help="Re-encode (libx264 + AAC) so clips start and end exactly on the planned frames.")(f)
    f = opt("--max-lead-in", type=click.FloatRange(min=0), default=2.0, show_default=True,
            help="Stream copy: a clip whose keyframe lies more than this many seconds before its start is re-encoded.")(f)
    return f
