"""Figures: backbone FLOPs from a config, pairwise ratios, the matmul peak (CPU and CUDA, every dtype).

Span agreement is ``tommer.runtime.quality.evaluate.span_agreement`` (one implementation for the
exporter's validation, ``tommer-eval --against`` and the bench).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

PLAIN_MLP = ("gpt_neox", "phi", "bert", "roberta")  # up and down projections only (no gate)
BIDIRECTIONAL = ("bert", "roberta", "modernbert")  # every query attends to every key of its text


def backbone_flops(config: dict, lengths: Iterable[int], blocks: int) -> float:
    """Multiply-add FLOPs (2 per MAC) of ``blocks`` decoder blocks over sequences of these lengths.

    Per token and block: q/k/v/o projections 2*d*(2*d + 2*kv), the gated MLP 2*3*d*ff (2*2*d*ff for
    the plain MLP of GPT-NeoX and Phi);
    per sequence of n tokens and block, causal attention scores and values 2*2*d*n(n+1)/2
    (bidirectional encoders: 2*2*d*n*n; ModernBERT's local layers counted as global: an upper bound).
    """
    d, ff = config["hidden_size"], config["intermediate_size"]
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    kv = d // heads * kv_heads
    mlp_matrices = 2 if config.get("model_type") in PLAIN_MLP else 3
    per_token = 2 * d * (2 * d + 2 * kv) + 2 * mlp_matrices * d * ff
    total = 0.0
    for n in lengths:
        pairs = n * n if config.get("model_type") in BIDIRECTIONAL else n * (n + 1) / 2
        total += n * per_token + 2 * 2 * d * pairs
    return blocks * total


def summarize(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def paired_ratios(candidate: Sequence[float], reference: Sequence[float]) -> dict[str, float]:
    """Ratio of throughputs run by run (run k of each backend ran back to back)."""
    return summarize([c / r for c, r in zip(candidate, reference)])


def alternating_rounds(arms: dict[Any, Callable[[], Any]], rounds: int) -> dict[Any, list[Any]]:
    """Call every arm once per round, in order on even rounds and in reverse on odd ones, so that
    the machine's drift hits all arms alike (for paired ratios); each arm's results in round order."""
    results: dict[Any, list[Any]] = {key: [] for key in arms}
    keys = list(arms)
    for r in range(rounds):
        for key in keys if r % 2 == 0 else keys[::-1]:
            results[key].append(arms[key]())
    return results


def _best_seconds(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


DTYPES = ("fp32", "fp16", "bf16")


def matmul_peak(library: str = "torch", dtype: str = "fp32", device: str = "cpu", size: int | None = None,
                repeats: int | None = None, threads: int = 0) -> float | None:
    """FLOP/s of a size x size x size matrix product: the peak that utilisation is measured against.

    ``library``: torch, numpy or onnxruntime; ``dtype``: fp32 (every library), fp16 or bf16 (torch);
    ``device``: cpu or cuda (torch). On the CPU, the best of ``repeats`` products after one warm-up
    (size 2048, 7 repeats by default), on ``threads`` threads (0: all cores); on CUDA, the mean of
    ``repeats`` products queued back to back after 3 warm-ups, TF32 off (size 8192, 10 repeats by
    default); None on CUDA where torch sees no GPU.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: expected one of {DTYPES}")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r}: expected cpu or cuda")
    if library != "torch" and (dtype != "fp32" or device != "cpu"):
        raise ValueError(f"{library} measures fp32 on the CPU only")
    cuda = device == "cuda"
    size = size or (8192 if cuda else 2048)
    repeats = repeats or (10 if cuda else 7)
    flops = 2 * size**3
    if library == "torch":
        import torch

        if threads:
            torch.set_num_threads(threads)
        torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
        if cuda:
            if not torch.cuda.is_available():
                return None
            tf32 = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = False
            try:
                a = torch.randn(size, size, device="cuda", dtype=torch_dtype)
                b = torch.randn(size, size, device="cuda", dtype=torch_dtype)
                for _ in range(3):
                    a @ b
                torch.cuda.synchronize()
                start = time.perf_counter()
                for _ in range(repeats):
                    a @ b
                torch.cuda.synchronize()
                return flops * repeats / (time.perf_counter() - start)
            finally:
                torch.backends.cuda.matmul.allow_tf32 = tf32
    a32 = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    b32 = np.random.default_rng(1).standard_normal((size, size), dtype=np.float32)
    if library == "torch":
        ta, tb = torch.from_numpy(a32).to(torch_dtype), torch.from_numpy(b32).to(torch_dtype)
        return flops / _best_seconds(lambda: torch.matmul(ta, tb), repeats)
    if library == "numpy":
        return flops / _best_seconds(lambda: a32 @ b32, repeats)
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "mm",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, [size, size])],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [size, size])],
                              [onnx.numpy_helper.from_array(b32, "b")])
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return flops / _best_seconds(lambda: session.run(None, {"a": a32}), repeats)


def matmul_peaks(size: int = 2048, repeats: int = 7, threads: int = 0) -> dict[str, float]:
    """fp32 CPU ``matmul_peak`` of torch, numpy and onnxruntime, each in a fresh process.

    The peak that utilisation is measured against is the best of the three: a slow BLAS
    on this processor must not make the graph look more efficient than it is. Separate
    processes, because one library's spinning threads steal the cores from the next.
    """
    import json
    import subprocess
    import sys

    peaks = {}
    for library in ("torch", "numpy", "onnxruntime"):
        code = (f"import json; from tommer.benchmarks.lib.metrics import matmul_peak; "
                f"print(json.dumps(matmul_peak({library!r}, 'fp32', 'cpu', {size}, {repeats}, {threads})))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        peaks[library] = float(json.loads(out.stdout.strip().splitlines()[-1]))
    return peaks
