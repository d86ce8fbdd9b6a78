"""The one report writer of every benchmark (``<name>.json`` and ``<name>.md``, atomically), and
``tommer-bench``'s table and plot."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parents[1] / "results"  # the committed results: benchmarks/results


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_report(out: Path, name: str, results: dict[str, Any], markdown: str) -> list[Path]:
    """Write ``out/<name>.json`` (the results) and ``out/<name>.md`` (the Markdown text), each under a
    temporary name then renamed, so that a reader never sees half a file; returns both paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = [out / f"{name}.json", out / f"{name}.md"]
    _write_atomic(files[0], json.dumps(results, indent=1, default=str) + "\n")
    _write_atomic(files[1], markdown if markdown.endswith("\n") else markdown + "\n")
    return files


def markdown_table(results: dict[str, Any]) -> str:
    rows = ["| backend | tokens/s median [min-max] | docs/s | x reference (paired) | padding | infer GFLOP/s | "
            "util. of fp32 peak | peak RSS | exact match | DICE | read / tok / infer / decode / write (s) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, b in results["backends"].items():
        if "skipped" in b:
            rows.append(f"| {name} | skipped: {b['skipped']} | | | | | | | | | |")
            continue
        t, r = b["tokens_per_second"], b.get("ratio_to_reference")
        stages = " / ".join(f"{b['stage_seconds_median'][s]:.2f}" for s in ("read", "tokenize", "infer", "decode", "write"))
        agree = b.get("agreement", {})
        rows.append(
            f"| {name} | {t['median']:,.0f} [{t['min']:,.0f}-{t['max']:,.0f}] | {b['docs_per_second']['median']:,.1f} | "
            f"{format(r['median'], '.2f') + 'x' if r else '-'} | {b['padding_fraction']:.1%} | {b['infer_gflops']:.1f} | "
            f"{b['infer_utilization']:.0%} | {b['peak_rss_bytes'] / 1e9:.2f} GB | "
            f"{agree.get('exact_match_rate', float('nan')):.3f} | {agree.get('dice', float('nan')):.3f} | {stages} |")
    return "\n".join(rows) + "\n"


def plot(results: dict[str, Any], path: Path) -> bool:
    """Throughput per backend, and against the batch token budget; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    ran = {k: v for k, v in results["backends"].items() if "skipped" not in v}
    sweep = results.get("batch_tokens_sweep", {})
    fig, axes = plt.subplots(1, 2 if sweep else 1, figsize=(12 if sweep else 6, 4), squeeze=False)
    ax = axes[0][0]
    names = list(ran)
    med = [ran[n]["tokens_per_second"]["median"] for n in names]
    err = [[m - ran[n]["tokens_per_second"]["min"] for n, m in zip(names, med)],
           [ran[n]["tokens_per_second"]["max"] - m for n, m in zip(names, med)]]
    ax.bar(names, med, yerr=err, color="#4c72b0")
    ax.set_ylabel("real tokens / s (Parquet to Parquet)")
    ax.set_title(results["machine"]["summary"], fontsize=8)
    ax.tick_params(axis="x", rotation=20)
    if sweep:
        ax2 = axes[0][1]
        budgets = sorted(int(k) for k in sweep)
        ax2.plot(budgets, [sweep[str(k)] for k in budgets], marker="o")
        ax2.set_xscale("log", base=2)
        ax2.set_xlabel("--batch-tokens")
        ax2.set_ylabel("onnx-fp32 tokens / s")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def write_all(results: dict[str, Any], out: Path) -> list[Path]:
    """``tommer-bench``'s report: bench.json, bench.md and bench.png."""
    files = write_report(out, "bench", results, f"Command: `{results['command']}`\n\n"
                         f"Machine: {results['machine']['summary']}\n\n" + markdown_table(results))
    if plot(results, out / "bench.png"):
        files.append(out / "bench.png")
    return files
