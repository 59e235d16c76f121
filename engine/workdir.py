"""The work folder: where each artifact lives, and typed loaders for the ones
later stages read (scan, plan, completion markers), so report, cut, status
and the engine read them one way. Reading the scan here never imports PyAV.
"""

from __future__ import annotations

import logging
from pathlib import Path

import msgspec

from facecut.errors import ConfigError
from facecut.fsio import WORK_MARKER, mark_folder, read_json, write_json
from facecut.records import Plan, ScanResult, VideoDone

log = logging.getLogger(__name__)


class WorkDir:
    """Layout of a work folder (everything facecut writes except clips)::

        WORK/scan.json                  scan result (ScanResult)
        WORK/analysis/<key>.fclog       append-only analysis log per video
        WORK/analysis/<key>.done        completion marker (VideoDone, write-then-rename)
        WORK/analysis/<key>.shots.json  the video's shots, from its logged cuts (list of Shot)
        WORK/analysis/<key>.lease       cluster runs: which worker analyses the video
        WORK/thumbs/<key>/...           thumbnails captured during analysis
        WORK/plan.json                  clip plan (Plan: track + score, completed by cut)
        WORK/report/index.html          HTML report
        WORK/logs/progress.jsonl        progress snapshots of runs (and cluster probe files)
        WORK/heartbeat.json             pid, workers and time of a live run (`status` reads it)
        WORK/.facecut.lock              one writer at a time (facecut.worklock)
        WORK/.facecut-work              marker: a scan never walks into this folder
        WORK/.<name>.<pid>.tmp          a file being written; the lock removes dead ones
    """

    def __init__(self, root: Path) -> None:
        self.root = r = Path(root).expanduser().resolve()
        self.scan_json = r / "scan.json"
        self.analysis_dir = r / "analysis"
        self.thumbs_dir = r / "thumbs"
        self.plan_json = r / "plan.json"
        self.report_dir = r / "report"
        self.logs_dir = r / "logs"
        self.heartbeat = r / "heartbeat.json"

    def log_path(self, key: str) -> Path:
        return self.analysis_dir / f"{key}.fclog"

    def done_path(self, key: str) -> Path:
        return self.analysis_dir / f"{key}.done"

    def shots_path(self, key: str) -> Path:
        return self.analysis_dir / f"{key}.shots.json"

    def ensure(self) -> "WorkDir":
        for d in (self.root, self.analysis_dir, self.logs_dir):
            d.mkdir(parents=True, exist_ok=True)
        mark_folder(self.root, WORK_MARKER)
        return self

    # ------------------------------------------------------------------ typed loaders

    def load_scan(self, required: bool = True) -> ScanResult | None:
        """The scan. ``required=False``: None when there is none or it cannot be
        read (a report is still useful without it), with a warning for the latter."""
        try:
            return read_json(self.scan_json, ScanResult)
        except FileNotFoundError:
            if required:
                raise ConfigError(f"no scan in {self.root} (run `facecut scan INPUT_DIR -w {self.root}` first)")
        except (OSError, msgspec.DecodeError, msgspec.ValidationError) as ex:
            if required:
                raise ConfigError(f"{self.scan_json} is not a valid scan: {ex}") from ex
            log.warning("cannot read %s: %s", self.scan_json, ex)
        return None

    def save_scan(self, result: ScanResult) -> Path:
        self.ensure()
        write_json(self.scan_json, result)
        return self.scan_json

    def load_plan(self) -> Plan:
        try:
            return read_json(self.plan_json, Plan)
        except FileNotFoundError:
            raise ConfigError(f"no plan in {self.root} (run `facecut score -w {self.root}` first)") from None
        except (OSError, msgspec.DecodeError, msgspec.ValidationError) as ex:
            raise ConfigError(f"{self.plan_json} is not a valid plan: {ex}") from ex

    def save_plan(self, plan: Plan) -> Path:
        write_json(self.plan_json, plan)
        return self.plan_json

    def load_done(self, key: str) -> VideoDone | None:
        """A video's completion marker; None when there is none or it is torn."""
        try:
            return read_json(self.done_path(key), VideoDone)
        except (OSError, msgspec.DecodeError, msgspec.ValidationError):
            return None
