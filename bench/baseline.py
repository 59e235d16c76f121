"""The old chain, faithfully, as the yardstick facecut is measured against.

What users ran before (13 videos / 6.18 h of 720p in 1 h 43 min):
  1. a separate PySceneDetect pass over each file (its own decode);
  2. sampling at 2 fps in one process: open, one seek, sequential decode,
     face detection one frame at a time, a JSONL append per result;
  3. one open / seek / copy per clip;
  4. a second decode of the sources for report thumbnails (one seek per clip).

Same files, same model and provider, same sampled frames as facecut.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import av


def scene_pass(paths: list[Path]) -> tuple[float, dict[str, list[float]]]:
    """PySceneDetect's own API over each file (its default OpenCV backend), like the old chain."""
    from scenedetect import AdaptiveDetector, detect

    cuts = {}
    t = time.perf_counter()
    for p in paths:
        scenes = detect(str(p), AdaptiveDetector())
        cuts[p.name] = [s[0].seconds for s in scenes[1:]]
    return time.perf_counter() - t, cuts


def sample_and_detect(paths: list[Path], spec, *, fps: float, max_side: int, out: Path) -> dict:
    """One process, one seek per video, sequential decode, detection at batch 1, a JSONL line per result."""
    from facecut.decode import frame_to_bgr
    model = spec.load()  # a facecut.models.base.ModelSpec
    out.parent.mkdir(parents=True, exist_ok=True)
    samples = faces = 0
    t_detect = 0.0
    t = time.perf_counter()
    for p in paths:
        with av.open(str(p)) as c:
            s = c.streams.video[0]
            c.seek(0, stream=s)
            nxt = 0.0
            t0 = None
            for frame in c.decode(s):
                ft = float(frame.time or 0.0)
                if t0 is None:
                    t0 = ft
                if ft - t0 + 1e-6 < nxt:
                    continue
                nxt += 1.0 / fps
                img, scale = frame_to_bgr(frame, max_side)
                td = time.perf_counter()
                found = model.detect([img], [scale])[0]
                t_detect += time.perf_counter() - td
                samples += 1
                faces += len(found)
                rec = {"video": p.name, "t": ft - t0, "faces": [
                    {"box": list(f.box), "score": f.score, "yaw": f.yaw, "pitch": f.pitch} for f in found]}
                with open(out, "a") as fh:  # an append per result
                    fh.write(json.dumps(rec) + "\n")
    model.close()
    return {"wall_s": time.perf_counter() - t, "detect_s": t_detect, "samples": samples, "faces": faces}


def copy_clip(src: Path, dst: Path, start: float, end: float) -> None:
    """One open + one seek + stream copy of [start, end) (keyframe at or before start)."""
    with av.open(str(src)) as inp:
        streams = [s for s in inp.streams if s.type in ("video", "audio")]
        v = inp.streams.video[0]
        t0 = float(v.start_time * v.time_base) if v.start_time is not None else 0.0
        inp.seek(int((t0 + start) / v.time_base), stream=v, backward=True, any_frame=False)
        with av.open(str(dst), "w", options={"movflags": "+faststart"}) as out:
            omap = {s.index: out.add_stream_from_template(s) for s in streams}
            base = {}
            started = False
            for pkt in inp.demux(streams):
                if pkt.dts is None or pkt.size == 0:
                    continue
                t = float(pkt.pts * pkt.time_base) - t0 if pkt.pts is not None else None
                if pkt.stream.type == "video":
                    if not started:
                        if not pkt.is_keyframe:
                            continue
                        started = True
                    if t is not None and t >= end:
                        break
                elif not started or (t is not None and t >= end):
                    continue
                off = base.setdefault(pkt.stream.index, pkt.dts)
                pkt.pts = (pkt.pts - off) if pkt.pts is not None else None
                pkt.dts -= off
                pkt.stream = omap[pkt.stream.index]
                out.mux(pkt)


def cut_per_clip(clips: list[tuple[Path, float, float]], out_dir: Path) -> float:
    out_dir.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    for i, (src, start, end) in enumerate(clips):
        copy_clip(src, out_dir / f"clip{i:04d}.mp4", start, end)
    return time.perf_counter() - t


def thumbnails_by_decoding(clips: list[tuple[Path, float, float]], out_dir: Path) -> float:
    """The old report: reopen each source, seek to the clip's middle, decode a frame, save a JPEG."""
    import cv2

    out_dir.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    for i, (src, start, end) in enumerate(clips):
        mid = (start + end) / 2
        with av.open(str(src)) as c:
            s = c.streams.video[0]
            c.seek(int(mid / s.time_base), stream=s, backward=True)
            for frame in c.decode(s):
                if frame.time is not None and frame.time >= mid:
                    img = frame.to_ndarray(format="bgr24")
                    h, w = img.shape[:2]
                    k = 320 / max(h, w)
                    cv2.imwrite(str(out_dir / f"thumb{i:04d}.jpg"), cv2.resize(img, (round(w * k), round(h * k))))
                    break
    return time.perf_counter() - t
