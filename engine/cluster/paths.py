"""Paths as each machine sees them, and the check a worker runs before a batch is
submitted to it (same work folder, same input files, same facecut).
(See facecut.cluster for the design.)
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import socket
from pathlib import Path

from facecut import __version__
from facecut.config import AnalyzeConfig
from facecut.errors import ConfigError, FacecutError
from facecut.profile import COUNTS, machine_config
from facecut.records import os_name

log = logging.getLogger(__name__)

PATH_MAP_ENV = "FACECUT_PATH_MAP"
PROBE = "cluster-probe-{}.json"  # in WORK/logs, per run: proves a worker sees *this* work folder


class PathNotVisible(ConfigError):
    """A worker cannot see a path of the batch (raised on the worker)."""


def path_map(env: str | None = None) -> list[tuple[str, str]]:
    """``FACECUT_PATH_MAP`` of this machine: ``[(client_prefix, local_prefix), ...]``."""
    text = os.environ.get(PATH_MAP_ENV, "") if env is None else env
    pairs = []
    for item in filter(None, (s.strip() for s in text.split(";"))):
        src, sep, dst = item.partition("=")
        if not sep or not src or not dst:
            raise ConfigError(
                f"{PATH_MAP_ENV}: expected CLIENT_PREFIX=WORKER_PREFIX pairs separated by ';', got {item!r}"
            )
        pairs.append((src, dst))
    return pairs


def _norm(p: str) -> str:
    p = p.replace("\\", "/")
    return p.rstrip("/") or "/"


def local_path(path: str, mapping: list[tuple[str, str]] | None = None) -> Path:
    """``path`` as the client sees it, as this machine sees it (first matching prefix
    wins; Windows-looking prefixes compare case-insensitively)."""
    a = _norm(str(path))
    for src, dst in path_map() if mapping is None else mapping:
        b = _norm(src)
        win = ":" in b[:3] or b.startswith("//")
        ca, cb = (a.casefold(), b.casefold()) if win else (a, b)
        if ca == cb or ca.startswith(cb if cb.endswith("/") else cb + "/"):
            return Path(dst).joinpath(*[x for x in a[len(b):].split("/") if x])
    return Path(path)


def _see_work(work: str, token: str) -> tuple[Path, str | None]:
    """(local work folder, problem or None): the folder must hold this run's probe."""
    w = local_path(work)
    where = work if str(w) == work else f"{work} (here {w})"
    try:
        probe = json.loads((w / "logs" / PROBE.format(token[:12])).read_text())
    except FileNotFoundError:
        if not w.is_dir():
            return w, f"cannot see the work folder {where}: no such folder"
        return w, f"sees another folder at {where}: this run's probe file is not there (not the shared folder)"
    except (OSError, ValueError) as ex:
        return w, f"cannot read the work folder {where}: {ex}"
    if probe.get("token") != token:
        return w, f"sees another folder at {where}: its probe file belongs to another run"
    return w, None


def _see_inputs(input_dir: str, files: list[tuple[str, int, str]]) -> tuple[Path, str | None]:
    """``files``: (VideoInfo.path, size, VideoInfo.raw_path) of each input."""
    inp = local_path(input_dir)
    where = input_dir if str(inp) == input_dir else f"{input_dir} (here {inp})"
    if not inp.is_dir():
        return inp, f"cannot see the input folder {where}"
    bad = []
    for rel, size, raw in files:
        try:
            got = (inp / os_name(rel, raw)).stat().st_size
        except OSError:
            got = None
        if got != size:
            bad.append(rel if got is None else f"{rel} ({got} bytes, scanned {size})")
    if bad:
        return inp, f"cannot see {len(bad)} of {len(files)} input video(s) in {where}: {', '.join(bad[:3])}"
    return inp, None


def check_worker(work: str, input_dir: str, token: str, files: list[tuple[str, int]],
                 cfg: AnalyzeConfig, pinned: list[str] | None) -> dict:
    """Run on every worker (``Client.run``) before any task: what this worker would
    use, and every reason it cannot run the batch (``problems``, empty when fine)."""
    problems = []
    if multiprocessing.current_process().daemon:
        problems.append("runs as a daemonic process and cannot start facecut's decoder and inference "
                        "processes: start it with DASK_DISTRIBUTED__WORKER__DAEMON=False")
    try:
        path_map()
        mapping_ok = True
    except ConfigError as ex:
        problems.append(str(ex))
        mapping_ok = False
    if mapping_ok:
        w, why = _see_work(work, token)
        if why:
            problems.append(why)
        else:
            probe = w / "analysis" / f".probe-{socket.gethostname()}-{os.getpid()}"
            try:
                probe.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                os.close(fd)
                probe.unlink()
            except OSError as ex:
                problems.append(f"cannot write in the work folder {w}: {ex}")
        _, why = _see_inputs(input_dir, files)
        if why:
            problems.append(why)
        if cfg.model_dir and not local_path(cfg.model_dir).is_dir():
            problems.append(f"cannot see the model folder {cfg.model_dir}")
    here = cfg
    try:
        here = machine_config(cfg, pinned)
    except FacecutError as ex:
        problems.append(f"its bench profile is unusable: {ex}")
    return {"host": socket.gethostname(), "pid": os.getpid(), "version": __version__, "problems": problems,
            "config": {k: getattr(here, k) for k in (*COUNTS, "provider")}}
