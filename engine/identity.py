"""Identity filter: keep only the tracks of one person.

The reference is an image, a folder of images, or a roop-unleashed face set
(``.fsz``: a zip of face crops ``0.png, 1.png, ...``). Every reference picture is
run through the same face model that wrote the logs (detection, alignment,
recognition), its largest face embedded; the L2-normalised embeddings are
averaged into one reference vector. A track is accepted when the cosine
distance (``1 - cosine similarity``) between the mean embedding of its passing
detections and the reference is at most the threshold. The default, 0.65
(similarity >= 0.35), sits where ArcFace (buffalo_l) separates one person's
pictures from other people's; roop-unleashed measures faces the same way.

A model without embeddings (MTCNN) makes ``--identity`` a :class:`ConfigError`,
never a silent pass.
"""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facecut.errors import ConfigError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
REFERENCE_MIN_FACE = 24.0  # px: reference crops can be small; find faces down to this


@dataclass(frozen=True)
class Identity:
    """The reference person: ``reference`` (d,) float32, L2-normalised mean of
    ``faces`` reference embeddings from ``path``; ``threshold`` most cosine distance."""

    path: str
    reference: np.ndarray
    threshold: float
    faces: int

    def distance(self, embs: np.ndarray | None, prefer: np.ndarray | None = None) -> float | None:
        """Cosine distance of the mean of ``embs`` (n, d; NaN rows ignored) to the
        reference; only rows where ``prefer`` is true when any of them has an
        embedding. None when no row has one."""
        if embs is None or not len(embs):
            return None
        if embs.shape[1] != len(self.reference):
            raise ConfigError(
                f"--identity: the logs hold {embs.shape[1]}-d embeddings, the reference "
                f"{len(self.reference)}-d: not the same recognition model"
            )
        have = np.isfinite(embs).all(axis=1)
        if prefer is not None and (have & prefer).any():
            have &= prefer
        if not have.any():
            return None
        mean = embs[have].mean(axis=0)
        norm = float(np.linalg.norm(mean))
        if norm < 1e-9:
            return 1.0
        return float(1.0 - mean @ self.reference / norm)

    def accepts(self, embs: np.ndarray | None, prefer: np.ndarray | None = None) -> bool:
        """True when the track's mean embedding is within the threshold; a track
        without any embedding is not accepted (it cannot be confirmed)."""
        d = self.distance(embs, prefer)
        return d is not None and d <= self.threshold


# --------------------------------------------------------------------------- reference pictures


def _numeric_key(name: str):
    stem = Path(name).stem
    return (0, int(stem), name) if stem.isdigit() else (1, 0, name)


# A face set is untrusted input (downloaded from anywhere): bounded before anything
# is inflated or decoded (zip bombs, decompression-bomb images).
MAX_MEMBERS = 2000
MAX_MEMBER_BYTES = 16 << 20  # one face crop, uncompressed
MAX_TOTAL_BYTES = 256 << 20  # the whole set, uncompressed
MAX_PIXELS = 40_000_000  # one picture, decoded


def _image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG or JPEG header without decoding; None if unknown."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                return None
            marker = data[i + 1]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
                return int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
            i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


def _decode(data: bytes, name: str) -> np.ndarray | None:
    size = _image_size(data)
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        log.warning("identity: %s is %dx%d pixels, larger than any face crop; skipped", name, *size)
        return None
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        log.warning("identity: cannot decode %s; skipped", name)
    return img


def load_reference_images(path: str | Path) -> list[tuple[str, np.ndarray]]:
    """(name, BGR image) of every picture at ``path``: an image, a folder of images
    (not recursive), or a ``.fsz`` / zip face set (members in numeric order)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigError(
            f"--identity: {p} does not exist (expected an image, a folder of images or a .fsz face set)"
        )
    out: list[tuple[str, np.ndarray]] = []
    if p.is_dir():
        files = [f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS]
        files.sort(key=lambda f: _numeric_key(f.name))
        for f in files:
            img = _decode(f.read_bytes(), str(f))
            if img is not None:
                out.append((f.name, img))
    elif p.suffix.lower() == ".fsz" or zipfile.is_zipfile(p):
        try:
            with zipfile.ZipFile(p) as z:
                names = [n for n in z.namelist() if Path(n).suffix.lower() in IMAGE_EXTENSIONS]
                if len(names) > MAX_MEMBERS:
                    raise ConfigError(f"--identity: {p} holds {len(names)} pictures (at most {MAX_MEMBERS})")
                names.sort(key=lambda n: _numeric_key(Path(n).name))
                total = 0
                for n in names:
                    with z.open(n) as member:  # read with a limit: the sizes in a zip can lie
                        data = member.read(MAX_MEMBER_BYTES + 1)
                    total += len(data)
                    if len(data) > MAX_MEMBER_BYTES or total > MAX_TOTAL_BYTES:
                        raise ConfigError(
                            f"--identity: {p} inflates past {MAX_MEMBER_BYTES >> 20} MiB per picture or "
                            f"{MAX_TOTAL_BYTES >> 20} MiB in all (at {n}): not a face set (zip bomb?)")
                    img = _decode(data, f"{p}:{n}")
                    if img is not None:
                        out.append((n, img))
        except (zipfile.BadZipFile, OSError) as ex:
            raise ConfigError(f"--identity: {p} is not a readable face set (.fsz zip): {ex}") from ex
    else:
        img = _decode(p.read_bytes(), str(p))
        if img is not None:
            out.append((p.name, img))
    if not out:
        raise ConfigError(
            f"--identity: no readable image in {p} (looked for {', '.join(IMAGE_EXTENSIONS)})"
        )
    return out


def _largest_face_embedding(model, img: np.ndarray) -> np.ndarray | None:
    """The embedding of the largest face in ``img``; a tight crop is padded by half
    its size on each side and tried again (detectors need some context)."""
    from facecut.records import embedding_from_bytes

    for pad in (0.0, 0.5):
        frame = img
        if pad:
            h, w = img.shape[:2]
            py, px = int(h * pad), int(w * pad)
            frame = cv2.copyMakeBorder(img, py, py, px, px, cv2.BORDER_CONSTANT, value=0)
        faces = [f for f in model.detect([np.ascontiguousarray(frame)], [1.0])[0] if f.emb]
        if faces:
            best = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
            e = embedding_from_bytes(best.emb)
            return e / max(float(np.linalg.norm(e)), 1e-12)
    return None


def build_identity(
    path: str | Path,
    model: str,
    *,
    threshold: float = 0.65,
    model_dir: str | Path | None = None,
    provider: str = "auto",
) -> Identity:
    """Embed the reference pictures at ``path`` with the face model ``model`` (the
    one named in the logs) and average them."""
    from facecut.models import backends, load_model

    known = backends()
    cls = known.get(model)
    if not model:
        raise ConfigError("--identity: no analysed video to compare against")
    if cls is None:
        raise ConfigError(
            f"--identity: the logs were written by model {model!r}, which this installation "
            f"does not have (known: {', '.join(known)})"
        )
    if not cls.has_embeddings:
        with_emb = [n for n, c in known.items() if c.has_embeddings] or ["buffalo_l"]
        raise ConfigError(
            f"--identity needs face embeddings, and the logs were written by {model!r}, which has "
            f"none. Analyse with a recognition model ({', '.join(with_emb)}: `facecut analyze "
            f"--model {with_emb[0]}` in a new work folder) or drop --identity."
        )
    images = load_reference_images(path)
    embs, missing = [], []
    with load_model(model, model_dir=None if model_dir is None else Path(model_dir), provider=provider,
                    min_face=REFERENCE_MIN_FACE) as m:
        if not m.has_embeddings:
            raise ConfigError(f"--identity: model {model!r} was loaded without its recognition model")
        for name, img in images:
            e = _largest_face_embedding(m, img)
            if e is None:
                missing.append(name)
            else:
                embs.append(e)
    if missing:
        log.warning("identity: no face found in %d reference picture(s): %s",
                    len(missing), ", ".join(missing[:5]))
    if not embs:
        raise ConfigError(f"--identity: no face found in any picture of {path}")
    if len({len(e) for e in embs}) > 1:
        raise ConfigError("--identity: reference embeddings of different sizes")
    mean = np.mean(embs, axis=0)
    mean /= max(float(np.linalg.norm(mean)), 1e-12)
    return Identity(path=str(path), reference=mean.astype(np.float32), threshold=float(threshold),
                    faces=len(embs))

