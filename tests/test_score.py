"""Score and plan: constructed detection sequences for the segment rules, then the
real analysis of the generated media (truth files) for spans, re-scoring and the
identity filter."""

from __future__ import annotations

import shutil
import time
import zipfile
from pathlib import Path

import cv2
import msgspec
import numpy as np
import pytest
from test_track import face, log, unit

from facecut.config import AnalyzeConfig, ScoreConfig, build
from facecut.coordinator import analyze
from facecut.errors import ConfigError
from facecut.fsio import clip_id, video_key
from facecut.workdir import WorkDir
from facecut.identity import Identity, build_identity, load_reference_images
from facecut.logio import LogWriter, read_records
from facecut.models import FaceModel, load_model, make_session
from facecut.models.postproc import ARCFACE_DST, umeyama
from facecut.records import LogRecord, Plan, Sample, ScanResult, VideoInfo, embedding_to_bytes
from facecut.scan import scan
from facecut.plan import plan_from_work
from facecut.score import REASONS, score_video, span
from facecut.track import VideoLog
from facecut.tools.make_media import PHOTOS, load_photo, load_truth

INFO = VideoInfo(path="x.mp4", fingerprint="fp", duration=20.0)


def plan_of(recs, **opts):
    src, clips = score_video(INFO, recs, ScoreConfig(**opts))
    return src, clips


def spans_of(clips):
    return [(c.shot, c.start, c.end, c.tracks) for c in clips]


# --------------------------------------------------------------------------- constructed: bridge, merge, cuts


def test_a_2s_pose_dropout_is_bridged_a_4s_one_splits():
    frames = {k: [face()] for k in range(4, 32)}  # 2.0 .. 15.5 s, mid-shot (20 s video)
    for k in range(10, 14):  # 2 s looking away
        frames[k] = [face(yaw=80.0)]
    src, clips = plan_of(log(frames, n=40))
    assert spans_of(clips) == [(0, 1.75, 15.75, [0])]
    assert clips[0].stats.frames == 24 and clips[0].stats.yaw_range == (0.0, 80.0)

    for k in range(10, 18):  # 4 s looking away: longer than --bridge-gap
        frames[k] = [face(yaw=80.0)]
    src, clips = plan_of(log(frames, n=40))
    assert spans_of(clips) == [(0, 1.75, 4.75, [0]), (0, 8.75, 15.75, [0])]
    assert [t.status for t in src.tracks] == ["accepted"]
    # the option moves the line
    _, clips = plan_of(log(frames, n=40), bridge_gap=5.0)
    assert spans_of(clips) == [(0, 1.75, 15.75, [0])]


def two_tracks(cuts=()):
    """Track 0 at the left, samples 1.0..4.5 s; track 1 far right, 6.5..10.0 s:
    their segments (half an interval wider) are 1.5 s apart."""
    frames = {k: [face(40)] for k in range(2, 10)}
    frames.update({k: [face(360)] for k in range(13, 21)})
    return log(frames, n=40, cuts=cuts)


def test_two_tracks_1_5s_apart_in_one_shot_are_fused():
    src, clips = plan_of(two_tracks())
    assert [t.id for t in src.tracks] == [0, 1]
    assert spans_of(clips) == [(0, 0.75, 10.25, [0, 1])]
    _, clips = plan_of(two_tracks(), merge_gap=1.0)
    assert spans_of(clips) == [(0, 0.75, 4.75, [0]), (0, 6.25, 10.25, [1])]
    # a fused clip longer than --max-dur is not made: the segments stay apart
    _, clips = plan_of(two_tracks(), max_dur=8.0)
    assert spans_of(clips) == [(0, 0.75, 4.75, [0]), (0, 6.25, 10.25, [1])]


def test_the_same_two_tracks_across_a_cut_stay_apart():
    src, clips = plan_of(two_tracks(cuts=[5.04]))
    assert [(s.start, s.end) for s in src.shots] == [(0.0, 5.04), (5.04, 20.0)]
    assert spans_of(clips) == [(0, 0.75, 4.75, [0]), (1, 6.25, 10.25, [1])]


def test_segments_snap_to_cuts_within_one_sample_interval():
    # Shot 0 = 0..5.04 s (samples k 0..10), shot 1 = 5.04..10 s (k 11..19).
    frames = {k: [face()] for k in range(20)}
    src, clips = plan_of(log(frames, cuts=[5.04]))
    assert spans_of(clips) == [(0, 0.0, 5.04, [0]), (1, 5.04, 10.0, [1])]
    # A first/last sample more than one interval from the cut: half an interval wider.
    frames = {k: [face()] for k in range(13, 17)}  # 6.5 .. 8.0 s
    _, clips = plan_of(log(frames, n=20, cuts=[5.04]))
    assert spans_of(clips) == [(1, 6.25, 8.25, [0])]
    # ... never past the shot.
    v = VideoLog.from_records(log({k: [face()] for k in range(20)}, cuts=[5.3]))
    assert span(v, 0, 9, 9) == (4.25, 4.75)
    assert span(v, 0, 10, 10) == (4.75, 5.3)  # 5.0 is within 0.5 s of the cut at 5.3: snapped


@pytest.mark.parametrize(
    "faces, opts, reason",
    [
        ([face(size=50)] * 6, {}, "too_small"),
        ([face(yaw=-80)] * 6, {}, "pose"),
        ([face(pitch=60)] * 6, {}, "pose"),
        ([face(score=0.3)] * 6, {}, "det_score"),
        ([face()], {}, "too_short"),  # one sample: 0.5 s
        ([face()] * 12, {"max_dur": 5.0, "long": "reject"}, "too_long"),  # 6 s
        # 40 % of the detections fail: below the 70 % track gate
        ([face(size=85)] * 6 + [face(size=75)] * 4, {}, "too_small"),
        ([face()] * 6 + [face(score=0.3)] * 4, {}, "det_score"),
        # several gates fail: the one failing most names it
        ([face(yaw=80, size=70)] * 2 + [face(yaw=80)] * 4, {}, "pose"),
    ],
)
def test_rejected_tracks_keep_their_reason(faces, opts, reason):
    frames = {4 + i: [f] for i, f in enumerate(faces)}  # mid-shot
    src, clips = plan_of(log(frames, n=40), **opts)
    assert clips == []
    assert [(t.status, t.reason) for t in src.tracks] == [("rejected", reason)]


def test_a_long_segment_is_split_into_near_equal_parts():
    frames = {k: [face()] for k in range(2, 38)}  # 1.0 .. 18.5 s in one shot (20 s video)
    src, clips = plan_of(log(frames, n=40), max_dur=5.0)
    assert [t.status for t in src.tracks] == ["accepted"]
    assert len(clips) == 4  # 18 s -> ceil(18 / 5) parts
    assert all(c.end - c.start <= 5.0 + 1e-6 for c in clips)
    assert clips[0].start == 0.75 and clips[-1].end == 18.75
    assert all(a.end == b.start for a, b in zip(clips, clips[1:])), "the parts cover the segment"
    assert [(c.part, c.parts) for c in clips] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert {c.group for c in clips} == {clips[0].id} and len({c.id for c in clips}) == 4
    lengths = [c.end - c.start for c in clips]
    assert max(lengths) - min(lengths) <= 2.0  # near-equal


def test_a_split_boundary_moves_to_where_the_face_is_worst():
    frames = {k: [face()] for k in range(0, 24)}  # 0 .. 11.75 s: even parts meet at 5.875 s
    frames[11] = [face(score=0.55)]  # 5.5 s: the weakest moment near the middle
    _, clips = plan_of(log(frames, n=40), max_dur=8.0)
    assert [(c.start, c.end) for c in clips] == [(0.0, 5.5), (5.5, 11.75)]
    del frames[11]  # no weak moment: the sample nearest the even boundary
    _, clips = plan_of(log(frames, n=40), max_dur=8.0)
    assert [(c.start, c.end) for c in clips] == [(0.0, 6.0), (6.0, 11.75)]


def test_long_reject_keeps_the_old_behaviour_and_unsplit_clips_are_1_of_1():
    frames = {k: [face()] for k in range(2, 38)}
    src, clips = plan_of(log(frames, n=40), max_dur=5.0, long="reject")
    assert clips == [] and src.tracks[0].reason == "too_long"
    _, clips = plan_of(log(frames, n=40))
    assert [(c.part, c.parts, c.group) for c in clips] == [(1, 1, "")]


def test_gate_share_and_stats():
    # 3 of 10 detections small: 70 % pass, exactly the gate; the small ones are
    # the last three, so the segment ends at the last passing sample.
    frames = {4 + i: [face(size=90 + i, yaw=i - 3)] for i in range(7)}
    frames.update({11 + i: [face(size=75)] for i in range(3)})
    src, clips = plan_of(log(frames, n=40))
    assert spans_of(clips) == [(0, 1.75, 5.25, [0])]
    st = clips[0].stats
    assert st.frames == 7 and st.face_short_median == 93.0 and st.det_score_median == 0.99
    assert st.yaw_range == (-3.0, 3.0)
    assert src.tracks[0].frames == 10 and src.tracks[0].status == "accepted"


def test_unfinished_and_failed_logs_give_no_clips():
    recs = log({k: [face()] for k in range(10)}, n=20)
    src, clips = plan_of(recs[:-1])
    assert (src.status, clips) == ("pending", [])
    src, clips = plan_of(recs[:-1] + [msgspec.structs.replace(recs[-1], status="failed", reason="boom")])
    assert (src.status, src.reason, clips) == ("failed", "boom", [])
    src, clips = plan_of(recs[:-1] + [msgspec.structs.replace(recs[-1], status="partial", reason="bad packets")])
    assert (src.status, src.reason, len(clips)) == ("partial", "bad packets", 1)


def test_clip_ids_are_deterministic_uuids_of_source_and_span():
    _, a = plan_of(two_tracks())
    _, b = plan_of(two_tracks())
    assert [c.id for c in a] == [c.id for c in b] == [clip_id("fp", 0.75, 10.25)]
    # another file (fingerprint in the log header), the same span: another id
    frames = {k: [face(40)] for k in range(2, 10)}
    _, c = plan_of(log(frames, n=40, fingerprint="other"))
    _, d = plan_of(log(frames, n=40))
    assert c[0].id == clip_id("other", 0.75, 4.75) != d[0].id


def test_identity_filter_on_constructed_embeddings():
    a, b = unit(1), unit(2)
    noisy = [unit(10 + i) * 0.3 + a for i in range(6)]
    frames = {k: [face(40, emb=noisy[k - 2])] for k in range(2, 8)}
    frames.update({k: [face(40, emb=b)] for k in range(20, 26)})
    frames.update({k: [face(40)] for k in range(30, 36)})  # no embedding: cannot be confirmed
    ident = Identity(path="ref", reference=a.astype(np.float32), threshold=0.65, faces=1)
    src, clips = score_video(INFO, log(frames, n=40), ScoreConfig(), identity=ident)
    assert [(t.status, t.reason) for t in src.tracks] == [
        ("accepted", ""), ("rejected", "identity"), ("rejected", "identity")]
    assert [c.tracks for c in clips] == [[0]]
    assert ident.distance(np.array([b]).astype(np.float32)) == pytest.approx(1 - float(a @ b), abs=1e-5)


# --------------------------------------------------------------------------- real analysis of the test media

CFG = dict(provider="cpu", decoders=1, infer_procs=1, batch=4, min_face=60.0)
VIDEOS = ["basic.mp4", "vfr.mp4", "rotated.mp4", "sub/nofaces.mkv"]


@pytest.fixture(scope="module")
def analysed(media_dir, tmp_path_factory) -> WorkDir:
    wd = WorkDir(tmp_path_factory.mktemp("score_work"))
    wd.save_scan(scan(media_dir))
    assert analyze(wd, AnalyzeConfig(**CFG)).exit_code == 0
    return wd


@pytest.fixture(scope="module")
def plan(analysed) -> Plan:
    return plan_from_work(analysed, ScoreConfig())


def test_plan_spans_match_the_truth(plan, media_dir):
    by_path = {s.path: s for s in plan.sources}
    assert set(by_path) == set(VIDEOS)
    for rel in VIDEOS:
        truth = load_truth(media_dir / rel)
        src = by_path[rel]
        assert src.status == "ok" and src.fingerprint and src.key == video_key(rel)
        assert len(src.shots) == len(truth.shots)
        frame = 1.0 / truth.fps + 1e-6
        dt = 0.5
        for ts, shot in zip(truth.shots, src.shots):
            clips = [c for c in plan.clips if c.source == rel and c.shot == shot.index]
            tracks = [t for t in src.tracks if t.shot == shot.index]
            if ts.swappable:
                assert len(clips) == 1, (rel, ts)
                c = clips[0]
                # exactly at the logged cuts, which are within a frame of the truth
                assert (c.start, c.end) == (shot.start, shot.end), (rel, ts)
                assert abs(c.start - ts.start) <= frame and abs(c.end - ts.end) <= frame
                assert c.stats.face_short_median == pytest.approx(ts.face_short, rel=0.35)
                assert c.id == clip_id(src.fingerprint, c.start, c.end)
            elif ts.kind == "enter":
                assert len(clips) == 1, (rel, ts)
                assert abs(clips[0].start - ts.face_from) <= dt and clips[0].end == shot.end
            else:
                assert clips == [], (rel, ts)
                if ts.kind == "small":
                    assert [t.reason for t in tracks] == ["too_small"]
                elif ts.kind == "noface":
                    assert tracks == []
    assert plan.rejected == {r: int(r == "too_small") for r in REASONS}
    assert plan.model == "mtcnn" and plan.params["max_yaw"] == 75.0 and plan.params["analysis"]["fps"] == 2.0


def test_clips_get_the_nearest_thumbnail_inside_them(plan, analysed):
    for c in plan.clips:
        assert c.thumb is not None, c
        path = analysed.root / c.thumb
        assert path.is_file()
        k = int(path.stem)
        assert c.start <= k / 2.0 < c.end


def test_plan_json_round_trips_and_rerun_gives_the_same_ids(plan, analysed):
    analysed.save_plan(plan)
    back = msgspec.json.decode(analysed.plan_json.read_bytes(), type=Plan)
    assert msgspec.to_builtins(back) == msgspec.to_builtins(plan)
    again = plan_from_work(analysed, ScoreConfig())
    assert [c.id for c in again.clips] == [c.id for c in plan.clips]
    assert len({c.id for c in plan.clips}) == len(plan.clips)


def file_stats(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "plan.json"}


def test_rescore_with_max_yaw_25_changes_the_plan_not_the_logs(analysed, plan):
    analysed.save_plan(plan)
    before = file_stats(analysed.root)
    t = time.perf_counter()
    strict = plan_from_work(analysed, build(ScoreConfig, max_yaw=25.0))
    analysed.save_plan(strict)
    elapsed = time.perf_counter() - t
    print(f"\nscore --max-yaw 25 over the test batch: {elapsed * 1000:.0f} ms")
    assert file_stats(analysed.root) == before  # logs, markers, thumbnails untouched
    assert msgspec.json.decode(analysed.plan_json.read_bytes(), type=Plan).params["max_yaw"] == 25.0
    # vfr.mp4's first shot (yaw 23-27 degrees) no longer passes; the rest stays
    gone = {(c.source, c.shot) for c in plan.clips} - {(c.source, c.shot) for c in strict.clips}
    assert gone == {("vfr.mp4", 0)}
    assert strict.rejected["pose"] == 1


def test_pending_and_failed_sources_are_listed(analysed, tmp_path):
    work = WorkDir(tmp_path / "w")
    shutil.copytree(analysed.root, work.root)
    sc = msgspec.json.decode(work.scan_json.read_bytes(), type=ScanResult)
    sc.videos += [
        VideoInfo(path="broken.mp4", status="failed", reason="cannot open: invalid data"),
        VideoInfo(path="later.mp4", fingerprint="f-later", duration=3.0),
    ]
    work.save_scan(sc)
    # basic.mp4 interrupted: its log without the Done record
    path = work.log_path(video_key("basic.mp4"))
    recs = read_records(path, LogRecord)[:-1]
    path.unlink()
    with LogWriter(path) as w:
        for r in recs:
            w.append(r)
    p = plan_from_work(work)
    status = {s.path: (s.status, s.reason) for s in p.sources}
    assert status["broken.mp4"] == ("failed", "cannot open: invalid data")
    assert status["later.mp4"] == ("pending", "not analysed yet")
    assert status["basic.mp4"][0] == "pending" and "not finished" in status["basic.mp4"][1]
    assert status["vfr.mp4"] == ("ok", "")
    assert {c.source for c in p.clips} == {"vfr.mp4", "rotated.mp4"}


# --------------------------------------------------------------------------- identity with a recognition model


def build_template_recognizer(path: Path, d: int = 512) -> Path:
    from facecut.tools.tiny_onnx import build_template_arcface

    return build_template_arcface(path, d)


class TemplateModel(FaceModel):
    """A backend for these tests: MTCNN detection, then the template recogniser on
    the ArcFace-aligned crop (the alignment buffalo_l uses)."""

    name = "test-template"
    has_embeddings = True

    def __init__(self, *, model_dir=None, provider="cpu", threads=1, min_face=80.0, batch=None):
        self.det = load_model("mtcnn", provider=provider, threads=threads, min_face=min_face)
        self.rec = make_session(Path(model_dir) / "template.onnx", provider, threads)

    @classmethod
    def describe(cls, model_dir, provider):
        return {}

    def embed(self, frame: np.ndarray, kps: np.ndarray) -> np.ndarray:
        """(n, d) L2-normalised embeddings of faces with 5 keypoints (n, 5, 2) in frame pixels."""
        m = umeyama(np.asarray(kps, np.float64).reshape(-1, 5, 2), ARCFACE_DST)
        crops = [cv2.warpAffine(frame, mm, (112, 112)) for mm in m]
        blob = cv2.dnn.blobFromImages(crops, 1 / 127.5, (112, 112), (127.5,) * 3, swapRB=True)
        out = self.rec.run(blob)[0]
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def detect(self, frames, scales):
        out = []
        for frame, scale, faces in zip(frames, scales, self.det.detect(frames, scales)):
            if faces:
                embs = self.embed(frame, np.array([f.kps for f in faces]) * scale)
                faces = [msgspec.structs.replace(f, emb=embedding_to_bytes(e)) for f, e in zip(faces, embs)]
            out.append(faces)
        return out


@pytest.fixture(scope="module")
def template_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("template_model")
    build_template_recognizer(d / "template.onnx")
    return d


@pytest.fixture(scope="module")
def embedded(analysed, media_dir, template_dir, tmp_path_factory) -> WorkDir:
    """The analysed work folder, its logs rewritten as the template backend would
    have written them: the same faces, each with the embedding of its aligned
    crop, computed on the real decoded frame the analysis sampled."""
    import av

    from facecut.decode import frame_to_bgr

    work = WorkDir(tmp_path_factory.mktemp("embedded"))
    shutil.copytree(analysed.root, work.root, dirs_exist_ok=True)
    model = TemplateModel(model_dir=template_dir)
    for rel in VIDEOS:
        path = work.log_path(video_key(rel))
        recs = read_records(path, LogRecord)
        want = {r.pts: i for i, r in enumerate(recs) if type(r) is Sample and r.faces}
        with av.open(str(media_dir / rel)) as c:
            for fr in c.decode(video=0):
                i = want.get(fr.pts)
                if i is not None:
                    s = recs[i]
                    img, scale = frame_to_bgr(fr, 1280)  # as the analysis (max_side 1280) did
                    assert scale == s.scale
                    embs = model.embed(img, np.array([f.kps for f in s.faces]) * scale)
                    recs[i] = msgspec.structs.replace(s, faces=tuple(
                        msgspec.structs.replace(f, emb=embedding_to_bytes(e)) for f, e in zip(s.faces, embs)))
        assert all(f.emb for r in recs if type(r) is Sample for f in r.faces)
        recs[0] = msgspec.structs.replace(recs[0], model="test-template")
        path.unlink()
        with LogWriter(path) as w:
            for r in recs:
                w.append(r)
    return work


def face_crop(photo: str, margin: float, side: int = 256) -> np.ndarray:
    """A roop-style face-set picture: the photo's face with ``margin`` face sizes
    around it, resized to side x side."""
    img = load_photo(photo)
    x, y, w, h = PHOTOS[photo].face
    mx, my = int(w * margin), int(h * margin)
    crop = img[max(0, y - my): y + h + my, max(0, x - mx): x + w + mx]
    return cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)


def write_fsz(path: Path, crops: list[np.ndarray]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for i, c in enumerate(crops):
            z.writestr(f"{i}.png", cv2.imencode(".png", c)[1].tobytes())
    return path


def test_identity_keeps_person_a_and_drops_b(embedded, media_dir, template_dir, tmp_path):
    fsz = write_fsz(tmp_path / "collins.fsz", [face_crop("astronaut", m) for m in (0.5, 0.8, 1.2)])
    cfg = ScoreConfig(model_dir=str(template_dir), provider="cpu")
    everyone = plan_from_work(embedded, cfg)
    only_a = plan_from_work(embedded, cfg, identity=fsz)
    assert only_a.params["identity"] == str(fsz) and only_a.params["identity_faces"] == 3
    person = {}
    for rel in VIDEOS:
        for ts in load_truth(media_dir / rel).shots:
            person[(rel, ts.index)] = ts.person
    kept = {(c.source, c.shot) for c in only_a.clips}
    assert kept and all(person[k] == "collins" for k in kept)
    assert kept == {(c.source, c.shot) for c in everyone.clips if person[(c.source, c.shot)] == "collins"}
    dropped = [(s.path, t.shot) for s in only_a.sources for t in s.tracks if t.reason == "identity"]
    assert {person[k] for k in dropped} == {"t1_mid", "hanks"}
    # B's shots all had clips without the filter; the small collins face is still too small
    assert {(c.source, c.shot) for c in everyone.clips} - kept == set(dropped)
    assert only_a.rejected["identity"] == len(dropped) and only_a.rejected["too_small"] == 1
    # the same reference as one image and as a folder
    one = tmp_path / "one.png"
    cv2.imwrite(str(one), face_crop("astronaut", 0.8))
    assert {(c.source, c.shot) for c in plan_from_work(embedded, cfg, identity=one).clips} == kept
    ident = build_identity(tmp_path, "test-template", model_dir=template_dir, provider="cpu")
    assert ident.faces == 1  # the folder holds one.png (the .fsz is not an image)


def test_people_groups_one_person_each_stable_ids_and_person_filter(embedded, media_dir, template_dir, tmp_path,
                                                                     capsys):
    """Clips grouped by who their main face is (the test recogniser's embeddings),
    one group per person; ids survive a re-score with other gates; person:K keeps
    that person's clips only."""
    truth = {(rel, ts.index): ts.person for rel in VIDEOS for ts in load_truth(media_dir / rel).shots}
    work = WorkDir(tmp_path / "w")
    shutil.copytree(embedded.root, work.root)
    cfg = ScoreConfig(model_dir=str(template_dir), provider="cpu")
    plan = plan_from_work(work, cfg)
    groups: dict[int, set[str]] = {}
    for c in plan.clips:
        assert c.person is not None
        groups.setdefault(c.person, set()).add(truth[(c.source, c.shot)])
    names = {truth[(c.source, c.shot)] for c in plan.clips}
    assert len(names) >= 2 and all(len(g) == 1 for g in groups.values()) and len(groups) == len(names)
    assert sorted(p.id for p in plan.people) == sorted(groups)
    for p in plan.people:
        assert p.clips == sum(c.person == p.id for c in plan.clips) and len(p.centroid) == 512
        assert p.face is not None and (work.root / p.face.thumb).is_file()
        assert all(0 <= v <= 1 for v in p.face.box) and p.face.box[2] > 0.1
    # The distances the default threshold (0.6) sits between, on this recogniser.
    from facecut.people import ClipFace  # noqa: F401  (the type score_video fills)

    reps = []
    for info in work.load_scan().videos:
        if info.status == "ok" and work.log_path(info.key).exists():
            faces = []
            score_video(info, read_records(work.log_path(info.key), LogRecord), cfg, work=work, faces=faces)
            clip_shot = {c.id: c.shot for c in score_video(info, read_records(work.log_path(info.key), LogRecord),
                                                            cfg)[1]}
            reps += [(truth[(info.path, clip_shot[f.clip])], f.emb) for f in faces]
    same = [1 - float(a @ b) for i, (n, a) in enumerate(reps) for m, b in reps[i + 1:] if n == m]
    other = [1 - float(a @ b) for i, (n, a) in enumerate(reps) for m, b in reps[i + 1:] if n != m]
    with capsys.disabled():
        print(f"\n  people distances on the test recogniser: same person <= {max(same):.3f}, "
              f"different >= {min(other):.3f}")
    assert max(same) < 0.6 < min(other)

    ids = {(c.source, c.shot): c.person for c in plan.clips}
    work.save_plan(plan)
    again = plan_from_work(work, ScoreConfig(model_dir=str(template_dir), provider="cpu", min_dur=2.5))
    assert 0 < len(again.clips) < len(plan.clips)  # other gates, fewer clips: the same ids
    assert all(ids[(c.source, c.shot)] == c.person for c in again.clips)
    collins = ids[next(k for k in ids if truth[k] == "collins")]
    only = plan_from_work(work, cfg, identity=f"person:{collins}")
    assert {truth[(c.source, c.shot)] for c in only.clips} == {"collins"}
    assert {c.person for c in only.clips} == {collins} and only.params["identity"] == f"person:{collins}"
    assert {(c.source, c.shot) for c in only.clips} == {k for k, v in ids.items() if v == collins}
    with pytest.raises(ConfigError, match="no such people group"):
        plan_from_work(work, cfg, identity="person:99")
    work.save_plan(only)  # a filtered plan: the other people keep their ids through it
    assert {p.id for p in only.people} == set(ids.values()) and sum(p.clips > 0 for p in only.people) == 1
    assert {(c.source, c.shot): c.person for c in plan_from_work(work, cfg).clips} == ids


def test_a_persons_face_set_is_a_zip_of_png_faces_the_identity_loader_reads_back(embedded, media_dir,
                                                                                 template_dir, tmp_path):
    from facecut.export import write_faceset

    truth = {(rel, ts.index): ts.person for rel in VIDEOS for ts in load_truth(media_dir / rel).shots}
    work = WorkDir(tmp_path / "w")
    shutil.copytree(embedded.root, work.root)
    cfg = ScoreConfig(model_dir=str(template_dir), provider="cpu")
    plan = plan_from_work(work, cfg)
    work.save_plan(plan)
    collins = {c.person for c in plan.clips if truth[(c.source, c.shot)] == "collins"}.pop()
    fsz = tmp_path / "collins.fsz"
    n = write_faceset(work, f"person:{collins}", fsz, count=6)
    assert n >= 3
    with zipfile.ZipFile(fsz) as z:
        assert z.namelist() == [f"{i}.png" for i in range(n)]
        assert all(z.read(name)[:8] == b"\x89PNG\r\n\x1a\n" for name in z.namelist())
    pictures = load_reference_images(fsz)
    assert len(pictures) == n and all(img.shape[0] == img.shape[1] >= 100 for _, img in pictures)
    ident = build_identity(fsz, "test-template", model_dir=template_dir, provider="cpu")
    assert ident.faces == n  # a face found again in every picture, as roop-unleashed loads a set
    only = plan_from_work(work, cfg, identity=fsz)
    assert {truth[(c.source, c.shot)] for c in only.clips} == {"collins"}
    assert {c.id for c in only.clips} == {c.id for c in plan.clips if c.person == collins}
    from click.testing import CliRunner

    from facecut.cli import main

    res = CliRunner().invoke(main, ["faceset", "-w", str(work.root), f"person:{collins}", "-o", str(tmp_path / "b.fsz"),
                                    "--faces", "2"])
    assert res.exit_code == 0, res.output
    assert zipfile.ZipFile(tmp_path / "b.fsz").namelist() == ["0.png", "1.png"]
    with pytest.raises(ConfigError, match="no person:99"):
        write_faceset(work, "person:99", tmp_path / "x.fsz")
    assert not (tmp_path / "x.fsz").exists()


def test_people_groups_need_embeddings(analysed, tmp_path, media_dir):
    from click.testing import CliRunner

    from facecut.cli import main
    from facecut.export import write_faceset

    plan = plan_from_work(analysed, ScoreConfig())
    assert plan.people == [] and all(c.person is None for c in plan.clips)
    with pytest.raises(ConfigError, match="need an embedding model"):
        plan_from_work(analysed, ScoreConfig(), identity="person:1")
    work = WorkDir(tmp_path / "w")
    shutil.copytree(analysed.root, work.root)
    work.save_plan(plan)
    with pytest.raises(ConfigError, match="no people groups"):
        write_faceset(work, "person:1", tmp_path / "x.fsz")
    # `run --identity person:K` on a folder without groups: said before any analysis
    res = CliRunner().invoke(main, ["run", str(media_dir), "-o", str(tmp_path / "out"), "--identity", "person:1",
                                    "--no-dashboard"])
    assert res.exit_code == 2 and "people groups come from an earlier run" in res.output
    assert not list((tmp_path / "out" / "facecut-work" / "analysis").glob("*.fclog"))


def test_identity_without_embeddings_is_a_clear_error(analysed, tmp_path):
    one = tmp_path / "a.png"
    cv2.imwrite(str(one), face_crop("astronaut", 0.8))
    with pytest.raises(ConfigError, match="needs face embeddings.*'mtcnn'"):
        plan_from_work(analysed, ScoreConfig(provider="cpu"), identity=one)


def test_reference_pictures_image_folder_and_face_set(tmp_path):
    crops = [face_crop("hanks", 0.5), face_crop("hanks", 1.0), face_crop("t1_mid", 0.5)]
    folder = tmp_path / "set"
    folder.mkdir()
    for i, c in enumerate(crops):
        cv2.imwrite(str(folder / f"{i}.jpg"), c)
    (folder / "notes.txt").write_text("not a picture")
    (folder / "10.jpg").write_bytes(b"broken")  # skipped with a warning
    assert [n for n, _ in load_reference_images(folder)] == ["0.jpg", "1.jpg", "2.jpg"]
    fsz = write_fsz(tmp_path / "set.fsz", crops)
    got = load_reference_images(fsz)
    assert [n for n, _ in got] == ["0.png", "1.png", "2.png"] and got[0][1].shape == (256, 256, 3)
    assert np.array_equal(got[2][1], crops[2])  # PNG: lossless
    assert len(load_reference_images(folder / "1.jpg")) == 1
    with pytest.raises(ConfigError, match="does not exist"):
        load_reference_images(tmp_path / "nope.fsz")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="no readable image"):
        load_reference_images(empty)
