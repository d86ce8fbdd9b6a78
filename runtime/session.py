"""ONNX Runtime sessions for a bundle's graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from .errors import InputError

PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
AUTO_ORDER = ("tensorrt", "cuda", "cpu")


def pick_provider(provider: str) -> str:
    """Resolve ``auto|cpu|cuda|tensorrt`` to an installed provider name; errors if missing."""
    available = ort.get_available_providers()
    if provider == "auto":
        for name in AUTO_ORDER:
            if PROVIDERS[name] in available:
                return name
    if provider not in PROVIDERS:
        raise InputError(f"unknown provider {provider!r}; expected auto, {', '.join(PROVIDERS)}")
    if PROVIDERS[provider] not in available:
        raise InputError(
            f"provider {provider!r} ({PROVIDERS[provider]}) is not available in this onnxruntime "
            f"(available: {', '.join(available)}); install tommer[gpu] for cuda/tensorrt"
        )
    return provider


def create_session(model_path: str | Path, provider: str = "cpu", threads: int = 0,
                   low_memory: bool = False) -> ort.InferenceSession:
    """An inference session on ``provider`` (resolved by ``pick_provider``).

    ``low_memory`` skips the pre-packed copies of the weights (for a few small runs).
    """
    name = pick_provider(provider)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if low_memory:
        options.add_session_config_entry("session.disable_prepacking", "1")
    if threads > 0:
        options.intra_op_num_threads = threads
    providers = [PROVIDERS[name]] + ([PROVIDERS["cpu"]] if name != "cpu" else [])
    return ort.InferenceSession(str(model_path), sess_options=options, providers=providers)


def run_band(session: ort.InferenceSession, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """Span probabilities (batch, seq, band_width) as fp32."""
    (band,) = session.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})
    return np.asarray(band, dtype=np.float32)
