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

from dataclasses import dataclass

from .errors import InputError

ORT_NAMES = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}
AUTO_ORDER = ("tensorrt", "cuda", "cpu")

# Which graphs a provider runs well (from the manifest's dtype and quantization): the CPU
# provider computes fp16 through fp32 and has no bf16 kernels; MatMulNBits int8 kernels are
# the CPU provider's.
RUNS_ON = {"fp32": ("tensorrt", "cuda", "cpu"), "fp16": ("tensorrt", "cuda"), "bf16": ("tensorrt", "cuda"),
           "int8": ("cpu",)}

HOW_TO_FIX = {
    "cuda": "the CUDA provider needs onnxruntime-gpu (pip install 'tommer[gpu]' and pip uninstall onnxruntime), a "
            "CUDA driver, and the CUDA 12 runtime, cuBLAS and cuDNN 9 libraries on the library path (pip install "
            "nvidia-cublas-cu12 nvidia-cudnn-cu12, or a torch with CUDA: onnxruntime.preload_dlls() finds them)",
    "cpu": "the CPU provider comes with every onnxruntime",
    "tensorrt": "the TensorRT provider needs everything the CUDA provider needs plus the TensorRT libraries "
                "(libnvinfer) on the library path; use --provider cuda to run without TensorRT",
}


@dataclass(frozen=True)
class Profile:
    """One execution profile: the provider chain handed to onnxruntime."""

    name: str
    chain: tuple[str, ...]

    def providers(self) -> list[str]:
        return [ORT_NAMES[p] for p in self.chain]


def profile(name: str) -> Profile:
    """The chain for a provider name: tensorrt -> [TensorRT, CUDA, CPU], cuda -> [CUDA, CPU], cpu -> [CPU]."""
    chains = {"tensorrt": ("tensorrt", "cuda", "cpu"), "cuda": ("cuda", "cpu"), "cpu": ("cpu",)}
    if name not in chains:
        raise InputError(f"unknown provider {name!r}; expected auto, {', '.join(chains)}")
    return Profile(name, chains[name])


def graph_kind(dtype: str, quantization: str | None) -> str:
    return "int8" if quantization else dtype


def candidates(requested: str, available: list[str], kind: str | None = None) -> list[str]:
    """Provider names to try, in order, for ``requested`` (``auto`` or a name) and a bundle's graph kind.

    Raises:
        InputError: the provider is unknown, not built into this onnxruntime, or not one the
            bundle's graph may run on.
    """
    allowed = RUNS_ON.get(kind, AUTO_ORDER) if kind else AUTO_ORDER
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
                            "int8 MatMulNBits graphs are for CPUs: export --dtype fp16 or bf16 for GPUs"))
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
