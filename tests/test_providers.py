"""Execution profiles: the provider chain, the bundle's allowed providers, and no silent CPU fallback."""

from __future__ import annotations

import onnxruntime as ort
import pytest

from tommer.runtime import session as session_module
from tommer.runtime.errors import InputError
from tommer.runtime.providers import ORT_NAMES, candidates, profile

ALL = [ORT_NAMES["tensorrt"], ORT_NAMES["cuda"], ORT_NAMES["cpu"]]


def test_chains_and_what_each_bundle_may_run_on():
    assert profile("tensorrt").providers() == ALL
    assert profile("cuda").providers() == ALL[1:]
    assert candidates("auto", ALL, "fp32") == ["tensorrt", "cuda", "cpu"]
    assert candidates("auto", ALL, "bf16") == ["tensorrt", "cuda"]
    assert candidates("auto", ALL, "int8") == ["cpu"]
    assert candidates("auto", [ORT_NAMES["cpu"]], "fp32") == ["cpu"]
    with pytest.raises(InputError, match="no installed onnxruntime provider runs a fp16 bundle.*cuDNN"):
        candidates("auto", [ORT_NAMES["cpu"]], "fp16")
    with pytest.raises(InputError, match="int8 bundle does not run on the cuda provider"):
        candidates("cuda", ALL, "int8")
    with pytest.raises(InputError, match="bf16 bundle does not run on the cpu provider"):
        candidates("cpu", ALL, "bf16")
    with pytest.raises(InputError, match="'cuda'.*not available"):
        candidates("cuda", [ORT_NAMES["cpu"]], "fp32")
    with pytest.raises(InputError, match="unknown provider 'gpu'"):
        candidates("gpu", ALL, "fp32")


class FallbackSession(ort.InferenceSession):
    """What onnxruntime does when a GPU provider's libraries are missing: it runs on the CPU anyway."""

    def __init__(self, path, sess_options=None, providers=None):
        super().__init__(path, sess_options=sess_options, providers=["CPUExecutionProvider"])


def test_a_gpu_provider_that_does_not_load_is_never_a_silent_cpu_run(tiny_bundle, monkeypatch):
    from tommer.runtime.annotator import Annotator

    monkeypatch.setattr(session_module.ort, "get_available_providers", lambda: list(ALL))
    monkeypatch.setattr(session_module.ort, "InferenceSession", FallbackSession)
    model = tiny_bundle / "model.onnx"
    for name in ("tensorrt", "cuda"):
        with pytest.raises(InputError, match=f"the {name} provider .* did not load.*fell back to CPUExecutionProvider"):
            session_module.open_session(model, name)
    session, used = session_module.open_session(model, "auto")
    assert used == "cpu" and session.get_providers() == ["CPUExecutionProvider"]
    annotator = Annotator.from_bundle(tiny_bundle)  # auto: the summary and the batch budget follow what loaded
    assert annotator.provider == "cpu" and annotator.options.batch_tokens == 512
    with pytest.raises(InputError, match="cuda provider .* did not load"):
        Annotator.from_bundle(tiny_bundle, provider="cuda")
