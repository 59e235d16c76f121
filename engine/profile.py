"""Per-machine tuning profile written by ``facecut bench --sweep --save-profile``.

``facecut run`` / ``analyze`` take their decoder / inference-process / batch /
thread counts, and the ``--fast-decode`` level (only one the sweep found to
leave cuts and clips unchanged), from it when the options are not given. One profile per
execution provider, in the user's config folder (platformdirs).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from platformdirs import user_config_dir

log = logging.getLogger(__name__)

KEYS = ("decoders", "infer_procs", "batch", "infer_threads", "ring_slots", "fast_decode")


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
