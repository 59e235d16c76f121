"""Stage benchmarks, each on the same corpus and each through facecut's real code:

decode only (per decoder count, with and without the fused shot detector),
inference only (frames preloaded in memory; per batch size, threads, processes),
ring transport, log writes, and ``analyze`` end to end.
"""

from __future__ import annotations

import multiprocessing.connection
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from facecut.procs import CTX
from facecut.protocol import DecodeJob
from facecut.records import VideoInfo

# --------------------------------------------------------------------------- decode


def decode_jobs(videos: list[VideoInfo], root: Path, *, fps: float, max_side: int, detector: str,
                threads: int = 1, fast: str = "off", hwaccel: str = "none") -> list[DecodeJob]:
    return [
        DecodeJob(job_id=i, path=os.fsencode(root / v.path), rel=v.path, stream_index=v.stream_index, fps=fps,
                  max_side=max_side, detector=detector, threads=threads, fast=fast, hwaccel=hwaccel)
        for i, v in enumerate(videos)
    ]


def split(items: list, weights: list[float], n: int) -> list[list]:
    """Greedy partition of items into n buckets by weight (longest first)."""
    buckets: list[list] = [[] for _ in range(n)]
    loads = [0.0] * n
    for w, it in sorted(zip(weights, items), key=lambda p: -p[0]):
        i = loads.index(min(loads))
        buckets[i].append(it)
        loads[i] += w
    return buckets


class _ConvertSink:
    """Does what the ring sink does to each sample (convert, cap, rotate), minus the ring."""

    def __init__(self, max_side: int, keep: int = 0, every: int = 1) -> None:
        from av.video.reformatter import VideoReformatter

        self.reformatter = VideoReformatter()
        self.max_side = max_side
        self.keep = keep
        self.kept: list[tuple[np.ndarray, float]] = []
        self.every = max(1, every)
        self.samples = 0

    def start(self, t0):
        pass

    def sample(self, k, frame, pts, t, cuts):
        from facecut.decode import frame_to_bgr

        img, scale = frame_to_bgr(frame, self.max_side, self.reformatter)
        self.samples += 1
        if len(self.kept) < self.keep and (self.samples - 1) % self.every == 0:
            self.kept.append((np.ascontiguousarray(img), scale))

    def progress(self, frames, samples, position):
        pass


def _decode_worker(conn, jobs: list[DecodeJob], max_side: int) -> None:
    from facecut.decode import decode_video
    from facecut.procs import steady_heap

    steady_heap()  # as in facecut's own worker processes

    conn.send("ready")
    conn.recv()
    frames = samples = 0
    seconds = 0.0
    cpu = time.process_time()  # this process, every FFmpeg thread included
    for job in jobs:
        sink = _ConvertSink(max_side)
        r = decode_video(job, sink)
        frames += r.frames
        samples += r.samples
        seconds += r.end_time
    conn.send((frames, samples, seconds, time.process_time() - cpu))


def run_parallel(target, per_worker_args: list[tuple]) -> tuple[float, list]:
    """Start one spawned process per args tuple, release them together, return
    (wall seconds from release to the last result, results)."""
    pipes, procs = [], []
    for args in per_worker_args:
        a, b = CTX.Pipe()
        p = CTX.Process(target=target, args=(b, *args), daemon=True)
        p.start()
        pipes.append(a)
        procs.append(p)
    for a in pipes:
        msg = a.recv()
        if msg != "ready":
            raise RuntimeError(f"benchmark worker failed: {msg}")
    t = time.perf_counter()
    for a in pipes:
        a.send("go")
    results = [None] * len(pipes)
    left = set(range(len(pipes)))
    while left:
        for c in multiprocessing.connection.wait([pipes[i] for i in left]):
            i = pipes.index(c)
            results[i] = c.recv()
            left.discard(i)
    wall = time.perf_counter() - t
    for p in procs:
        p.join(10)
    if any(isinstance(r, str) for r in results):
        raise RuntimeError(f"benchmark worker failed: {[r for r in results if isinstance(r, str)]}")
    return wall, results


def bench_decode(videos: list[VideoInfo], root: Path, *, decoders: int, fps: float, max_side: int,
                 detector: str, fast: str = "off", hwaccel: str = "none") -> dict:
    """Decode the corpus with ``decoders`` processes (whole videos each);
    ``fast``: the ``--fast-decode`` level; ``hwaccel``: the hardware decoder to try."""
    from facecut.procs import cpu_count

    threads = max(1, cpu_count() // decoders)
    jobs = decode_jobs(videos, root, fps=fps, max_side=max_side, detector=detector, threads=threads, fast=fast,
                       hwaccel=hwaccel)
    buckets = [b for b in split(jobs, [v.duration for v in videos], decoders) if b]
    wall, results = run_parallel(_decode_worker, [(b, max_side) for b in buckets])
    frames = sum(r[0] for r in results)
    samples = sum(r[1] for r in results)
    seconds = sum(r[2] for r in results)
    cpu = sum(r[3] for r in results)
    return {"wall_s": wall, "frames": frames, "samples": samples, "frames_per_s": frames / wall,
            "video_s_per_s": seconds / wall, "samples_per_s": samples / wall,
            "cpu_ms_per_frame": 1000 * cpu / max(1, frames)}


def preload_frames(videos: list[VideoInfo], root: Path, *, fps: float, max_side: int, limit: int
                   ) -> list[tuple[np.ndarray, float]]:
    """Sampled frames of the corpus (as analyze would see them), spread over all videos."""
    from facecut.decode import decode_video

    per = max(1, limit // max(1, len(videos)))
    out = []
    for v, job in zip(videos, decode_jobs(videos, root, fps=fps, max_side=max_side, detector="none")):
        # spread over the whole video (its first minutes may not be typical)
        sink = _ConvertSink(max_side, keep=per, every=max(1, int(v.duration * fps) // per))
        decode_video(job, sink)
        out.extend(sink.kept)
    return out[:limit]


# --------------------------------------------------------------------------- inference


def _infer_worker(conn, ring_spec, slots: list[tuple[int, int, int]], scales: list[float], spec,
                  batch: int) -> None:
    from facecut.procs import steady_heap
    from facecut.ring import FrameRing

    steady_heap()  # as in facecut's own inference processes
    try:
        model = spec.load()
    except Exception as ex:  # noqa: BLE001
        conn.send(f"model: {ex}")
        return
    ring = FrameRing.attach(ring_spec)
    frames = [ring.pixels(s, h, w).copy() for s, h, w in slots]
    ring.close()
    model.detect(frames[:batch], scales[:batch])  # warm-up (arenas, caches)
    conn.send("ready")
    conn.recv()
    faces = 0
    t = time.perf_counter()
    for i in range(0, len(frames), batch):
        for ff in model.detect(frames[i : i + batch], scales[i : i + batch]):
            faces += len(ff)
    conn.send((len(frames), faces, time.perf_counter() - t))


def bench_inference(frames: list[tuple[np.ndarray, float]], *, spec, batch: int, procs: int) -> dict:
    """Inference only, on frames held in memory, with ``procs`` processes loading
    ``spec`` (a ModelSpec: ``spec.threads`` threads each; frames shared through a ring)."""
    from facecut.ring import FrameRing

    ring = FrameRing.create(len(frames), max(f.nbytes for f, _ in frames))
    try:
        shapes = []
        for i, (f, _) in enumerate(frames):
            ring.write(i, i + 1, f)
            shapes.append((i, f.shape[0], f.shape[1]))
        scales = [s for _, s in frames]
        per = [(ring.spec, shapes[p::procs], scales[p::procs], spec, batch) for p in range(procs)]
        wall, results = run_parallel(_infer_worker, [a for a in per if a[2]])
    finally:
        ring.close()
        ring.unlink()
    n = sum(r[0] for r in results)
    return {"wall_s": wall, "frames": n, "faces": sum(r[1] for r in results), "frames_per_s": n / wall}


def bench_sharpness_cost(frames: list[tuple[np.ndarray, float]], *, spec) -> dict:
    """The face sharpness measurement (facecut.quality) against the model it follows,
    on the same frames in this process: model time per frame, sharpness time per
    frame (all its faces), and their ratio: the share the quality score adds to
    an inference process's work."""
    from facecut.quality import sharpness

    with spec.load() as model:
        model.detect([frames[0][0]], [frames[0][1]])  # warm up (first run allocates)
        t_model = t_sharp = 0.0
        faces = 0
        for img, scale in frames:
            t = time.perf_counter()
            found = model.detect([img], [scale])[0]
            t_model += time.perf_counter() - t
            t = time.perf_counter()
            for f in found:
                sharpness(img, f.box, scale)
            t_sharp += time.perf_counter() - t
            faces += len(found)
    n = len(frames)
    return {"frames": n, "faces": faces, "model_ms_per_frame": 1e3 * t_model / n,
            "sharpness_ms_per_frame": 1e3 * t_sharp / n, "sharpness_us_per_face": 1e6 * t_sharp / max(1, faces),
            "share_of_inference": t_sharp / t_model if t_model > 0 else 0.0}


# --------------------------------------------------------------------------- ring transport


def _ring_writer(conn, ring_spec, n: int, shape: tuple[int, int, int]) -> None:
    from facecut.ring import FrameRing

    ring = FrameRing.attach(ring_spec)
    img = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    free = list(range(ring.slots))
    conn.send("ready")
    conn.recv()
    seq = 0
    for _ in range(n):
        while not free:
            free.extend(conn.recv())
        slot = free.pop()
        seq += 1
        ring.write(slot, seq, img)
        conn.send((slot, seq))
    conn.send(None)
    ring.close()


def bench_ring(n: int = 400, shape: tuple[int, int, int] = (720, 1280, 3), slots: int = 8) -> dict:
    """Frames through the ring between two processes: write into a slot, send its id,
    copy it out on the other side, send the id back (what decode -> infer costs)."""
    from facecut.ring import FrameRing

    ring = FrameRing.create(slots, int(np.prod(shape)))
    a, b = CTX.Pipe()
    p = CTX.Process(target=_ring_writer, args=(b, ring.spec, n, shape), daemon=True)
    p.start()
    try:
        assert a.recv() == "ready"
        out = np.empty(shape, np.uint8)
        t = time.perf_counter()
        a.send("go")
        got = 0
        while True:
            msg = a.recv()
            if msg is None:
                break
            slot, seq = msg
            ring.read(slot, seq, out)
            a.send([slot])
            got += 1
        wall = time.perf_counter() - t
    finally:
        p.join(10)
        ring.close()
        ring.unlink()
    nbytes = int(np.prod(shape))
    return {"frames": got, "wall_s": wall, "frames_per_s": got / wall, "us_per_frame": 1e6 * wall / got,
            "gb_per_s": got * nbytes / wall / 1e9, "frame_mb": nbytes / 1e6}


# --------------------------------------------------------------------------- logs


def bench_log_write(n: int = 20000, batch: int = 8, with_embedding: bool = True) -> dict:
    import msgspec

    from facecut.logio import LogWriter, read_records
    from facecut.records import Face, LogRecord, Sample, embedding_to_bytes

    emb = embedding_to_bytes(np.ones(512, np.float32) / np.sqrt(512)) if with_embedding else None
    face = Face(box=(100.0, 80.0, 260.0, 280.0), kps=tuple(float(i) for i in range(10)), score=0.99, yaw=5.0,
                pitch=-3.0, roll=1.0, short=160.0, emb=emb)
    enc = msgspec.msgpack.Encoder()
    payloads = [enc.encode(Sample(k=i, pts=i * 512, time=i / 2, scale=1.0, faces=(face,))) for i in range(n)]
    tmp = Path(tempfile.mkdtemp(prefix="facecut-bench-log-"))
    try:
        path = tmp / "x.fclog"
        t = time.perf_counter()
        with LogWriter(path) as w:
            for i, p in enumerate(payloads):
                w.append_raw(p)
                if i % batch == batch - 1:
                    w.flush()
        write_s = time.perf_counter() - t
        size = path.stat().st_size
        t = time.perf_counter()
        recs = read_records(path, LogRecord)
        read_s = time.perf_counter() - t
        assert len(recs) == n
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"records": n, "bytes": size, "write_records_per_s": n / write_s, "write_mb_per_s": size / write_s / 1e6,
            "read_records_per_s": n / read_s, "embedding": with_embedding}


# --------------------------------------------------------------------------- analyze


def bench_analyze(corpus: Path, cfg, work_root: Path) -> dict:
    """``analyze`` end to end on a fresh work folder (scan not timed)."""
    from facecut.coordinator import analyze
    from facecut.workdir import WorkDir
    from facecut.scan import scan

    work = Path(tempfile.mkdtemp(prefix="analyze-", dir=work_root))
    wd = WorkDir(work)
    res = scan(corpus)
    wd.save_scan(res)
    t = time.perf_counter()
    result = analyze(wd, cfg)
    wall = time.perf_counter() - t
    seconds = sum(v.info.duration for v in result.videos)
    snap = result.stats
    samples = snap.samples_written if snap else 0
    out = {"wall_s": wall, "samples": samples, "samples_per_s": samples / wall, "video_s_per_s": seconds / wall,
           "exit_code": result.exit_code, "work": str(work)}
    if snap is not None:
        out["decoder_blocked_s"] = sum(d.blocked_s for d in snap.decoders)
        out["infer_starved_s"] = sum(i.starved_s for i in snap.infer)
        out["bottleneck"] = snap.bottleneck
    return out
