"""What expanding K/V heads (fp32 graphs, for CUDA) costs on the CPU, and that outputs are unchanged.

    python benchmarks/experiments/expand_kv_cpu.py --work /tmp/tommer-rotary --out benchmarks/results

The backbone of ``benchmarks/experiments/rotary_precision.py`` (8 query heads, 2 K/V heads, head size
64, width 512, 4 blocks) is exported in fp32 twice: as the exporter writes it (K/V repeated
to the query heads, ``exporter/rewrites/expand_kv.py``) and with grouped heads. Both run
on onnxruntime's CPU provider, alternating, at the CPU's default budget (4 x 128 tokens)
and at one window of 2,048 tokens; reported: median seconds per batch, the paired ratio,
and the largest difference of the outputs (0 expected).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from tommer.benchmarks.experiments.rotary_precision import LAYER, build
from tommer.benchmarks.lib.report import write_report


def export(backbone: Path, head: Path, out: Path, expand: bool) -> None:
    from tommer.exporter import export as export_module
    from tommer.exporter.spec import ExportOptions

    keep = export_module.expands_kv_heads
    if not expand:
        export_module.expands_kv_heads = lambda *args: False
    try:
        export_module.export_bundle(ExportOptions(backbone=str(backbone), head=str(head), layer=LAYER, output=str(out),
                                                  overwrite=True, quiet=True, allow_head_mismatch=True))
    finally:
        export_module.expands_kv_heads = keep


def markdown(results: dict) -> str:
    rows = [f"Command: `{results['command']}`",
            "", f"Machine: {results['machine']['processor']}, {results['provider']}", "",
            "| batch | expanded (s) | grouped (s) | expanded / grouped (paired) [min-max] | max abs output diff |",
            "| --- | --- | --- | --- | --- |"]
    for label, r in results["shapes"].items():
        lo, hi = r["ratio_min_max"]
        rows.append(f"| {label} | {r['median_seconds']['expanded']:.4f} | {r['median_seconds']['grouped']:.4f} | "
                    f"{r['expanded_over_grouped_paired_median']:.3f} [{lo:.3f}-{hi:.3f}] | {r['max_abs_output_diff']:.2e} |")
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/tommer-rotary"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    backbone, head = build(args.work)
    arms = {"expanded": args.work / "fp32-expanded", "grouped": args.work / "fp32-grouped"}
    for name, folder in arms.items():
        if not (folder / "tommer.json").exists():
            export(backbone, head, folder, expand=name == "expanded")

    from tommer.runtime.execution.session import create_session, run_band

    sessions = {name: create_session(folder / "model.onnx", "cpu") for name, folder in arms.items()}
    rng = np.random.default_rng(0)
    shapes = {"4x128": (4, 128), "1x2048": (1, 2048)}
    results = {"command": "python benchmarks/experiments/expand_kv_cpu.py " + " ".join(sys.argv[1:]),
               "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine()},
               "provider": "onnxruntime CPUExecutionProvider, default threads", "shapes": {}}
    for label, (b, n) in shapes.items():
        ids = rng.integers(3, 1500, (b, n)).astype(np.int64)
        mask = np.ones_like(ids)
        out = {name: run_band(s, ids, mask) for name, s in sessions.items()}  # warm-up, and the outputs
        seconds: dict[str, list[float]] = {name: [] for name in sessions}
        for _ in range(args.rounds):
            for name, s in sessions.items():
                start = time.perf_counter()
                run_band(s, ids, mask)
                seconds[name].append(time.perf_counter() - start)
        ratios = [e / g for e, g in zip(seconds["expanded"], seconds["grouped"])]
        results["shapes"][label] = {
            "median_seconds": {name: statistics.median(v) for name, v in seconds.items()},
            "expanded_over_grouped_paired_median": statistics.median(ratios),
            "ratio_min_max": [min(ratios), max(ratios)],
            "max_abs_output_diff": float(np.abs(out["expanded"] - out["grouped"]).max()),
        }
    print(json.dumps(results["shapes"], indent=1))
    if args.out:
        write_report(args.out, "expand_kv_cpu", results, markdown(results))


if __name__ == "__main__":
    main()
