"""Denormals flushed to zero on the threads that run the graph on the CPU (runtime/execution/denormals.py)."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest

from tommer.runtime.execution import denormals

needs_modes = pytest.mark.skipif(not denormals.supported(), reason="floating-point modes cannot be set here")


def subnormal_survives() -> bool:
    """Whether this thread keeps subnormal floats (the CPU's default)."""
    tiny = np.array([1e-39], dtype=np.float32)
    return bool((tiny * np.float32(1.0))[0] != 0.0)


@needs_modes
def test_flushed_sets_the_modes_inside_the_block_and_restores_them():
    assert subnormal_survives()
    with denormals.flushed() as done:
        assert done and not subnormal_survives()
        with denormals.flushed():  # nested: the inner block restores the outer block's modes
            assert not subnormal_survives()
        assert not subnormal_survives()
    assert subnormal_survives()
    with pytest.raises(KeyError):  # restored on an error too
        with denormals.flushed():
            raise KeyError("x")
    assert subnormal_survives()


@needs_modes
def test_the_cpu_runner_runs_the_graph_flushed_and_leaves_the_thread_as_it_was(tiny_bundle):
    from tommer.runtime.annotator import Annotator
    from tommer.runtime.execution.session import GraphRunner

    seen = []

    class Spy:
        def __init__(self, session):
            self.session = session

        def __getattr__(self, name):
            return getattr(self.session, name)

        def run_with_iobinding(self, *args):
            seen.append(subnormal_survives())
            return self.session.run_with_iobinding(*args)

        def run(self, *args):
            seen.append(subnormal_survives())
            return self.session.run(*args)

    annotator = Annotator.from_bundle(tiny_bundle, provider="cpu")
    ids = np.random.default_rng(0).integers(3, 300, size=(2, 12))
    mask = np.ones_like(ids)
    for io_binding in (True, False):
        runner = GraphRunner(Spy(annotator.session), "cpu", io_binding=io_binding)
        band = runner.run(ids, mask)
        assert band.shape[:2] == ids.shape
        assert subnormal_survives()
    assert seen == [False, False]


@needs_modes
def test_stream_threads_run_flushed(tiny_bundle):
    from tommer.exporter.random_models import CORPUS
    from tommer.runtime.annotator import Annotator
    from tommer.runtime.core.chunk import Chunk
    from tommer.runtime.execution.session import GraphRunner

    states = []

    class Recording(GraphRunner):
        def _run(self, ids, mask):
            states.append((threading.current_thread().name, subnormal_survives()))
            return super()._run(ids, mask)

    annotator = Annotator.from_bundle(tiny_bundle, provider="cpu", batch_tokens=64, streams=2)
    annotator.runners = [Recording(annotator.session, "cpu") for _ in range(2)]
    annotator.process(Chunk(texts=CORPUS * 4))
    assert len(states) > 2 and not any(survives for _, survives in states)
    assert any(name.startswith("tommer-stream") for name, _ in states)


SURVIVES = "survives = lambda: bool((np.array([1e-39], np.float32) * np.float32(1))[0] != 0)\n"


@needs_modes
@pytest.mark.parametrize("opener", ["tommer", "onnxruntime"])
def test_opening_a_session_keeps_the_callers_modes(tiny_bundle, opener):
    """onnxruntime's first session of a process sets FTZ/DAZ on the creating thread for good
    when its options ask for it (ours do, for its own threads): tommer restores the caller's.
    The ``onnxruntime`` case shows what the test guards against."""
    model = str(tiny_bundle / "model.onnx")
    if opener == "tommer":
        open_it = (f"from tommer.runtime.execution.session import open_session\nsession, _ = open_session({model!r}, 'cpu')\n"
                   "assert session.get_session_options().get_session_config_entry('session.set_denormal_as_zero') == '1'\n")
    else:
        open_it = ("options = ort.SessionOptions()\noptions.add_session_config_entry('session.set_denormal_as_zero', '1')\n"
                   f"session = ort.InferenceSession({model!r}, options, providers=['CPUExecutionProvider'])\n")
    code = "import numpy as np, onnxruntime as ort\n" + SURVIVES + "assert survives()\n" + open_it + "print(survives())\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ("True" if opener == "tommer" else "False")
