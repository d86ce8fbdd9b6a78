"""Measured runs: one backend's run in a fresh process (``tommer.benchmarks.worker``), the spans it wrote,
the figures of a set of runs (as ``tommer-bench`` reports them), and one whole-process run in-process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def run_worker(spec: dict, src: Path, dst: Path) -> dict[str, Any]:
    job = json.dumps({"spec": spec, "src": str(src), "dst": str(dst)})
    proc = subprocess.run([sys.executable, "-m", "tommer.benchmarks.worker", job], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"backend {spec['name']} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def read_spans(path: Path) -> list[list[tuple[int, int]]]:
    import pyarrow.parquet as pq

    return [[(m["start"], m["end"]) for m in doc] for doc in pq.read_table(path, columns=["mentions"]).column("mentions").to_pylist()]


def figures(runs: dict[str, list[dict]], src: Path, work: Path, manifest, peak: float,
            backbone: str) -> dict[str, Any]:
    """Per-backend medians, paired ratios, FLOP/s, utilisation and agreement with the reference."""
    import pyarrow.parquet as pq
    from transformers import AutoConfig

    from tommer.runtime.quality.evaluate import span_agreement

    from .metrics import backbone_flops, paired_ratios, summarize

    config = AutoConfig.from_pretrained(backbone).to_dict()
    n_tokens = pq.read_table(work / f"{next(iter(runs))}.parquet", columns=["n_tokens"]).column("n_tokens").to_pylist()
    flops = backbone_flops(config, [n + 1 for n in n_tokens], blocks=manifest.backbone.num_layers_kept)
    reference = "reference" if "reference" in runs else None
    ref_spans = read_spans(work / "reference.parquet") if reference else None
    out: dict[str, Any] = {}
    for name, xs in runs.items():
        tps = [x["tokens"] / x["wall_seconds"] for x in xs]
        infer = sorted(x["seconds"]["infer"] for x in xs)[len(xs) // 2]
        entry = {
            "runs": xs,
            "tokens_per_second": summarize(tps),
            "docs_per_second": summarize([x["docs"] / x["wall_seconds"] for x in xs]),
            "padding_fraction": 1 - xs[0]["tokens"] / xs[0]["padded_tokens"],
            "stage_seconds_median": {s: sorted(x["seconds"][s] for x in xs)[len(xs) // 2] for s in xs[0]["seconds"]},
            "peak_rss_bytes": max(x["peak_rss_bytes"] for x in xs),
            "backbone_flops": flops,
            "infer_gflops": flops / infer / 1e9,
            "infer_utilization": flops / infer / peak,
            "end_to_end_utilization": flops / sorted(x["wall_seconds"] for x in xs)[len(xs) // 2] / peak,
        }
        if reference:
            ref_tps = [x["tokens"] / x["wall_seconds"] for x in runs[reference]]
            entry["ratio_to_reference"] = paired_ratios(tps, ref_tps)
            entry["agreement"] = span_agreement(ref_spans, read_spans(work / f"{name}.parquet")).figures()
        out[name] = entry
    return out


def whole_process_rate(annotator, src: Path, dst: Path) -> float:
    """Tokens per second of one whole-process run in this process, Parquet ``src`` to Parquet ``dst`` (replaced)."""
    from tommer.runtime.engines.local import annotate_files

    start = time.perf_counter()
    stats = annotate_files(annotator, str(src), str(dst), columns=["id"], overwrite=True).stats
    return stats.tokens / (time.perf_counter() - start)
