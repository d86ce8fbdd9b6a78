"""The machine a benchmark ran on, described the same way by every benchmark."""

from __future__ import annotations

import os
import platform


def cpu_model() -> str:
    """The processor's name (``/proc/cpuinfo`` where there is one)."""
    try:
        with open("/proc/cpuinfo") as fh:
            return next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine_summary(peak: float | None = None) -> str:
    """Processor and cores, with the measured fp32 matmul peak when one is given."""
    base = f"{cpu_model()}, {os.cpu_count()} cores"
    if peak is None:
        return base
    return f"{base}, fp32 matmul peak {peak / 1e9:.0f} GFLOP/s (best of torch, numpy, onnxruntime)"


def with_onnxruntime() -> str:
    """Processor, cores and the onnxruntime version (the one-line machine of the A/B scripts)."""
    import onnxruntime as ort

    return f"{machine_summary()}; onnxruntime {ort.__version__}"


def machine_record(peaks: dict[str, float]) -> dict:
    """The ``machine`` entry of a CPU benchmark's results from its measured fp32 matmul peaks (by library):
    the one-line summary, the best peak, every library's, and the Python version."""
    import platform

    peak = max(peaks.values())
    return {"summary": machine_summary(peak), "matmul_fp32_peak_flops": peak, "matmul_fp32_flops_by_library": peaks,
            "python": platform.python_version()}
