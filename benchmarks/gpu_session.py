"""Everything issue "the first GPU figures" asks, in two device calls of one script (benchmarks/gpu/README.md).

    python -m tommer.benchmarks.gpu_session --stage prepare --work W --out $OUT   # call 1: no onnxruntime-gpu yet
    python -m tommer.benchmarks.gpu_session --stage device --work W --out $OUT    # call 2: onnxruntime-gpu installed
    python -m tommer.benchmarks.gpu_session --smoke --work /tmp/w --out /tmp/o    # both, here, on the CPU

Stages (each idempotent: what a previous call on the same machine left in --work is reused):

* ``env``: the device, driver, torch, onnxruntime and its providers, and the bf16, fp16 and fp32
  matrix-multiply peaks measured here with torch (the utilisation baseline); run by both calls.
* ``prepare`` (call 1, what needs no onnxruntime-gpu): ``env``; a Llama-3.2-1B-geometry backbone
  with random weights (hidden 2048, vocabulary 128,256, blocks 0..6 built: the exporter never
  reads the others) and the corpus (log-normal lengths, median ~60 tokens, tail to ~2,000, at least
  --tokens real tokens); the fp32 bundle exported and validated with the machine's own CPU
  onnxruntime (where that cannot load the graph, ``device`` exports it again).
* ``device`` (call 2), ``PLAN`` in its order of importance, each result saved as it finishes:
  export bf16 (validated on CUDA); ``tommer-annotate --check`` of the bf16 bundle, which stops the
  call at once (exit 3) when a node fell back or the session cannot open; tommer bf16 at 65,536
  tokens a batch (the inference stage and the whole process, Parquet to Parquet, in one run); the
  PyTorch bf16 SDPA eager rival on the same texts; fp32 (the spans every run is compared with:
  DICE and exact match); then fp16, CUDA graphs (only where the check found them possible), two
  other budgets, ``torch.compile``, and the rest, while --budget-s lasts.

Each run is a fresh process (``tommer.benchmarks.worker``), with the GPU memory in use sampled
from nvidia-smi while it runs (its peak is recorded). Results accumulate in ``--work/gpu.json``;
every change rewrites ``gpu.json`` and ``gpu.md`` under --out. No step starts when less than its
expected duration (the longest of its kind so far) is left of --budget-s, so a call ends inside
the device's 10-minute limit with what it measured written. ``--smoke`` runs both calls' steps
at a tiny geometry on the CPU (bf16 and fp16 runs fall back to the fp32 bundle, the rivals run
on the CPU, CUDA graphs and repeated configurations are skipped), to check the script first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

LLAMA_1B = dict(hidden_size=2048, intermediate_size=8192, num_attention_heads=32, num_key_value_heads=8,
                vocab_size=128256, max_position_embeddings=131072, tie_word_embeddings=True, rope_theta=500000.0)
SMOKE = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, vocab_size=2000,
             max_position_embeddings=4096)
LAYER, SMOKE_LAYER = 6, 2
BACKBONE_NAME = "Llama-3.2-1B"  # the name the published head's llm_name gives (a stand-in with its geometry)
HEAD = Path(__file__).resolve().parents[1] / "tests" / "data" / "heads" / "ToMMeR-Llama-3.2-1B_L6_R64"  # tracked: travels
CHECK_FAILED = 3  # the exit status of a device call stopped by the placement check

# The device call, in its order of importance: (kind, name, backend, batch tokens, AnnotateOptions).
# "export" and "check" steps name a dtype; a run's spans are compared with the fp32 run's.
PLAN: list[tuple] = [
    ("export", "bf16"),
    ("check", "bf16"),
    ("run", "onnx-cuda-bf16", "onnx-cuda-bf16", 65536, {}),
    ("run", "torch-bf16-sdpa", "torch-bf16-sdpa", 65536, {}),
    ("export", "fp32"),
    ("run", "onnx-cuda-fp32", "onnx-cuda-fp32", 65536, {}),
    ("export", "fp16"),
    ("run", "onnx-cuda-fp16", "onnx-cuda-fp16", 65536, {}),
    ("run", "onnx-cuda-bf16 cuda-graphs", "onnx-cuda-bf16", 65536, {"cuda_graphs": True}),
    ("run", "onnx-cuda-bf16 budget-16384", "onnx-cuda-bf16", 16384, {}),
    ("run", "onnx-cuda-bf16 budget-262144", "onnx-cuda-bf16", 262144, {}),
    ("run", "torch-bf16-compile", "torch-bf16-compile", 65536, {}),
    ("run", "onnx-cuda-fp16 cuda-graphs", "onnx-cuda-fp16", 65536, {"cuda_graphs": True}),
    ("run", "onnx-cuda-bf16 no-io-binding", "onnx-cuda-bf16", 65536, {"io_binding": False}),
    ("run", "onnx-cuda-bf16 no-buckets", "onnx-cuda-bf16", 65536, {"buckets": False}),
    ("run", "onnx-cuda-bf16 again", "onnx-cuda-bf16", 65536, {}),  # drift check: the first run, last
    ("run", "torch-bf16-sdpa again", "torch-bf16-sdpa", 65536, {}),
]
# --smoke on a CPU: the runs that are another configuration there (CUDA graphs, repeats)
SMOKE_SKIPS = ("cuda-graphs", "again", "no-io-binding", "no-buckets", "budget-262144", "fp16")
# seconds a step is expected to take before one of its kind has run (then: the longest so far)
FIRST_GUESS = {"export": 90.0, "check": 45.0, "run": 60.0, "torch": 60.0, "compile": 150.0}


def now() -> float:
    """The clock the budget is kept with (a function, so that tests can move it)."""
    return time.perf_counter()


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
        from .lib.report import write_report

        text = markdown(self.data)
        write_report(self.path.parent, "gpu", self.data, text)
        write_report(self.out, "gpu", self.data, text)


class GpuMemory:
    """The most GPU memory in use (MiB, all processes) while the block runs, sampled from nvidia-smi
    every ``every`` seconds in a thread; ``peak_mib`` is None where nvidia-smi is not there."""

    def __init__(self, every: float = 0.5):
        self.every, self.peak_mib = every, None
        self._stop = threading.Event()

    def _sample(self) -> int | None:
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=10).stdout
            return max(int(x) for x in out.split())
        except (OSError, ValueError, subprocess.SubprocessError):
            return None

    def _loop(self) -> None:
        while not self._stop.is_set():
            used = self._sample()
            if used is None:
                return
            self.peak_mib = max(self.peak_mib or 0, used)
            self._stop.wait(self.every)

    def __enter__(self) -> GpuMemory:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


# ---------------------------------------------------------------------------------------------- env


def stage_env(results: Results, call: str) -> None:
    """The machine and its libraries, per call (``prepare`` sees the image's onnxruntime, ``device``
    the installed onnxruntime-gpu); the matmul peaks are measured in each call."""
    import onnxruntime as ort
    import torch

    env: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "torch_cuda": torch.version.cuda, "onnxruntime": ort.__version__,
                           "onnxruntime_file": ort.__file__, "providers": ort.get_available_providers(),
                           "cpus": os.cpu_count()}
    try:
        env["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                                            "--format=csv,noheader"], capture_output=True, text=True,
                                           timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        env["nvidia_smi"] = f"unavailable ({exc})"
    if torch.cuda.is_available():
        from .lib.metrics import matmul_peak

        env["device"] = torch.cuda.get_device_name()
        env["matmul_peak_flops"] = {d: matmul_peak("torch", d, "cuda") for d in ("bf16", "fp16", "fp32")}
    calls = results.data.get("env_by_call", {})
    calls[call] = env
    results.data["env_by_call"] = calls
    results.set("env", env)
    log(f"env ({call}): {json.dumps(env)}")


# ------------------------------------------------------------------------------------------- export


def build_backbone(work: Path, smoke: bool) -> Path:
    """Blocks 0..layer of the geometry with random weights, and a tokenizer of about one token per word."""
    from tommer.exporter.random_models import make_backbone

    from .lib.corpus import tokenizer_texts

    folder = work / BACKBONE_NAME
    if (folder / "config.json").exists():
        return folder
    geometry = dict(SMOKE if smoke else LLAMA_1B)
    layer = SMOKE_LAYER if smoke else LAYER
    log(f"building the backbone ({'smoke' if smoke else 'Llama-3.2-1B geometry'}, {layer + 1} blocks)")
    make_backbone(folder, "llama", num_layers=layer + 1, tokenizer_texts=tokenizer_texts(), **geometry)
    return folder


def head_folder(work: Path, smoke: bool) -> Path:
    """The published L6 head (vendored in tests/data), or at the smoke geometry a random one."""
    from tommer.exporter.random_models import make_head

    if not smoke:
        if not (HEAD / "definition.json").exists():
            raise SystemExit(f"{HEAD}: the published L6 head (tests/data, tracked) is missing")
        return HEAD
    folder = work / "smoke-head"
    if not (folder / "parameters").exists():
        make_head(folder, hidden_size=SMOKE["hidden_size"], layer=SMOKE_LAYER, rank=16, sliding_window=25,
                  llm_name=f"meta-llama/{BACKBONE_NAME}")
    return folder


def bundle_path(work: Path, dtype: str) -> Path:
    return work / f"bundle-{dtype}"


def export(results: Results, work: Path, dtype: str, smoke: bool) -> bool:
    """Export and validate the ``dtype`` bundle (once); False, recorded, when the export fails."""
    from tommer.exporter.export import export_bundle
    from tommer.exporter.spec import ExportOptions
    from tommer.runtime.bundle import read_manifest

    exports = results.data.setdefault("exports", {})
    bundle = bundle_path(work, dtype)
    if (bundle / "tommer.json").exists() and "error" not in exports.get(dtype, {"error": 1}):
        return True
    backbone = build_backbone(work, smoke)
    log(f"export {dtype}")
    start = time.perf_counter()
    try:
        with GpuMemory() as memory:
            export_bundle(ExportOptions(backbone=str(backbone), head=str(head_folder(work, smoke)),
                                        layer=SMOKE_LAYER if smoke else LAYER, output=str(bundle), dtype=dtype,
                                        overwrite=True, quiet=True), step=lambda m: log(f"  {m}"))
    except Exception as exc:  # recorded; a later step (or call, after onnxruntime-gpu) tries again
        exports[dtype] = {"error": f"{type(exc).__name__}: {str(exc)[-2000:]}",
                          "seconds": time.perf_counter() - start}
        results.set("exports", exports)
        log(f"export {dtype} failed: {exports[dtype]['error'][:300]}")
        return False
    manifest = read_manifest(bundle, verify=False)
    v = manifest.validation
    exports[dtype] = {"seconds": time.perf_counter() - start, "validation": v, "fused_ops": manifest.graph.fused_ops,
                      "bundle_bytes": sum(p.stat().st_size for p in bundle.iterdir()),
                      "peak_gpu_mib": memory.peak_mib}
    results.set("exports", exports)
    log(f"{dtype}: on {v.get('measured_with')}, max abs error {v.get('max_abs_error')}, exact-match "
        f"{v.get('exact_match_rate')}, DICE {v.get('dice')}, batch invariance {v.get('batch_invariance_max_abs_diff')}")
    return True


def has_cuda() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def placement_check(results: Results, work: Path, dtype: str, smoke: bool) -> dict[str, Any]:
    """``tommer-annotate --check`` of a bundle, as a user runs it (its own process); its report, exit
    status and whether it found CUDA graphs possible, saved before anything else runs."""
    provider = "cuda" if has_cuda() else "cpu"
    bundle = bundle_path(work, "fp32" if provider == "cpu" else dtype)  # no bf16 kernels on the CPU
    command = [sys.executable, "-m", "tommer.runtime.cli.annotate", "--check", "--model", str(bundle),
               "--provider", provider]
    shown = " ".join(["tommer-annotate", *command[3:]])  # as a user types it
    log(f"check: {shown}")
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    found = {"command": shown, "returncode": done.returncode, "report": done.stdout.splitlines(),
             "stderr": done.stderr[-3000:], "seconds": time.perf_counter() - start,
             "cuda_graphs_possible": "CUDA graphs: possible" in done.stdout}
    checks = results.data.setdefault("checks", {})
    checks[dtype] = found
    results.set("checks", checks)
    for line in found["report"]:
        log(f"  {line}")
    return found


# -------------------------------------------------------------------------------------------- bench


def corpus(work: Path, tokens: int) -> Path:
    """The feed benchmark's corpus (log-normal, median ~60 tokens, tail to ~2,000) of about ``tokens``
    (about 90 a document; at least 100 documents, or 20 for the CPU smoke's few tokens)."""
    from .lib.corpus import feed_corpus

    path = work / f"corpus-{tokens}.parquet"
    if not path.exists():
        log(f"writing the corpus ({tokens:,} tokens)")
    return feed_corpus(path, tokens, seed=0, minimum_docs=20)


def run_spec(work: Path, backend: str, batch_tokens: int, options: dict, smoke: bool,
             cpu_rivals: bool) -> dict[str, Any]:
    """The worker's spec of a run; on a CPU (``smoke``) the CUDA backends become the fp32 CPU one."""
    options = dict(options)
    dtype = backend.rsplit("-", 1)[1] if backend.startswith("onnx") else "fp32"
    if smoke:  # the CPU stands in for CUDA; bf16 and fp16 have no CPU kernels
        backend = {"onnx-cuda-fp32": "onnx-fp32", "onnx-cuda-bf16": "onnx-fp32",
                   "onnx-cuda-fp16": "onnx-fp32"}.get(backend, backend)
        dtype = "fp32" if backend == "onnx-fp32" else dtype
        options = {k: v for k, v in options.items() if k != "cuda_graphs"}
        batch_tokens = min(batch_tokens, 4096)
    torch_backend = backend.startswith("torch")
    return {"name": backend, "bundle": str(bundle_path(work, dtype)), "backbone": str(work / BACKBONE_NAME),
            "head": str(head_folder(work, smoke)), "layer": SMOKE_LAYER if smoke else LAYER,
            "batch_tokens": batch_tokens, "options": None if torch_backend else options,
            "device": "cpu" if torch_backend and cpu_rivals else None}


def measure(results: Results, work: Path, src: Path, name: str, spec: dict) -> dict[str, Any] | None:
    """One run, saved at once (with the figures it allows)."""
    from .lib.runs import run_worker

    log(f"run {name}")
    dst = work / f"out-{name.replace(' ', '_')}.parquet"
    start = time.perf_counter()
    try:
        with GpuMemory() as memory:
            found = run_worker(spec, src, dst)
    except RuntimeError as exc:
        log(f"{name} failed: {exc}")
        results.add_run(name, {"failed": str(exc)[-3000:], "spec": spec, "seconds_spent": time.perf_counter() - start})
        return None
    found.update(spec=spec, output=str(dst), peak_gpu_mib=memory.peak_mib, seconds_spent=time.perf_counter() - start)
    found["tokens_per_second"] = found["tokens"] / found["wall_seconds"]
    found["infer_tokens_per_second"] = found["tokens"] / max(found["seconds"]["infer"], 1e-9)
    results.add_run(name, found)
    figures(results)
    log(f"{name}: {found['tokens_per_second']:,.0f} tokens/s whole process, "
        f"{found['infer_tokens_per_second']:,.0f} inference stage; stages {found['seconds']}; "
        f"peak GPU memory {memory.peak_mib} MiB")
    return found


def category(name: str) -> str:
    """A run's kind for timing: torch.compile runs (compile time), the torch rivals, tommer's runs."""
    return "compile" if "compile" in name else "torch" if name.startswith("torch") else "run"


def expected_seconds(results: Results, kind: str, name: str = "") -> float:
    """How long a step is expected to take: the longest of its kind so far (runs: of its category),
    else a first guess."""
    if kind == "export":
        seen = [e["seconds"] for e in results.data.get("exports", {}).values() if "seconds" in e]
    elif kind == "check":
        seen = [c["seconds"] for c in results.data.get("checks", {}).values()]
    else:
        kind = category(name)
        seen = [r["seconds_spent"] for n, r in results.data.get("runs", {}).items()
                if "seconds_spent" in r and category(n) == kind]
    return max(seen) if seen else FIRST_GUESS[kind]


def stage_prepare(results: Results, work: Path, tokens: int, smoke: bool) -> None:
    """Call 1: the backbone, the corpus and the fp32 bundle (validated on the CPU onnxruntime there)."""
    build_backbone(work, smoke)
    corpus(work, tokens)
    export(results, work, "fp32", smoke)


def stage_device(results: Results, work: Path, tokens: int, budget_s: float, smoke: bool, cpu_rivals: bool,
                 started: float) -> int:
    """Call 2: ``PLAN`` in order while the budget lasts. Returns the exit status (``CHECK_FAILED``
    when the placement check stopped the call)."""
    src = corpus(work, tokens)
    runs = results.data.setdefault("runs", {})
    cuda_graphs_possible = True
    skipped = []
    for step in PLAN:
        kind, name = step[0], step[1]
        if smoke and kind == "run" and any(s in name for s in SMOKE_SKIPS):
            continue
        if smoke and kind == "export" and name == "fp16":
            continue
        left = budget_s - (now() - started)
        need = expected_seconds(results, kind, name)
        done = ((kind == "export" and "error" not in results.data.get("exports", {}).get(name, {"error": 1}))
                or (kind == "run" and name in runs and "failed" not in runs[name]))
        if done and kind == "export" and not (bundle_path(work, name) / "tommer.json").exists():
            done = False
        if kind == "check" and results.data.get("checks", {}).get(name, {}).get("returncode") == 0:
            cuda_graphs_possible = results.data["checks"][name]["cuda_graphs_possible"]
            continue  # passed in an earlier call on this machine
        if done:
            continue
        if left < 1.2 * need:
            skipped.append(name if kind == "run" else f"{kind} {name}")
            continue
        if kind == "export":
            if smoke and name in ("bf16", "fp16"):  # on the CPU the bf16/fp16 runs use the fp32 bundle
                export(results, work, "fp32", smoke)
                continue
            export(results, work, name, smoke)
        elif kind == "check":
            found = placement_check(results, work, name, smoke)
            if found["returncode"] != 0:
                log(f"check failed (exit {found['returncode']}): stopping; see checks.{name} in gpu.json")
                results.set("stopped", f"placement check of the {name} bundle failed (exit {found['returncode']})")
                return CHECK_FAILED
            cuda_graphs_possible = found["cuda_graphs_possible"]
        else:
            _, name, backend, batch_tokens, options = step
            if options.get("cuda_graphs") and not cuda_graphs_possible and not smoke:
                results.add_run(name, {"failed": "skipped: the placement check found CUDA graphs impossible",
                                       "skipped": True})
                continue
            dtype = backend.rsplit("-", 1)[1] if backend.startswith("onnx-cuda") else None
            if dtype and not smoke and not (bundle_path(work, dtype) / "tommer.json").exists():
                if not export(results, work, dtype, smoke):
                    continue
            measure(results, work, src, name, run_spec(work, backend, batch_tokens, options, smoke, cpu_rivals))
    if skipped:
        log(f"not run in this call (time budget): {', '.join(skipped)}")
    results.set("unfinished", skipped)
    return 0


_SPANS: dict[tuple[str, float], list] = {}  # (output, mtime) -> its spans: figures() runs after every run


def spans_of(path: Path) -> list:
    from .lib.runs import read_spans

    key = (str(path), path.stat().st_mtime)
    if key not in _SPANS:
        _SPANS[key] = read_spans(path)
    return _SPANS[key]


def figures(results: Results) -> None:
    """Span agreement with the fp32 run and with the torch rival, FLOP/s, utilisation of the bf16 peak."""
    import pyarrow.parquet as pq
    from transformers import AutoConfig

    from tommer.runtime.quality.evaluate import span_agreement

    from .lib.metrics import backbone_flops

    runs = {k: v for k, v in results.data.get("runs", {}).items() if "failed" not in v}
    if not runs:
        return
    first = next(iter(runs.values()))
    lengths = pq.read_table(first["output"], columns=["n_tokens"]).column("n_tokens").to_pylist()
    config = AutoConfig.from_pretrained(first["spec"]["backbone"]).to_dict()
    flops = backbone_flops(config, [n + 1 for n in lengths], blocks=first["spec"]["layer"] + 1)
    peak = (results.data.get("env", {}).get("matmul_peak_flops") or {}).get("bf16")
    bases = {}
    for name, run in runs.items():
        if name in ("onnx-cuda-fp32", "torch-bf16-sdpa"):
            bases[name] = spans_of(Path(run["output"]))
    for name, run in runs.items():
        run["backbone_flops"] = flops
        run["infer_tflops"] = flops / run["seconds"]["infer"] / 1e12
        run["infer_utilization_of_bf16_peak"] = flops / run["seconds"]["infer"] / peak if peak else None
        mine = spans_of(Path(run["output"]))
        for base, spans in bases.items():
            if name != base:
                run[f"agreement_vs_{base}"] = span_agreement(spans, mine).figures()
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
    if data.get("stopped"):
        lines += [f"**Stopped:** {data['stopped']}", ""]
    for dtype, c in data.get("checks", {}).items():
        lines += [f"## Placement check ({dtype}, exit {c['returncode']})", "", "```", c["command"],
                  *c["report"], "```", ""]
    if data.get("exports"):
        lines += ["## Exports (validated on the device)", "",
                  "| dtype | validated on | max abs error | exact-match | DICE | batch invariance | seconds |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for dtype, e in data["exports"].items():
            if "error" in e:
                lines.append(f"| {dtype} | failed: {e['error'][-200:]!r} | | | | | {e.get('seconds', 0):.0f} |")
                continue
            v = e.get("validation", {})
            lines.append(f"| {dtype} | {v.get('measured_with')} | {v.get('max_abs_error', float('nan')):.2e} | "
                         f"{v.get('exact_match_rate', float('nan')):.3f} | {v.get('dice', float('nan')):.4f} | "
                         f"{v.get('batch_invariance_max_abs_diff')} | {e.get('seconds', 0):.0f} |")
        lines.append("")
    if data.get("runs"):
        lines += ["## Throughput (real tokens/s; one run each, fresh process)", "",
                  "| run | whole process | inference stage | infer TFLOP/s | of bf16 peak | peak GPU MiB | padding share | "
                  "DICE / exact vs fp32 | DICE vs torch bf16 | stages (s) |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, r in data["runs"].items():
            if "failed" in r:
                lines.append(f"| {name} | {'skipped' if r.get('skipped') else 'failed'}: {r['failed'][-200:]!r} "
                             "| | | | | | | | |")
                continue
            fp32 = r.get("agreement_vs_onnx-cuda-fp32") or {}
            torch_ = r.get("agreement_vs_torch-bf16-sdpa") or {}
            util = r.get("infer_utilization_of_bf16_peak")
            exact = fp32.get("exact_match_rate")
            lines.append(f"| {name} | {r['tokens_per_second']:,.0f} | {r['infer_tokens_per_second']:,.0f} | "
                         f"{r.get('infer_tflops', float('nan')):.1f} | {f'{util:.1%}' if util else '-'} | "
                         f"{r.get('peak_gpu_mib') or '-'} | {1 - r['tokens'] / r['padded_tokens']:.3f} | "
                         f"{_fmt(fp32.get('dice'))} / {_fmt(exact)} | {_fmt(torch_.get('dice'))} | "
                         + ", ".join(f"{k} {v:.1f}" for k, v in r["seconds"].items()) + " |")
        lines.append("")
    if data.get("unfinished"):
        lines += [f"Not run in this call (time budget): {', '.join(data['unfinished'])}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=("env", "prepare", "device", "all"), default="all",
                        help="call 1 (prepare), call 2 (device), or both (default: %(default)s)")
    parser.add_argument("--work", type=Path, default=Path(".gpuwork"), help="scratch folder kept between calls (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "benchmarks/results/gpu")),
                        help="where gpu.json and gpu.md are written (default: $OUT, else %(default)s)")
    parser.add_argument("--tokens", type=int, default=2_000_000, help="real tokens in the benchmark corpus (default: %(default)s)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="seconds this call may use; no step starts past it (default: 450, none with --smoke)")
    parser.add_argument("--smoke", action="store_true", help="tiny geometry on whatever is there (the CPU here): checks the script")
    args = parser.parse_args(argv)
    if args.budget_s is None:
        args.budget_s = float("inf") if args.smoke else 450.0
    started = now()
    args.work.mkdir(parents=True, exist_ok=True)
    results = Results(args.work, args.out)
    cpu_rivals = False
    if args.smoke:
        import torch

        cpu_rivals = not torch.cuda.is_available()  # the rivals run on the CPU here, torch.compile included
    status = 0
    if args.stage in ("env", "prepare", "all"):
        stage_env(results, "prepare" if args.stage != "env" else "env")
    if args.stage in ("prepare", "all"):
        stage_prepare(results, args.work, args.tokens, args.smoke)
    if args.stage in ("device", "all"):
        if args.stage == "device":
            stage_env(results, "device")
        status = stage_device(results, args.work, args.tokens, args.budget_s, args.smoke, cpu_rivals, started)
    results.set("seconds_by_call", {**results.data.get("seconds_by_call", {}),
                                    args.stage: round(time.perf_counter() - started, 1)})
    log(f"done in {time.perf_counter() - started:.0f} s (exit {status}); results in {args.out}")
    return status


if __name__ == "__main__":
    sys.exit(main())
