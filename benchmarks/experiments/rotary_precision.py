"""fp16 graph against fp32 by token position, on the CPU: does low precision drift along the window?

    python benchmarks/experiments/rotary_precision.py --work /tmp/tommer-rotary --out benchmarks/results

A random Llama backbone with Llama-3.2-1B's rotary geometry (head size 64, rope theta
500,000, llama3 scaling: factor 32, original context 8,192; 8 query and 2 K/V heads, width
512, 4 blocks, the head on block 3) is exported three times: fp32, fp16 (rotary
frequencies in fp32, as the exporter now writes them) and fp16 with the frequencies
rounded to fp16 (``Module.to(float16)`` as before, for comparison). Each graph runs on
onnxruntime's CPU provider (it has fp16 kernels for every operator of these graphs:
``Attention``, ``RotaryEmbedding``, ``RMSNormalization``, ``MatMul``) over windows of 2,048
tokens of ``exporter/texts.py``'s long text, each window alone (batch 1). Per position
bucket of the end token: max and mean abs difference of the span probabilities against
fp32, and the DICE of the decoded spans (threshold 0.5) whose end lies in the bucket.

The weights are random, so the figures say how the rounding grows with position for this
geometry, not what a trained model's spans do; the rotary part is what is exact or not.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from tommer.benchmarks.lib.corpus import long_text
from tommer.benchmarks.lib.report import write_report

BUCKETS = (0, 128, 512, 1024, 2048)
GEOMETRY = dict(hidden_size=512, intermediate_size=1024, num_attention_heads=8, num_key_value_heads=2,
                head_dim=64, max_position_embeddings=131072, rope_theta=500000.0,
                rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                              "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
LAYER = 3
WINDOW = 2048


def build(work: Path) -> tuple[Path, Path]:
    from tommer.exporter.random_models import make_backbone, make_head

    backbone, head = work / "backbone", work / "head"
    if not (backbone / "config.json").exists():
        make_backbone(backbone, "llama", num_layers=LAYER + 1, vocab_size=2048,
                      tokenizer_texts=[long_text(k) for k in range(8)], **GEOMETRY)
    if not (head / "definition.json").exists():
        make_head(head, hidden_size=GEOMETRY["hidden_size"], layer=LAYER)
    return backbone, head


def export(backbone: Path, head: Path, out: Path, dtype: str, rounded_rotary: bool) -> dict:
    from tommer.exporter import graph
    from tommer.exporter.export import export_bundle
    from tommer.exporter.spec import ExportOptions

    keep = graph.cast_keeping_rotary_fp32
    if rounded_rotary:  # the exporter before: Module.to() rounds inv_freq too
        graph.cast_keeping_rotary_fp32 = lambda model, torch_dtype: model.to(torch_dtype)
    try:
        start = time.perf_counter()
        manifest = export_bundle(ExportOptions(backbone=str(backbone), head=str(head), layer=LAYER, output=str(out),
                                               dtype=dtype, overwrite=True, quiet=True, allow_head_mismatch=True))
        seconds = time.perf_counter() - start
    finally:
        graph.cast_keeping_rotary_fp32 = keep
    v = manifest.validation
    return {"export_seconds": round(seconds, 1), "validation": {k: v.get(k) for k in (
        "measured_with", "texts", "tokens", "longest_text_tokens", "max_abs_error", "max_abs_error_by_position",
        "exact_match_rate", "dice", "batch_invariance_max_abs_diff")}}


def bands(bundle: Path, windows: list[np.ndarray]) -> list[np.ndarray]:
    from tommer.runtime.execution.session import create_session, run_band

    session = create_session(bundle / "model.onnx", "cpu")
    return [run_band(session, ids[None], np.ones((1, len(ids)), np.int64))[0] for ids in windows]


def compare(reference: list[np.ndarray], other: list[np.ndarray], threshold: float = 0.5) -> dict[str, dict]:
    from tommer.runtime.core.decoding import decode_threshold

    def spans(band, lo, hi):
        starts, ends, _ = decode_threshold(band, threshold)
        return {(s, e) for s, e in zip(starts.tolist(), ends.tolist()) if lo <= e < hi}

    out = {}
    for lo, hi in zip(BUCKETS[:-1], BUCKETS[1:]):
        diffs = np.concatenate([np.abs(o[lo:hi] - r[lo:hi]).ravel() for r, o in zip(reference, other)])
        a = [spans(r, lo, hi) for r in reference]
        b = [spans(o, lo, hi) for o in other]
        total = sum(len(x) + len(y) for x, y in zip(a, b))
        common = sum(len(x & y) for x, y in zip(a, b))
        out[f"{lo}-{hi - 1}"] = {"max_abs_diff": float(diffs.max()), "mean_abs_diff": float(diffs.mean()),
                                 "span_dice": 1.0 if total == 0 else 2 * common / total,
                                 "reference_spans": sum(len(x) for x in a)}
    return out


def markdown(results: dict) -> str:
    rows = ["| graph | positions | max abs diff vs fp32 | mean abs diff | span DICE vs fp32 | fp32 spans |",
            "| --- | --- | --- | --- | --- | --- |"]
    for name, by_bucket in results["by_position"].items():
        for bucket, x in by_bucket.items():
            rows.append(f"| {name} | {bucket} | {x['max_abs_diff']:.2e} | {x['mean_abs_diff']:.2e} | "
                        f"{x['span_dice']:.4f} | {x['reference_spans']} |")
    rows += ["", "| bundle | validation (exporter) max abs error by position | DICE | exact match |",
             "| --- | --- | --- | --- |"]
    for name, e in results["exports"].items():
        v = e["validation"]
        rows.append(f"| {name} | {v['max_abs_error_by_position']} | {v['dice']:.4f} | {v['exact_match_rate']:.3f} |")
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/tommer-rotary"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--windows", type=int, default=3)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    backbone, head = build(args.work)
    arms = {"fp32": ("fp32", False), "fp16": ("fp16", False), "fp16-rounded-rotary": ("fp16", True)}
    exports = {name: export(backbone, head, args.work / name, dtype, rounded)
               for name, (dtype, rounded) in arms.items()}

    from tommer.runtime.bundle import read_manifest
    from tommer.runtime.core.tokenization import BundleTokenizer

    manifest = read_manifest(args.work / "fp32")
    tok = BundleTokenizer.from_bundle(args.work / "fp32", manifest)
    windows = [e.ids[:WINDOW] for e in tok.encode_batch([long_text(k) for k in range(args.windows)])]
    assert all(len(w) == WINDOW for w in windows), [len(w) for w in windows]
    per_arm = {}
    for name in arms:
        start = time.perf_counter()
        per_arm[name] = bands(args.work / name, windows)
        exports[name]["run_seconds"] = round(time.perf_counter() - start, 1)
    results = {
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine()},
        "geometry": GEOMETRY, "layer": LAYER, "windows": len(windows), "window_tokens": WINDOW,
        "provider": "onnxruntime CPUExecutionProvider (all three graphs, fp16 included)",
        "exports": exports,
        "by_position": {name: compare(per_arm["fp32"], per_arm[name]) for name in arms if name != "fp32"},
    }
    print(json.dumps(results["by_position"], indent=1))
    if args.out:
        write_report(args.out, "rotary_precision", results, markdown(results))


if __name__ == "__main__":
    main()
