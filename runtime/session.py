"""ONNX Runtime sessions for a bundle's graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from .errors import InputError
from .providers import candidates, check_loaded, profile

def open_session(model_path: str | Path, provider: str = "auto", threads: int = 0, low_memory: bool = False,
                 kind: str | None = None) -> tuple[ort.InferenceSession, str]:
    """A session on ``provider`` (``auto``: the first of tensorrt, cuda, cpu that really loads), and its name.

    ``kind`` (``fp32``, ``fp16``, ``bf16``, ``int8``; from the bundle's manifest) restricts the
    providers to those the graph suits. After creation the session's providers are checked:
    a named GPU provider that did not load raises ``InputError`` saying why; ``auto`` moves on
    to the next provider. ``low_memory`` skips the pre-packed copies of the weights.
    """
    names = candidates(provider, ort.get_available_providers(), kind)
    failures = []
    for name in names:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if low_memory:
            options.add_session_config_entry("session.disable_prepacking", "1")
        if threads > 0:
            options.intra_op_num_threads = threads
        try:
            session = ort.InferenceSession(str(model_path), sess_options=options, providers=profile(name).providers())
            check_loaded(name, session.get_providers())
            return session, name
        except InputError as exc:
            if provider != "auto":
                raise
            failures.append(str(exc))
        except Exception as exc:  # onnxruntime raises its own types for a provider that fails to start
            if provider != "auto" or name == "cpu":
                raise InputError(f"{model_path}: onnxruntime could not create a {name} session: {exc}") from exc
            failures.append(f"{name}: {exc}")
    raise InputError("no provider could run the graph:\n" + "\n".join(f"  - {f}" for f in failures))


def create_session(model_path: str | Path, provider: str = "cpu", threads: int = 0,
                   low_memory: bool = False) -> ort.InferenceSession:
    """An inference session on ``provider`` (see ``open_session``)."""
    return open_session(model_path, provider, threads, low_memory)[0]


def run_band(session: ort.InferenceSession, input_ids: np.ndarray, attention_mask: np.ndarray,
             run_options: ort.RunOptions | None = None) -> np.ndarray:
    """Span probabilities (batch, seq, band_width) as fp32.

    ``run_options.terminate = True``, set from another thread, stops a run in flight.
    """
    (band,) = session.run(None, {"input_ids": input_ids, "attention_mask": attention_mask}, run_options)
    return np.asarray(band, dtype=np.float32)
