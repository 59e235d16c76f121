"""``facecut status``: progress of a running or finished batch, from files only.

Reads the scan, the per-video logs and completion markers, the heartbeat
(pid, host, time of a live run) and the progress history the coordinator
appends every few seconds. Never talks to a running engine, so it works from
another terminal, on a finished batch and on one that was killed.
"""

from __future__ import annotations

import msgspec

from facecut.errors import ConfigError
from facecut.workdir import WorkDir
from facecut.telemetry import read_heartbeat, read_rates
from facecut.videolog import read_log_state


class VideoStatus(msgspec.Struct, kw_only=True):
    path: str
    status: str  # ok | partial | failed | running | interrupted | pending | unreadable | duplicate
    duration: float = 0.0
    analysed: float = 0.0  # seconds of the video analysed so far
    samples: int = 0
    reason: str = ""


class BatchStatus(msgspec.Struct, kw_only=True):
    work: str
    alive: bool
    pid: int | None = None
    host: str | None = None
    heartbeat_age: float | None = None
    stage: str | None = None
    videos: list[VideoStatus] = []
    total: int = 0
    done: int = 0
    partial: int = 0
    failed: int = 0
    pending: int = 0
    video_seconds_total: float = 0.0
    video_seconds_done: float = 0.0
    speed: float | None = None  # video seconds per second over the last minutes
    infer_fps: float | None = None  # samples per second over the last minutes
    eta_s: float | None = None
    failures: list[str] = []


def batch_status(work: WorkDir) -> BatchStatus:
    if not work.root.is_dir():
        raise ConfigError(f"work folder not found: {work.root}")
    alive, hb, age = read_heartbeat(work)
    scan = work.load_scan()
    running = set(hb.running.values()) if alive and hb else set()
    out = BatchStatus(work=str(work.root), alive=alive, pid=hb and hb.pid, host=hb and hb.host,
                      heartbeat_age=age, stage=hb and hb.stage)
    for info in scan.videos:
        if info.status != "ok":
            out.videos.append(VideoStatus(path=info.path, status="duplicate" if info.status == "duplicate"
                                          else "unreadable", reason=info.reason))
            continue
        key = info.key
        vs = VideoStatus(path=info.path, status="pending", duration=info.duration)
        d = work.load_done(key)
        if d is not None:
            vs.status, vs.reason, vs.samples, vs.analysed = d.status, d.reason, d.samples, info.duration
        elif work.log_path(key).exists():
            try:
                st = read_log_state(work.log_path(key))
                vs.samples = st.samples
                vs.analysed = min(info.duration, (st.last_k + 1) / st.header.fps) if st.header else 0.0
            except Exception as ex:  # noqa: BLE001 - a status must not crash on a damaged log
                vs.reason = f"log unreadable: {ex}"
            vs.status = "running" if info.path in running else ("interrupted" if not alive else "pending")
        out.videos.append(vs)
    ok_videos = [v for v in out.videos if v.status not in ("unreadable", "duplicate")]
    out.total = len(out.videos)
    out.done = sum(v.status == "ok" for v in out.videos)
    out.partial = sum(v.status == "partial" for v in out.videos)
    out.failed = sum(v.status in ("failed", "unreadable") for v in out.videos)
    out.pending = sum(v.status in ("pending", "running", "interrupted") for v in out.videos)
    out.video_seconds_total = sum(v.duration for v in ok_videos)
    out.video_seconds_done = sum(v.analysed for v in ok_videos)
    out.failures = [f"{v.path}: {v.status}: {v.reason}" for v in out.videos if v.status in ("failed", "partial", "unreadable")]
    if alive:
        out.speed, out.infer_fps = read_rates(work)
        if out.speed:
            out.eta_s = max(0.0, out.video_seconds_total - out.video_seconds_done) / out.speed
    return out


def render_status(st: BatchStatus):
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from facecut.dashboard import hms, shown

    if st.alive:
        head = Text.assemble(("running", "bold green"), f" (pid {st.pid} on {st.host}, {st.stage},"
                             f" heartbeat {st.heartbeat_age:.0f}s ago)")
    else:
        head = Text.assemble(("not running", "bold"),
                             f" ({'finished' if st.pending == 0 else f'{st.pending} video(s) left'})")
    t = Table(title=shown(f"facecut status: {st.work}"), title_justify="left")
    for col, just in [("video", "left"), ("status", "left"), ("analysed", "right"), ("samples", "right"),
                      ("reason", "left")]:
        t.add_column(col, justify=just, no_wrap=col != "reason", overflow="fold")
    colour = {"ok": "green", "partial": "yellow", "failed": "red", "unreadable": "red", "duplicate": "yellow", "running": "cyan",
              "interrupted": "magenta"}
    for v in st.videos:
        c = colour.get(v.status)
        t.add_row(shown(v.path), Text(v.status, c or ""),
                  f"{hms(v.analysed)}/{hms(v.duration)}", str(v.samples), shown(v.reason))
    lines = [
        f"videos: {st.done} ok, {st.partial} partial, {st.failed} failed, {st.pending} left of {st.total}"
        f"   video analysed {st.video_seconds_done / 3600:.2f}/{st.video_seconds_total / 3600:.2f} h",
    ]
    if st.alive:
        sp = f"{st.speed:.1f}x" if st.speed is not None else "?"
        fps = f"{st.infer_fps:.1f}" if st.infer_fps is not None else "?"
        lines.append(f"last minutes: {sp} real time, {fps} samples/s, ETA {hms(st.eta_s)}")
    return Group(head, t, Text("\n".join(lines)))
