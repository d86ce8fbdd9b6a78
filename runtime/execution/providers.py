"""Execution profiles as data: which onnxruntime providers a run asks for, and proof that it got them.

``get_available_providers()`` lists what the installed onnxruntime was *built* with, not
what can load: an onnxruntime-gpu install lists ``TensorrtExecutionProvider`` even when
the TensorRT libraries are absent, and a session asked for ``[TensorRT, CPU]`` then runs on
the CPU without a word. So every session is checked after creation against what was asked
(``session.get_providers()``): a GPU provider that did not load is an error that says why
and how to fix it, never a silent CPU run; ``auto`` takes the first profile that really
loads. The bundle's manifest decides which profiles it may use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError

ORT_NAMES = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}
AUTO_ORDER = ("tensorrt", "cuda", "cpu")
# rows per chunk (the pool length-sorted batches are cut from): GPU budgets of 65,536 tokens need
# a large pool to batch texts of like lengths (benchmarks/results/buckets.md)

# Which graphs a provider runs well (from the manifest's dtype and quantization): the CPU
# provider computes fp16 through fp32 and has no bf16 kernels; int8 graphs (MatMulIntegerToFloat) are
# the CPU provider's.
RUNS_ON = {"fp32": ("tensorrt", "cuda", "cpu"), "fp16": ("tensorrt", "cuda"), "bf16": ("tensorrt", "cuda"),
           "int8": ("cpu",)}

HOW_TO_FIX = {
    "cuda": "the CUDA provider needs onnxruntime-gpu (pip install 'tommer[gpu]' and pip uninstall onnxruntime), a "
            "CUDA driver, and the CUDA runtime, cuBLAS and cuDNN 9 libraries of the CUDA major version that "
            "onnxruntime-gpu was built for (13 for onnxruntime-gpu 1.31 from PyPI) on the library path: the "
            "nvidia-* pip packages of a torch built for that CUDA have them (onnxruntime.preload_dlls() finds them)",
    "cpu": "the CPU provider comes with every onnxruntime",
    "tensorrt": "the TensorRT provider needs everything the CUDA provider needs plus the TensorRT libraries "
                "(libnvinfer) on the library path; use --provider cuda to run without TensorRT",
}


def default_cache_dir() -> Path:
    """``$TOMMER_CACHE``, else ``$XDG_CACHE_HOME/tommer``, else ``~/.cache/tommer``."""
    if os.environ.get("TOMMER_CACHE"):
        return Path(os.environ["TOMMER_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tommer"


@dataclass(frozen=True)
class Settings:
    """What the providers' options are made from (one run's choices)."""

    cache_dir: Path | None = None  # TensorRT engines and timing cache: <cache_dir>/tensorrt/<bundle id>
    bundle_id: str = "bundle"
    cuda_graphs: bool = False
    tf32: bool = False  # fp32 bundles promise fp32 maths: TF32 matmuls stay off unless asked
    device_id: int = 0
    profiles: tuple[tuple[str, str, str], ...] = field(default_factory=tuple)  # TensorRT (min, opt, max) shapes


def provider_options(name: str, settings: Settings) -> dict[str, str]:
    """onnxruntime's options for one provider of a chain."""
    if name == "cuda":
        return {"device_id": str(settings.device_id), "use_tf32": "1" if settings.tf32 else "0",
                "enable_cuda_graph": "1" if settings.cuda_graphs else "0"}
    if name == "tensorrt":
        cache = (settings.cache_dir or default_cache_dir()) / "tensorrt" / settings.bundle_id
        options = {"device_id": str(settings.device_id), "trt_engine_cache_enable": "1",
                   "trt_engine_cache_path": str(cache), "trt_timing_cache_enable": "1",
                   "trt_timing_cache_path": str(cache), "trt_cuda_graph_enable": "1" if settings.cuda_graphs else "0",
                   # precision is written in the graph (fp16/bf16 bundles); never let TensorRT lower fp32 on its own
                   "trt_fp16_enable": "0", "trt_bf16_enable": "0"}
        if settings.profiles:
            for key, shapes in zip(("trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes"),
                                   zip(*settings.profiles)):
                options[key] = ",".join(shapes)
        return options
    return {}


@dataclass(frozen=True)
class Profile:
    """One execution profile: the provider chain handed to onnxruntime."""

    name: str
    chain: tuple[str, ...]

    def providers(self, settings: Settings | None = None) -> list[tuple[str, dict[str, str]]]:
        settings = settings or Settings()
        return [(ORT_NAMES[p], provider_options(p, settings)) for p in self.chain]


def tensorrt_profiles(shapes: list[tuple[int, int]], input_names: tuple[str, ...],
                      group: int = 4) -> tuple[tuple[str, str, str], ...]:
    """TensorRT optimization profiles for bucketed batch shapes ``(rows, width)``, ascending width.

    Every ``group`` consecutive buckets share one profile: widths from just above the
    previous group's widest to the group's widest, rows from 1 to the most any of its
    buckets uses, optimised for the group's widest full batch.
    """
    def fmt(rows: int, width: int) -> str:
        return ",".join(f"{name}:{rows}x{width}" for name in input_names)

    out, low = [], 1
    for i in range(0, len(shapes), group):
        part = shapes[i:i + group]
        widest = part[-1]
        out.append((fmt(1, low), fmt(*widest), fmt(max(r for r, _ in part), widest[1])))
        low = widest[1] + 1
    return tuple(out)


def profile(name: str) -> Profile:
    """The chain for a provider name: tensorrt -> [TensorRT, CUDA, CPU], cuda -> [CUDA, CPU], cpu -> [CPU]."""
    chains = {"tensorrt": ("tensorrt", "cuda", "cpu"), "cuda": ("cuda", "cpu"), "cpu": ("cpu",)}
    if name not in chains:
        raise InputError(f"unknown provider {name!r}; expected auto, {', '.join(chains)}")
    return Profile(name, chains[name])


def graph_kind(dtype: str, quantization: str | None) -> str:
    return "int8" if quantization else dtype


def candidates(requested: str, available: list[str], kind: str | None = None,
               tensorrt_ready: bool = True) -> list[str]:
    """Provider names to try, in order, for ``requested`` (``auto`` or a name) and a bundle's graph kind.

    ``tensorrt_ready``: the bundle passed the TensorRT parser check at export (``--target
    tensorrt``); ``auto`` skips TensorRT otherwise.

    Raises:
        InputError: the provider is unknown, not built into this onnxruntime, or not one the
            bundle's graph may run on.
    """
    allowed = RUNS_ON.get(kind, AUTO_ORDER) if kind else AUTO_ORDER
    if not tensorrt_ready:
        if requested == "tensorrt":
            raise InputError("this bundle was exported for onnxruntime (opset-23 fused operators TensorRT's parser "
                             "does not read): export it with tommer-export --target tensorrt to run on TensorRT, or "
                             "use --provider cuda")
        allowed = tuple(p for p in allowed if p != "tensorrt")
    if requested == "auto":
        names = [p for p in AUTO_ORDER if ORT_NAMES[p] in available and p in allowed]
        if not names:
            raise InputError(f"no installed onnxruntime provider runs a {kind} bundle (it runs on {', '.join(allowed)}; "
                             f"installed: {', '.join(available)}); " + HOW_TO_FIX["cuda" if "cuda" in allowed else "cpu"])
        return names
    profile(requested)  # unknown names fail here
    if kind and requested not in allowed:
        raise InputError(f"a {kind} bundle does not run on the {requested} provider (it runs on {', '.join(allowed)}): "
                         + ("export fp32 or --quantize int8 for CPUs" if requested == "cpu" else
                            "int8 graphs (onnxruntime's CPU integer GEMM) are for CPUs: export --dtype fp16 or bf16 for GPUs"))
    if ORT_NAMES[requested] not in available:
        raise InputError(f"provider {requested!r} ({ORT_NAMES[requested]}) is not available in this onnxruntime "
                         f"(available: {', '.join(available)}); " + HOW_TO_FIX.get(requested, ""))
    return [requested]


def check_loaded(requested: str, loaded: list[str]) -> None:
    """Raise if the session did not load ``requested``'s provider (onnxruntime fell back silently)."""
    want = ORT_NAMES[requested]
    if want not in loaded:
        raise InputError(f"the {requested} provider ({want}) did not load: the session fell back to "
                         f"{', '.join(loaded) or 'nothing'}; " + HOW_TO_FIX.get(requested, ""))
