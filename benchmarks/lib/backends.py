"""The measured backends: the PyTorch reference path and tommer's ONNX Runtime path.

Each backend is loaded once (not timed), then ``run(src, dst)`` goes Parquet to Parquet
and returns its figures. Both write the same output columns, with the same
character-offset rules (``tommer.runtime.core.mentions.char_mentions``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

STAGES = ("read", "tokenize", "infer", "decode", "write")


@dataclass
class BackendSpec:
    name: str
    bundle: str | None = None  # onnx backends
    backbone: str | None = None  # reference backends
    head: str | None = None
    layer: int = 0
    batch_tokens: int = 512
    threads: int = 0
    threshold: float = 0.5
    options: dict[str, Any] | None = None  # onnx backends: more AnnotateOptions (io_binding, buckets, cuda_graphs)
    device: str | None = None  # reference backends: where torch runs [default: the backend's own]


class ReferenceBackend:
    """What a careful user of the reference code runs, written from the spec.

    transformers' PyTorch model in fp32 cut at the layer (final norm bypassed), batches of
    16 (sorted by length, or in corpus order for ``reference-naive``), the dense
    (seq x seq) head with the reference's min/max pooling, and threshold decoding in Python.

    On a GPU (the bf16 rivals) it is given the same advantages as tommer's path: batches of
    length-sorted texts up to ``batch_tokens`` padded tokens, thresholding on the device and
    only the spans above it copied back, and ``torch.compile`` warmed up before the clock starts.
    """

    def __init__(self, spec: BackendSpec, sort: bool, dtype: str = "fp32", device: str = "cpu",
                 compile_model: bool = False):
        device = spec.device or device
        import torch
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        from tommer.exporter.backbone import SUPPORTED_ARCHITECTURES
        from tommer.exporter.head import load_head

        if spec.threads:
            torch.set_num_threads(spec.threads)
        config = AutoConfig.from_pretrained(spec.backbone)
        config.num_hidden_layers = spec.layer + 1
        torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
        self.model = AutoModel.from_pretrained(spec.backbone, config=config, dtype=torch_dtype,
                                               attn_implementation="sdpa").eval().to(device)
        setattr(self.model, SUPPORTED_ARCHITECTURES[config.model_type], torch.nn.Identity())
        if compile_model:
            self.model = torch.compile(self.model, dynamic=True)
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(spec.backbone)
        self.bos = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.tokenizer.eos_token_id
        head = load_head(spec.head)
        self.head = type(head)(**{**head.__dict__, **{k: getattr(head, k).to(device) for k in
                                                      ("w_q", "w_k", "w_fc", "b_fc", "cl_w")}})
        self.sort, self.batch_size, self.threshold = sort, 16, spec.threshold
        self.batch_tokens = spec.batch_tokens
        self.rival = dtype != "fp32"  # the GPU rivals: token-budget batches, thresholding on the device
        if compile_model:  # compile for a few shapes before the measured run (dynamic shapes after)
            with torch.inference_mode():
                for rows, n in ((4, 17), (8, 33), (2, 129)):
                    ids = torch.full((rows, n), self.bos, dtype=torch.long, device=device)
                    self.model(input_ids=ids, attention_mask=torch.ones_like(ids))
            if device == "cuda":
                torch.cuda.synchronize()

    def run(self, src: Path, dst: Path) -> dict[str, Any]:
        import torch

        from tommer.exporter.reference import dense_span_probs_batched
        from tommer.runtime.core.mentions import char_mentions, mentions_array

        seconds = dict.fromkeys(STAGES, 0.0)
        t = time.perf_counter()
        table = pq.read_table(src)
        texts = [x or "" for x in table.column("text").to_pylist()]
        seconds["read"] += time.perf_counter() - t
        t = time.perf_counter()
        enc = self.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
        ids = [[self.bos] + x for x in enc["input_ids"]]
        offsets = [np.asarray([(0, 0)] + o, dtype=np.int64).reshape(-1, 2) for o in enc["offset_mapping"]]
        seconds["tokenize"] += time.perf_counter() - t
        order = sorted(range(len(ids)), key=lambda i: len(ids[i])) if self.sort else list(range(len(ids)))
        results: list[list] = [[] for _ in texts]
        tokens = padded = 0
        if self.rival:  # tommer's own planner: length-sorted, up to batch_tokens padded tokens
            from tommer.runtime.core.batching import plan_batches

            batches = [b.tolist() for b in plan_batches(np.asarray([len(x) for x in ids]), self.batch_tokens)]
        else:
            batches = [order[b0 : b0 + self.batch_size] for b0 in range(0, len(order), self.batch_size)]
        for batch in batches:
            t = time.perf_counter()
            n = max(len(ids[i]) for i in batch)
            input_ids = torch.full((len(batch), n), self.bos, dtype=torch.long)
            mask = torch.zeros((len(batch), n), dtype=torch.long)
            for row, i in enumerate(batch):
                input_ids[row, : len(ids[i])] = torch.tensor(ids[i])
                mask[row, : len(ids[i])] = 1
            input_ids, mask = input_ids.to(self.device), mask.to(self.device)
            with torch.inference_mode():
                hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
                probs = dense_span_probs_batched(hidden, mask, self.head)  # (batch, n, n) fp32
                if self.rival:  # threshold on the device, copy only the hits: [(row, end, start)], scores
                    hits = (probs > self.threshold).nonzero()
                    hit_scores = probs[hits[:, 0], hits[:, 1], hits[:, 2]].cpu().numpy()
                    hits = hits.cpu().numpy()
                else:
                    probs = probs.float().cpu()
            mask = mask.cpu()
            tokens += int(mask.sum())
            padded += mask.numel()
            seconds["infer"] += time.perf_counter() - t
            t = time.perf_counter()
            if self.rival:
                bounds = np.searchsorted(hits[:, 0], np.arange(len(batch) + 1))
                for row, i in enumerate(batch):
                    lo, hi = bounds[row], bounds[row + 1]
                    results[i] = char_mentions(texts[i], offsets[i], hits[lo:hi, 2].astype(np.int64),
                                               hits[lo:hi, 1].astype(np.int64), hit_scores[lo:hi])
                seconds["decode"] += time.perf_counter() - t
                continue
            for row, i in enumerate(batch):
                hits = (probs[row] > self.threshold).nonzero().tolist()  # [(end, start), ...]
                ends = np.asarray([h[0] for h in hits], dtype=np.int64)
                starts = np.asarray([h[1] for h in hits], dtype=np.int64)
                scores = probs[row][ends, starts].numpy() if hits else np.zeros(0, np.float32)
                results[i] = char_mentions(texts[i], offsets[i], starts, ends, scores)
            seconds["decode"] += time.perf_counter() - t
        t = time.perf_counter()
        out = table.select(["id"]).append_column("mentions", mentions_array(results))
        out = out.append_column("n_tokens", pa.array([len(x) - 1 for x in ids], pa.int32()))
        pq.write_table(out, dst)
        seconds["write"] += time.perf_counter() - t
        return {"seconds": seconds, "tokens": tokens, "padded_tokens": padded, "docs": len(texts)}


class OnnxBackend:
    """tommer's path: ``tommer.runtime`` Parquet to Parquet through one ONNX graph."""

    def __init__(self, spec: BackendSpec, provider: str = "cpu"):
        from tommer.runtime.annotator import Annotator

        self.annotator = Annotator.from_bundle(spec.bundle, provider=provider, threads=spec.threads,
                                               batch_tokens=spec.batch_tokens, threshold=spec.threshold,
                                               **(spec.options or {}))

    def run(self, src: Path, dst: Path) -> dict[str, Any]:
        from tommer.runtime.engines.local import annotate_files

        summary = annotate_files(self.annotator, str(src), str(dst), columns=["id"], overwrite=True)
        s = summary.stats
        return {"seconds": dict(s.seconds), "tokens": s.tokens, "padded_tokens": s.padded_tokens, "docs": s.rows}


# Every backend, in the order the results list them: a reference path (torch, with its options)
# or tommer's ONNX path on a provider of tommer.runtime.execution.providers.
REFERENCE_BACKENDS = {
    "reference": {"sort": True},
    "reference-naive": {"sort": False},
    "torch-bf16-sdpa": {"sort": True, "dtype": "bf16", "device": "cuda"},  # the strongest PyTorch rival, on a GPU
    "torch-bf16-compile": {"sort": True, "dtype": "bf16", "device": "cuda", "compile_model": True},
}
ONNX_BACKENDS = {"onnx-fp32": "cpu", "onnx-int8": "cpu", "onnx-cuda-fp32": "cuda", "onnx-cuda-fp16": "cuda",
                 "onnx-cuda-bf16": "cuda", "onnx-tensorrt-fp16": "tensorrt"}
ALL_BACKENDS = ("reference", "reference-naive", *ONNX_BACKENDS, "torch-bf16-sdpa", "torch-bf16-compile")


def make_backend(spec: BackendSpec):
    if spec.name in REFERENCE_BACKENDS:
        return ReferenceBackend(spec, **REFERENCE_BACKENDS[spec.name])
    if spec.name in ONNX_BACKENDS:
        return OnnxBackend(spec, provider=ONNX_BACKENDS[spec.name])
    raise ValueError(f"unknown backend {spec.name}; expected one of {', '.join(ALL_BACKENDS)}")


def skip_reason(name: str, have_int8: bool) -> str | None:
    """Why a backend cannot run here, or None."""
    import onnxruntime as ort

    providers = ort.get_available_providers()
    if name == "onnx-int8" and not have_int8:
        return "no int8 bundle (pass --int8-model, or use --demo-model)"
    if name.startswith("onnx-cuda") and "CUDAExecutionProvider" not in providers:
        return "onnxruntime has no CUDAExecutionProvider here (install tommer[gpu] on a GPU machine)"
    if name.startswith("onnx-tensorrt") and "TensorrtExecutionProvider" not in providers:
        return "onnxruntime has no TensorrtExecutionProvider here"
    if name.startswith("torch-bf16"):
        import torch

        if not torch.cuda.is_available():
            return "PyTorch bf16 (SDPA, torch.compile) is the GPU rival; no CUDA device here"
    return None
