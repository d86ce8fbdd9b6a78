"""Execution profiles: the provider chain, the bundle's allowed providers, and no silent CPU fallback."""

from __future__ import annotations

import onnxruntime as ort
import pytest

from tommer.runtime.errors import InputError
from tommer.runtime.execution import session as session_module
from tommer.runtime.execution.providers import (
    ORT_NAMES,
    Settings,
    candidates,
    profile,
    provider_options,
    tensorrt_profiles,
)

ALL = [ORT_NAMES["tensorrt"], ORT_NAMES["cuda"], ORT_NAMES["cpu"]]


def test_chains_and_what_each_bundle_may_run_on():
    assert [name for name, _ in profile("tensorrt").providers()] == ALL
    assert [name for name, _ in profile("cuda").providers()] == ALL[1:]
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


def test_tensorrt_only_for_bundles_that_passed_the_parser_check():
    assert candidates("auto", ALL, "fp32", tensorrt_ready=False) == ["cuda", "cpu"]
    assert candidates("auto", ALL, "bf16", tensorrt_ready=False) == ["cuda"]
    with pytest.raises(InputError, match="exported for onnxruntime.*--target tensorrt"):
        candidates("tensorrt", ALL, "fp32", tensorrt_ready=False)
    assert candidates("tensorrt", ALL, "fp16", tensorrt_ready=True) == ["tensorrt"]


def test_provider_options_caches_precision_and_profiles(tmp_path):
    from tommer.runtime.core.batching import ShapeBuckets

    buckets = ShapeBuckets.ladder(2048, 65536)
    profiles = tensorrt_profiles(buckets.shapes(), ("input_ids", "attention_mask"))
    trt = provider_options("tensorrt", Settings(cache_dir=tmp_path, bundle_id="abc", cuda_graphs=True,
                                                profiles=profiles))
    assert trt["trt_engine_cache_path"] == trt["trt_timing_cache_path"] == str(tmp_path / "tensorrt" / "abc")
    assert trt["trt_engine_cache_enable"] == trt["trt_timing_cache_enable"] == trt["trt_cuda_graph_enable"] == "1"
    assert trt["trt_fp16_enable"] == trt["trt_bf16_enable"] == "0"  # precision lives in the graph
    parsed = {}
    for key in ("trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes"):
        entries = [e.split(":") for e in trt[key].split(",")]
        assert [n for n, _ in entries[:2]] == ["input_ids", "attention_mask"]
        parsed[key] = [tuple(map(int, dims.split("x"))) for n, dims in entries if n == "input_ids"]
    lows, opts, highs = parsed.values()
    assert len(lows) == len(opts) == len(highs) == len(profiles) > 1
    for rows, width in buckets.shapes():  # every bucket shape, and every partial batch below it, has a profile
        for r in (1, rows):
            assert any(lo[0] <= r <= hi[0] and lo[1] <= width <= hi[1] for lo, hi in zip(lows, highs)), (r, width)
    for lo, opt, hi in zip(lows, opts, highs):
        assert lo[0] <= opt[0] <= hi[0] and lo[1] <= opt[1] <= hi[1]
    cuda = provider_options("cuda", Settings())
    assert cuda["use_tf32"] == "0" and cuda["enable_cuda_graph"] == "0"
    assert provider_options("cpu", Settings()) == {}


def damaged_copy(bundle, tmp_path):
    """A copy of ``bundle`` whose graph file is cut in half, re-hashed so the bundle's own checks pass
    (what a bad copy made before hashing, or an onnxruntime that cannot read the graph, looks like)."""
    import shutil

    from tommer.runtime.bundle import read_manifest, write_manifest

    bad = tmp_path / "damaged"
    shutil.copytree(bundle, bad)
    data = (bad / "model.onnx").read_bytes()
    (bad / "model.onnx").write_bytes(data[: len(data) // 2])
    write_manifest(bad, read_manifest(bad, verify=False))
    return bad


def corpus_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": [0, 1], "text": ["John lives in Paris.", "Marie Curie"]}), src)
    return src


def test_a_graph_onnxruntime_cannot_load_is_a_bundle_error_with_what_to_do(tiny_bundle, tmp_path):
    import subprocess
    import sys

    from tommer.runtime.annotator import Annotator
    from tommer.runtime.errors import BundleError

    bad = damaged_copy(tiny_bundle, tmp_path)
    for provider in ("auto", "cpu"):
        with pytest.raises(BundleError, match=rf"{bad / 'model.onnx'}: onnxruntime {ort.__version__} cannot load "
                                              r"this graph \(InvalidProtobuf: .*\): re-export the bundle with "
                                              r"tommer-export"):
            Annotator.from_bundle(bad, provider=provider)
    out = subprocess.run([sys.executable, "-m", "tommer.runtime.cli.annotate", str(corpus_file(tmp_path)), "--model", str(bad),
                          "--output", str(tmp_path / "out.parquet")], capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "cannot load this graph" in out.stderr and "tommer-export" in out.stderr
    assert not (tmp_path / "out.parquet").exists()
    from tommer.runtime.execution.session import graph_load_error

    older = graph_load_error(bad / "model.onnx", ort.capi.onnxruntime_pybind11_state.Fail("opset 99"), "9.0.0")
    assert "exported and validated with onnxruntime 9.0.0: install that version or a newer one" in str(older)


class FailingSession:
    """A session whose runs fail the way onnxruntime's do."""

    def __init__(self, exc):
        self.exc = exc

    def run(self, *_args, **_kwargs):
        raise self.exc


def test_onnxruntime_errors_while_running_say_what_to_do(tiny_bundle):
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    from tommer.runtime.annotator import Annotator
    from tommer.runtime.errors import GraphRunError
    from tommer.runtime.execution.session import GraphRunner

    annotator = Annotator.from_bundle(tiny_bundle, provider="cpu")
    oom = state.RuntimeException("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while "
                                 "running MatMul node. Failed to allocate memory for requested buffer of size 1234")
    annotator.runners = [GraphRunner(FailingSession(oom), "cpu", io_binding=False)]
    with pytest.raises(GraphRunError, match=r"out of memory running a batch of 1 x \d+ tokens on the cpu provider.*"
                                            r"lower --batch-tokens \(now 512\).*--chunk-rows.*--max-tokens") as info:
        annotator.annotate(["John lives in Paris."])
    assert info.value.__cause__ is oom
    annotator.runners = [GraphRunner(FailingSession(state.InvalidArgument("Got invalid dimensions for input")), "cpu",
                                    io_binding=False)]
    with pytest.raises(GraphRunError, match=r"onnxruntime failed running a batch .*InvalidArgument: Got invalid "
                                            r"dimensions.*--provider cpu"):
        annotator.annotate(["John lives in Paris."])
    annotator.runners = [GraphRunner(FailingSession(ValueError("a tommer bug")), "cpu", io_binding=False)]
    with pytest.raises(ValueError, match="a tommer bug"):  # not onnxruntime's: not dressed up
        annotator.annotate(["John lives in Paris."])


def test_out_of_memory_reaches_the_cli_as_a_message(tiny_bundle, tmp_path):
    """Through the pipeline's threads to tommer-annotate: exit 2, the options to lower, no traceback."""
    import subprocess
    import sys

    code = ("import sys; from onnxruntime.capi import onnxruntime_pybind11_state as state\n"
            "from tommer.runtime.execution import session\n"
            "def run(self, ids, mask): raise state.RuntimeException('Failed to allocate memory for requested buffer')\n"
            "session.GraphRunner.run = run\n"
            "from tommer.runtime.cli.annotate import main\n"
            f"sys.argv = ['tommer-annotate', {str(corpus_file(tmp_path))!r}, '--model', {str(tiny_bundle)!r}, "
            f"'--output', {str(tmp_path / 'out.parquet')!r}, '--quiet']\n"
            "main()\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "error: out of memory running a batch" in out.stderr and "--batch-tokens" in out.stderr
    assert "--chunk-rows" in out.stderr


def test_each_provider_tried_gets_its_own_thread_split(tiny_bundle, monkeypatch):
    """On the CPU, --threads is split among the streams; a GPU session keeps --threads as asked
    (its few CPU nodes), whichever provider ``auto`` ends up with."""
    from tommer.runtime import options
    from tommer.runtime.annotator import Annotator

    tried = []

    class Recording(FallbackSession):
        def __init__(self, path, sess_options=None, providers=None):
            tried.append((providers[0][0] if isinstance(providers[0], tuple) else providers[0],
                          sess_options.intra_op_num_threads))
            super().__init__(path, sess_options=sess_options, providers=providers)

    monkeypatch.setattr(options, "usable_cores", lambda: 4)
    monkeypatch.setattr(session_module.ort, "get_available_providers", lambda: list(ALL))
    monkeypatch.setattr(session_module.ort, "InferenceSession", Recording)
    annotator = Annotator.from_bundle(tiny_bundle, threads=0, streams=0)  # auto: CUDA falls back, CPU loads
    assert [name for name, _ in tried] == ALL[1:]  # (not TensorRT: the tiny bundle targets onnxruntime)
    assert [threads for _, threads in tried] == [0, 1]  # GPU: onnxruntime's default; CPU: 4 threads / 4 streams
    assert annotator.provider == "cpu" and annotator.options.streams == 4
    tried.clear()
    Annotator.from_bundle(tiny_bundle, threads=6, streams=2)
    assert [threads for _, threads in tried] == [6, 3]


def test_a_pickled_annotator_resolves_automatic_options_where_it_is_loaded(tiny_bundle, monkeypatch):
    import pickle

    from tommer.runtime import options
    from tommer.runtime.annotator import Annotator

    monkeypatch.setattr(options, "usable_cores", lambda: 2)
    annotator = Annotator.from_bundle(tiny_bundle, provider="cpu")
    fixed = Annotator.from_bundle(tiny_bundle, provider="cpu", streams=2, batch_tokens=300)
    assert annotator.options.streams == 2 and len(annotator.runners) == 2
    data, data_fixed = pickle.dumps(annotator), pickle.dumps(fixed)
    monkeypatch.setattr(options, "usable_cores", lambda: 6)  # a bigger worker
    copy, copy_fixed = pickle.loads(data), pickle.loads(data_fixed)
    assert copy.options.streams == 6 and len(copy.runners) == 6
    assert copy.options.batch_tokens == annotator.options.batch_tokens
    assert copy_fixed.options.streams == 2 and copy_fixed.options.batch_tokens == 300  # what was asked is kept


def test_pip_installed_cuda_libraries_are_preloaded_once_before_a_gpu_session(tiny_bundle, monkeypatch):
    """onnxruntime-gpu's CUDA provider has no run path to the nvidia-* wheels: tommer calls
    ``onnxruntime.preload_dlls`` before the first GPU session, never for a CPU-only one."""
    calls = []
    monkeypatch.setattr(session_module, "_PRELOADED", [])
    monkeypatch.setattr(session_module.ort, "preload_dlls", lambda **kw: calls.append(kw), raising=False)
    model = tiny_bundle / "model.onnx"
    session_module.open_session(model, "cpu")
    assert calls == [], "a CPU session loads no CUDA library"
    monkeypatch.setattr(session_module.ort, "get_available_providers", lambda: list(ALL))
    monkeypatch.setattr(session_module.ort, "InferenceSession", FallbackSession)
    for _ in range(2):
        session, used = session_module.open_session(model, "auto")
        assert used == "cpu"
    assert calls == [{"cuda": True, "cudnn": True, "msvc": False}], "once per process, before the first GPU try"
