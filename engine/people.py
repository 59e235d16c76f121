"""People groups: the clips of a whole batch grouped by who their main face is.

Only for logs with embeddings (buffalo_l, or SCRFD with an ArcFace recogniser in
its folder). Each clip is represented by the L2-normalised mean embedding of its
main faces (the largest face of its tracks in each sample of its span); clips
whose representatives lie within ``people_threshold`` cosine distance of a
group's mean join it.

Grouping (deterministic): clips are taken in order of how many faces back them
(most first), each joins the nearest group within the threshold or starts one;
then every clip is assigned again to its nearest group mean, twice, so the
order of arrival does not decide the borders.

Stable ids: each group's mean is kept in plan.json (``Person.centroid``). A
re-score matches its new groups to the previous plan's (nearest first, within
the threshold) and keeps their ids; a group that matches none gets the next
free id, in order of first appearance (source order, then time). So ``person:3``
names the same person after a re-score with other gates.

Threshold. The default 0.6 is measured on the test recogniser (a template
matcher with ArcFace's interface, tools/tiny_onnx.build_template_arcface):
clips of one person lie within 0.031 of each other there, different people
0.747 and more apart (tests/test_score.py measures and prints both). For ArcFace (buffalo_l),
insightface's verification threshold is a cosine similarity of about 0.4
(distance 0.6); roop-unleashed calls faces within 0.65 "the same face".
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import numpy as np

from facecut.records import Person, PersonFace


@dataclass
class ClipFace:
    """What grouping needs of one clip: its representative embedding, how many
    faces back it, and the face to show for it."""

    clip: str  # clip id
    order: int  # position of the clip in the plan (first appearance)
    emb: np.ndarray  # (d,) L2-normalised
    weight: int  # faces averaged into emb
    seconds: float
    face: PersonFace | None = None
    face_quality: float = 0.0  # how good ``face`` is for showing (larger, more frontal)


def _normalised(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v)
    return v / n if n > 0 else v


def _group(items: list[ClipFace], threshold: float) -> list[int]:
    """Group index of each item (see the module doc)."""
    embs = np.stack([it.emb for it in items]).astype(np.float64)
    sums: list[np.ndarray] = []
    label = [-1] * len(items)
    for i in sorted(range(len(items)), key=lambda i: (-items[i].weight, items[i].order)):
        if sums:
            means = np.stack([_normalised(s) for s in sums])
            d = 1.0 - means @ embs[i]
            j = int(np.argmin(d))
            if d[j] <= threshold:
                sums[j] = sums[j] + embs[i] * items[i].weight
                label[i] = j
                continue
        sums.append(embs[i] * items[i].weight)
        label[i] = len(sums) - 1
    for _ in range(2):
        means = np.stack([_normalised(s) for s in sums])
        d = 1.0 - embs @ means.T
        new = [int(np.argmin(row)) if row.min() <= threshold else label[i] for i, row in enumerate(d)]
        used = sorted(set(new))
        remap = {g: n for n, g in enumerate(used)}
        label = [remap[g] for g in new]
        sums = [sum(embs[i] * items[i].weight for i in range(len(items)) if label[i] == g) for g in range(len(used))]
    return label


def _unseen(previous: list[Person], seen: set[int]) -> list[Person]:
    """Earlier people not seen this time (a filtered score, gates that drop their
    clips), listed without clips: their ids are never given to anyone else."""
    return [msgspec.structs.replace(p, clips=0, seconds=0.0) for p in previous if p.id not in seen]


def group_people(items: list[ClipFace], threshold: float, previous: list[Person]) -> tuple[dict[str, int], list[Person]]:
    """(clip id -> person id, the people) for the clips in ``items``; ids follow
    ``previous`` (the last plan's people) where the groups match."""
    if not items:
        return {}, _unseen(previous, set())
    label = _group(items, threshold)
    n = max(label) + 1
    members = [[it for it, g in zip(items, label) if g == k] for k in range(n)]
    means = [_normalised(sum(it.emb * it.weight for it in m)) for m in members]
    ids: dict[int, int] = {}
    prev = [p for p in previous if len(p.centroid) == len(means[0])]
    if prev:
        pm = np.array([p.centroid for p in prev], np.float64)
        pm /= np.maximum(np.linalg.norm(pm, axis=1, keepdims=True), 1e-12)
        d = 1.0 - np.stack(means) @ pm.T
        taken = set()
        for g, j in sorted(np.ndindex(d.shape), key=lambda gj: d[gj]):
            if d[g, j] > threshold:
                break
            if g not in ids and j not in taken:
                ids[g] = prev[j].id
                taken.add(j)
    nxt = max([p.id for p in previous], default=0) + 1
    for g in sorted(range(n), key=lambda g: min(it.order for it in members[g])):
        if g not in ids:
            ids[g] = nxt
            nxt += 1
    people = []
    for g in range(n):
        shown = max((it for it in members[g] if it.face is not None), key=lambda it: it.face_quality, default=None)
        people.append(Person(
            id=ids[g], clips=len(members[g]), seconds=round(sum(it.seconds for it in members[g]), 3),
            face=shown.face if shown else None, centroid=[round(float(x), 5) for x in means[g]],
        ))
    people += _unseen(previous, set(ids.values()))
    people.sort(key=lambda p: p.id)
    return {it.clip: ids[g] for it, g in zip(items, label)}, people


@dataclass(frozen=True)
class PersonFilter:
    """``--identity person:K``: keeps the tracks whose mean embedding is nearest
    person K's group mean among all groups, and within the threshold (the
    interface of identity.Identity)."""

    path: str  # "person:K"
    reference: np.ndarray
    threshold: float
    faces: int  # clips in the group
    others: np.ndarray | None = None  # (n, d) the other groups' means

    def accepts(self, embs: np.ndarray | None, prefer: np.ndarray | None = None) -> bool:
        if embs is None or not len(embs) or embs.shape[1] != len(self.reference):
            return False
        have = np.isfinite(embs).all(axis=1)
        if prefer is not None and (have & prefer).any():
            have &= prefer
        if not have.any():
            return False
        mean = _normalised(embs[have].astype(np.float64).mean(axis=0))
        d = float(1.0 - mean @ self.reference)
        if self.others is not None and len(self.others) and d > float((1.0 - self.others @ mean).min()):
            return False  # nearer another group
        return d <= self.threshold
