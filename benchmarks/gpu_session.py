"""Everything issue "measure on a real GPU" asks, in a few calls of one script (see benchmarks/gpu/README.md).

    python -m tommer.benchmarks.gpu_session --stage export --work .gpuwork --head .carry/head --out $OUT
    python -m tommer.benchmarks.gpu_session --stage bench-onnx --work .gpuwork --out $OUT
    python -m tommer.benchmarks.gpu_session --stage bench-torch --work .gpuwork --out $OUT

Stages (each idempotent: what a previous call on the same machine left in --work is reused):

* ``env``: the device, driver, torch, onnxruntime and its providers; a CUDA session really
  loading; the bf16 and fp32 matrix-multiply peaks measured here (the utilisation baseline).
* ``export``: a Llama-3.2-1B-geometry backbone with random weights (hidden 2048, vocabulary
  128,256, blocks 0..6 built: the exporter never reads the others) and the published L6 head;
  fp32, fp16 and bf16 bundles exported and validated on CUDA (fp32 with TF32 off), and where
  each graph's nodes run (CUDA, CPU, memory copies), from onnxruntime's profiler.
* ``bench-onnx``: tommer's whole process, Parquet to Parquet, on a corpus of log-normal
  lengths (median ~60 tokens, tail to ~2,000) of at least --tokens real tokens, for the CUDA
  provider in fp16 and bf16, with IO binding, shape buckets and CUDA graphs on and off, at a
  few batch budgets; one fp32 run gives the spans every other run is compared with.
* ``bench-torch``: the rival, the same truncated model in PyTorch bf16 (SDPA), eager and
  ``torch.compile``, on the same texts, with the same head and decoding.

Each run is a fresh process (``tommer.benchmarks.worker``). Results accumulate in
``--work/gpu.json``; every stage rewrites ``gpu.json`` and ``gpu.md`` under --out. A stage
stops starting runs when less than a run's worth of --budget-s is left, so a call ends inside
the device's 10-minute limit with what it measured written. ``--smoke`` runs every stage at a
tiny geometry on whatever is there (the CPU here), to check the script before a GPU call.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

LLAMA_1B = dict(hidden_size=2048, intermediate_size=8192, num_attention_heads=32, num_key_value_heads=8,
                vocab_size=128256, max_position_embeddings=131072, tie_word_embeddings=True, rope_theta=500000.0)
SMOKE = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, vocab_size=2000,
             max_position_embeddings=4096)
LAYER, SMOKE_LAYER = 6, 2
DTYPES = ("fp32", "fp16", "bf16")
BACKBONE_NAME = "Llama-3.2-1B"  # the name the published head's llm_name gives (a stand-in with its geometry)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Results:
    """``gpu.json`` in the work folder, merged across calls, copied to --out after every change."""

    def __init__(self, work: Path, out: Path):
        self.path, self.out = work / "gpu.json", out
        self.data: dict[str, Any] = json.loads(self.path.read_text()) if self.path.exists() else {}

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.save()

    def add_run(self, name: str, value: dict) -> None:
        self.data.setdefault("runs", {})[name] = value
        self.save()

    def save(self) -> None:
        self.path.write_text(json.dumps(self.data, indent=1, default=str))
        self.out.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.path, self.out / "gpu.json")
        (self.out / "gpu.md").write_text(markdown(self.data))


# ---------------------------------------------------------------------------------------------- env


def matmul_peak(dtype: str, n: int = 8192, repeats: int = 10) -> float | None:
    """FLOP/s of an n x n x n matrix product on the GPU (mean of ``repeats`` after 3 warm-ups)."""
    import torch

    if not torch.cuda.is_available():
        return None
    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    a = torch.randn(n, n, device="cuda", dtype=torch_dtype)
    b = torch.randn(n, n, device="cuda", dtype=torch_dtype)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def stage_env(results: Results) -> None:
    import onnxruntime as ort
    import torch

    env: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "torch_cuda": torch.version.cuda, "onnxruntime": ort.__version__,
                           "providers": ort.get_available_providers(), "cpus": os.cpu_count()}
    try:
        env["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                                            "--format=csv,noheader"], capture_output=True, text=True,
                                           timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        env["nvidia_smi"] = f"unavailable ({exc})"
    if torch.cuda.is_available():
        env["device"] = torch.cuda.get_device_name()
        torch.backends.cuda.matmul.allow_tf32 = False
        env["matmul_peak_flops"] = {d: matmul_peak(d) for d in ("bf16", "fp16", "fp32")}
    results.set("env", env)
    log(f"env: {json.dumps(env)}")


# ------------------------------------------------------------------------------------------- export


def build_backbone(work: Path, smoke: bool) -> Path:
    """Blocks 0..layer of the geometry with random weights, and a tokenizer of about one token per word."""
    from tommer.benchmarks.corpus import NAMES, WORDS, synthetic_texts
    from tommer.exporter.random_models import make_backbone

    folder = work / BACKBONE_NAME
    if (folder / "config.json").exists():
        return folder
    geometry = dict(SMOKE if smoke else LLAMA_1B)
    layer = SMOKE_LAYER if smoke else LAYER
    texts = synthetic_texts(2000, seed=123) + [" ".join(WORDS + NAMES)] * 50
    log(f"building the backbone ({'smoke' if smoke else 'Llama-3.2-1B geometry'}, {layer + 1} blocks)")
    make_backbone(folder, "llama", num_layers=layer + 1, tokenizer_texts=texts, **geometry)
    return folder


def smoke_head(work: Path) -> Path:
    from tommer.exporter.random_models import make_head

    folder = work / "smoke-head"
    if not (folder / "parameters").exists():
        make_head(folder, hidden_size=SMOKE["hidden_size"], layer=SMOKE_LAYER, rank=16, sliding_window=25,
                  llm_name=f"meta-llama/{BACKBONE_NAME}")
    return folder


def node_placement(bundle: Path, provider: str) -> dict[str, Any]:
    """Which execution provider runs each node of the optimised graph, and the memory copies, from
    onnxruntime's profiler over one batch."""
    import collections

    import numpy as np
    import onnxruntime as ort

    from tommer.runtime.execution.providers import Settings, profile

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(bundle.parent / f"profile-{bundle.name}")
    session = ort.InferenceSession(str(bundle / "model.onnx"), options,
                                   providers=profile(provider).providers(Settings()))
    ids = np.ones((4, 64), np.int64)
    for _ in range(2):
        session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})
    trace = json.loads(Path(session.end_profiling()).read_text())
    by_provider: collections.Counter = collections.Counter()
    ops_off_gpu: collections.Counter = collections.Counter()
    for event in trace:
        args = event.get("args", {})
        if event.get("cat") == "Node" and "provider" in args and event["name"].endswith("_kernel_time"):
            by_provider[args["provider"]] += 1
            if args["provider"] != "CUDAExecutionProvider":
                ops_off_gpu[args.get("op_name", "?")] += 1
    return {"session_providers": session.get_providers(), "kernels_by_provider": dict(by_provider),
            "ops_not_on_cuda": dict(ops_off_gpu)}


def stage_export(results: Results, work: Path, head: Path | None, smoke: bool) -> None:
    from tommer.exporter.export import export_bundle
    from tommer.exporter.spec import ExportOptions
    from tommer.runtime.bundle import read_manifest

    backbone = build_backbone(work, smoke)
    head = smoke_head(work) if smoke else head
    if head is None or not (head / "definition.json").exists():
        raise SystemExit(f"--head {head}: the published L6 head folder is needed (copy it into the repo: "
                         "benchmarks/gpu/prepare.sh)")
    exports = results.data.get("exports", {})
    for dtype in DTYPES:
        bundle = work / f"bundle-{dtype}"
        if not (bundle / "tommer.json").exists():
            log(f"export {dtype}")
            start = time.perf_counter()
            export_bundle(ExportOptions(backbone=str(backbone), head=str(head), layer=SMOKE_LAYER if smoke else LAYER,
                                        output=str(bundle), dtype=dtype, overwrite=True, quiet=True),
                          step=lambda m: log(f"  {m}"))
            exports[dtype] = {"seconds": time.perf_counter() - start}
        manifest = read_manifest(bundle, verify=False)
        entry = exports.setdefault(dtype, {})
        entry.update(validation=manifest.validation, fused_ops=manifest.graph.fused_ops,
                     bundle_bytes=sum(p.stat().st_size for p in bundle.iterdir()))
        try:
            entry["placement"] = node_placement(bundle, "cuda" if has_cuda() else "cpu")
        except Exception as exc:  # a report, not a gate: the validation above already ran the graph
            entry["placement"] = {"error": f"{type(exc).__name__}: {exc}"}
        results.set("exports", exports)
        v = manifest.validation
        log(f"{dtype}: on {v.get('measured_with')}, max abs error {v.get('max_abs_error'):.2e}, exact-match "
            f"{v.get('exact_match_rate'):.3f}, DICE {v.get('dice'):.4f}, batch invariance "
            f"{v.get('batch_invariance_max_abs_diff')}; placement {entry['placement']}")


def has_cuda() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


# -------------------------------------------------------------------------------------------- bench


def corpus(work: Path, tokens: int) -> Path:
    """The feed benchmark's corpus (log-normal, median ~60 tokens, tail to ~2,000) of about ``tokens``."""
    from tommer.benchmarks.feed import _tokens_to_docs, write_feed_corpus

    path = work / f"corpus-{tokens}.parquet"
    if not path.exists():
        log(f"writing the corpus ({tokens:,} tokens)")
        write_feed_corpus(path, _tokens_to_docs(tokens), seed=0)
    return path


ONNX_RUNS = [  # (run name, backend, batch_tokens, AnnotateOptions) — the first of each dtype is its default
    ("onnx-cuda-fp32", "onnx-cuda-fp32", 65536, {}),
    ("onnx-cuda-bf16", "onnx-cuda-bf16", 65536, {}),
    ("onnx-cuda-fp16", "onnx-cuda-fp16", 65536, {}),
    ("onnx-cuda-bf16 cuda-graphs", "onnx-cuda-bf16", 65536, {"cuda_graphs": True}),
    ("onnx-cuda-bf16 no-io-binding", "onnx-cuda-bf16", 65536, {"io_binding": False}),
    ("onnx-cuda-bf16 no-buckets", "onnx-cuda-bf16", 65536, {"buckets": False}),
    ("onnx-cuda-bf16 budget-16384", "onnx-cuda-bf16", 16384, {}),
    ("onnx-cuda-bf16 budget-262144", "onnx-cuda-bf16", 262144, {}),
    ("onnx-cuda-fp16 cuda-graphs", "onnx-cuda-fp16", 65536, {"cuda_graphs": True}),
    ("onnx-cuda-bf16 again", "onnx-cuda-bf16", 65536, {}),  # drift check: the default, last
]
TORCH_RUNS = [
    ("torch-bf16-sdpa", "torch-bf16-sdpa", 65536, {}),
    ("torch-bf16-compile", "torch-bf16-compile", 65536, {}),
    ("torch-bf16-sdpa again", "torch-bf16-sdpa", 65536, {}),
]


def stage_bench(results: Results, work: Path, plan: list, tokens: int, budget_s: float, smoke: bool,
                started: float) -> None:
    from tommer.benchmarks.cli import run_worker

    src = corpus(work, tokens)
    runs = results.data.get("runs", {})
    longest = max((r.get("wall_seconds", 0) + r.get("load_seconds", 0) for r in runs.values()), default=60.0)
    for name, backend, batch_tokens, options in plan:
        if name in runs:
            continue
        options = dict(options)
        left = budget_s - (time.perf_counter() - started)
        if left < 1.5 * longest:
            log(f"stopping before {name}: {left:.0f} s left of --budget-s, a run takes up to {longest:.0f} s")
            results.set("unfinished", [n for n, *_ in plan if n not in results.data.get("runs", {})])
            return
        dtype = backend.rsplit("-", 1)[1] if backend.startswith("onnx") else "fp32"
        if smoke:  # the CPU stands in for CUDA; bf16 has no CPU kernels
            backend = {"onnx-cuda-fp32": "onnx-fp32", "onnx-cuda-bf16": "onnx-fp32",
                       "onnx-cuda-fp16": "onnx-fp32"}.get(backend, backend)
            dtype = "fp32" if backend == "onnx-fp32" else dtype
            options = {k: v for k, v in options.items() if k != "cuda_graphs"}
        device = options.pop("device", None) if backend.startswith("torch") else None
        spec = {"name": backend, "bundle": str(work / f"bundle-{dtype}"), "backbone": str(work / BACKBONE_NAME),
                "head": str(smoke_head(work) if smoke else results.data["head"]), "layer": SMOKE_LAYER if smoke else LAYER,
                "batch_tokens": batch_tokens, "options": options if backend.startswith("onnx") else None,
                "device": device}
        log(f"run {name}")
        dst = work / f"out-{name.replace(' ', '_')}.parquet"
        try:
            found = run_worker(spec, src, dst)
        except RuntimeError as exc:
            log(f"{name} failed: {exc}")
            results.add_run(name, {"failed": str(exc)[-3000:], "spec": spec})
            continue
        found.update(spec=spec, output=str(dst))
        found["tokens_per_second"] = found["tokens"] / found["wall_seconds"]
        found["infer_tokens_per_second"] = found["tokens"] / max(found["seconds"]["infer"], 1e-9)
        longest = max(longest, found["wall_seconds"] + found["load_seconds"])
        results.add_run(name, found)
        log(f"{name}: {found['tokens_per_second']:,.0f} tokens/s whole process, "
            f"{found['infer_tokens_per_second']:,.0f} inference stage; stages {found['seconds']}")
    results.data.pop("unfinished", None)
    figures(results, src)


def figures(results: Results, src: Path) -> None:
    """Span agreement with the fp32 run and with the torch rival, FLOP/s and utilisation."""
    from transformers import AutoConfig

    import pyarrow.parquet as pq

    from tommer.benchmarks.cli import read_spans
    from tommer.benchmarks.metrics import backbone_flops
    from tommer.runtime.quality.evaluate import span_agreement

    runs = {k: v for k, v in results.data.get("runs", {}).items() if "failed" not in v}
    if not runs:
        return
    first = next(iter(runs.values()))
    lengths = pq.read_table(first["output"], columns=["n_tokens"]).column("n_tokens").to_pylist()
    config = AutoConfig.from_pretrained(first["spec"]["backbone"]).to_dict()
    flops = backbone_flops(config, [n + 1 for n in lengths], blocks=first["spec"]["layer"] + 1)
    peak = (results.data.get("env", {}).get("matmul_peak_flops") or {}).get("bf16")
    spans = {}
    for name, run in runs.items():
        if "fp32" in name.split()[0] or name.startswith("torch-bf16-sdpa"):
            spans[name.split()[0]] = read_spans(Path(run["output"]))
    for name, run in runs.items():
        run["backbone_flops"] = flops
        run["infer_tflops"] = flops / run["seconds"]["infer"] / 1e12
        run["infer_utilization_of_bf16_peak"] = flops / run["seconds"]["infer"] / peak if peak else None
        mine = read_spans(Path(run["output"]))
        for base in ("onnx-cuda-fp32", "onnx-fp32", "torch-bf16-sdpa"):
            if base in spans and not name.startswith(base + " ") and name != base:
                run[f"agreement_vs_{base}"] = span_agreement(spans[base], mine).figures()
    results.save()  # the entries of ``runs`` are those of results.data["runs"], updated in place


# ----------------------------------------------------------------------------------------- markdown


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def markdown(data: dict[str, Any]) -> str:
    env = data.get("env", {})
    peaks = env.get("matmul_peak_flops") or {}
    lines = [f"# tommer on {env.get('device', 'no GPU')}", "",
             f"{env.get('nvidia_smi', '')}; torch {env.get('torch')} (CUDA {env.get('torch_cuda')}), onnxruntime "
             f"{env.get('onnxruntime')} ({', '.join(env.get('providers', []))}); "
             + ", ".join(f"{k} matmul peak {v / 1e12:.0f} TFLOP/s" for k, v in peaks.items() if v), ""]
    if data.get("exports"):
        lines += ["## Exports (validated on the device)", "",
                  "| dtype | validated on | max abs error | exact-match | DICE | batch invariance | kernels by provider | ops not on CUDA |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for dtype, e in data["exports"].items():
            v, p = e.get("validation", {}), e.get("placement", {})
            lines.append(f"| {dtype} | {v.get('measured_with')} | {v.get('max_abs_error', float('nan')):.2e} | "
                         f"{v.get('exact_match_rate', float('nan')):.3f} | {v.get('dice', float('nan')):.4f} | "
                         f"{v.get('batch_invariance_max_abs_diff')} | {p.get('kernels_by_provider', p.get('error'))} | "
                         f"{p.get('ops_not_on_cuda', '')} |")
        lines.append("")
    if data.get("runs"):
        lines += ["## Throughput (real tokens/s; one run each, fresh process)", "",
                  "| run | whole process | inference stage | infer TFLOP/s | of bf16 peak | padding share | DICE vs fp32 | DICE vs torch bf16 | stages (s) |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, r in data["runs"].items():
            if "failed" in r:
                lines.append(f"| {name} | failed: {r['failed'][-200:]!r} | | | | | | | |")
                continue
            fp32 = r.get("agreement_vs_onnx-cuda-fp32") or r.get("agreement_vs_onnx-fp32") or {}
            torch_ = r.get("agreement_vs_torch-bf16-sdpa") or {}
            util = r.get("infer_utilization_of_bf16_peak")
            lines.append(f"| {name} | {r['tokens_per_second']:,.0f} | {r['infer_tokens_per_second']:,.0f} | "
                         f"{r.get('infer_tflops', float('nan')):.1f} | {f'{util:.1%}' if util else '-'} | "
                         f"{1 - r['tokens'] / r['padded_tokens']:.3f} | {_fmt(fp32.get('dice'))} | "
                         f"{_fmt(torch_.get('dice'))} | "
                         + ", ".join(f"{k} {v:.1f}" for k, v in r["seconds"].items()) + " |")
        lines.append("")
    if data.get("unfinished"):
        lines += [f"Not run in this call (time budget): {', '.join(data['unfinished'])}", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=("env", "export", "bench-onnx", "bench-torch", "all"), default="all",
                        help="what to run (default: %(default)s)")
    parser.add_argument("--work", type=Path, default=Path(".gpuwork"), help="scratch folder kept between calls (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "benchmarks/results/gpu")),
                        help="where gpu.json and gpu.md are written (default: $OUT, else %(default)s)")
    parser.add_argument("--head", type=Path, default=Path(".carry/head"), help="the published L6 head folder (default: %(default)s)")
    parser.add_argument("--tokens", type=int, default=5_000_000, help="real tokens in the benchmark corpus (default: %(default)s)")
    parser.add_argument("--budget-s", type=float, default=540.0, help="seconds this call may use; no run starts past it (default: %(default)s)")
    parser.add_argument("--smoke", action="store_true", help="tiny geometry on whatever is there (the CPU here): checks the script")
    args = parser.parse_args()
    started = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    results = Results(args.work, args.out)
    results.data["head"] = str(args.head.resolve())
    torch_runs = TORCH_RUNS
    if args.smoke:
        import torch

        if not torch.cuda.is_available():  # the rivals run on the CPU here, torch.compile included
            torch_runs = [("torch-bf16-sdpa", "torch-bf16-sdpa", 4096, {"device": "cpu"}),
                          ("torch-bf16-compile", "torch-bf16-compile", 4096, {"device": "cpu"})]
    if args.stage in ("env", "all") or "env" not in results.data:
        stage_env(results)
    if args.stage in ("export", "all"):
        stage_export(results, args.work, args.head, args.smoke)
    if args.stage in ("bench-onnx", "all"):
        stage_bench(results, args.work, ONNX_RUNS, args.tokens, args.budget_s, args.smoke, started)
    if args.stage in ("bench-torch", "all"):
        stage_bench(results, args.work, torch_runs, args.tokens, args.budget_s, args.smoke, started)
    log(f"done in {time.perf_counter() - started:.0f} s; results in {args.out}")


if __name__ == "__main__":
    sys.exit(main())
