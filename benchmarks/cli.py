"""``tommer-bench``: tommer's ONNX path side by side with the PyTorch reference path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from ..runtime.cli.common import Command, version_option
from .lib.backends import ALL_BACKENDS, REFERENCE_BACKENDS
from .lib.machine import machine_record

DEFAULT_BACKENDS = "reference,reference-naive,onnx-fp32,onnx-int8"
DEFAULT_OUT = Path("tommer-bench-results")  # ignored by git: never the committed benchmarks/results
BENCH_FILES = ("bench.json", "bench.md", "bench.png")
FEED_FILES = ("feed.json", "feed.md")
app = typer.Typer(add_completion=False, rich_markup_mode=None,
                  help="Measure tommer against the PyTorch reference path on the same texts and weights.")


@app.command(cls=Command)
def bench(
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="fp32 bundle (its manifest names the backbone and head the reference loads). [default: none; give it or --demo-model]"),
    int8_model: Optional[Path] = typer.Option(None, help="int8 bundle for onnx-int8. [default: none: onnx-int8 is skipped]"),
    demo_model: Optional[Path] = typer.Option(None, help="Build (once) and use the CPU demo model in this folder: Llama geometry, hidden 512, 8/2 heads, MLP 2048, 6 blocks, layer 4, vocab 32000, random weights; fp32 and int8 bundles. [default: none]"),
    corpus: Optional[Path] = typer.Option(None, help="Parquet corpus with 'id' and 'text' columns. [default: the synthetic corpus]"),
    synthetic: int = typer.Option(2000, help="Documents in the seeded synthetic corpus (log-normal lengths, median about 45 tokens, tail to about 700)."),
    seed: int = typer.Option(0, help="Seed of the synthetic corpus."),
    backends: str = typer.Option(DEFAULT_BACKENDS, help=f"Comma-separated backends among {', '.join(ALL_BACKENDS)}; those that cannot run here are listed as skipped."),
    repeats: int = typer.Option(3, help="Runs per backend; backends alternate within each round so drift hits all alike."),
    batch_tokens: int = typer.Option(512, help="--batch-tokens of the onnx backends."),
    sweep: str = typer.Option("256,1024,2048,4096,16384", help="Extra --batch-tokens values run once with onnx-fp32 for the throughput-vs-budget plot; '' for none."),
    threads: int = typer.Option(0, help="Threads of every backend (torch and onnxruntime); 0: all cores."),
    out: Path = typer.Option(DEFAULT_OUT, help="Folder for bench.json, bench.md and bench.png (and work/, the corpus and outputs). Results committed to git there are replaced only with --overwrite (e.g. --out benchmarks/results --overwrite refreshes the README's table)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace results in --out that git tracks (the committed benchmarks/results)."),
    backbone: Optional[str] = typer.Option(None, help="Backbone the PyTorch reference backends load (Hub id or folder). [default: the one the bundle's manifest records]"),
    version: Optional[bool] = version_option(),
) -> None:
    """Run every backend on the same texts, alternating, and write JSON, Markdown and a PNG plot."""
    from .lib.backends import skip_reason
    from .lib.corpus import write_corpus
    from .lib.metrics import matmul_peaks
    from .lib.report import markdown_table, write_all
    from .lib.runs import figures, run_worker

    check_out(out, BENCH_FILES, overwrite)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    if demo_model is not None:
        from .lib.models import build_demo

        typer.echo(f"building the demo model in {demo_model} (once)", err=True)
        paths = build_demo(demo_model)
        model, int8_model = Path(paths["fp32"]), Path(paths["int8"])
    if model is None:
        raise typer.BadParameter("give --model BUNDLE or --demo-model FOLDER")
    from tommer.runtime.bundle import read_manifest

    manifest = read_manifest(model)
    backbone = backbone or manifest.backbone.source
    names = [b.strip() for b in backends.split(",") if b.strip()]
    unknown = [b for b in names if b not in ALL_BACKENDS]
    if unknown:
        raise typer.BadParameter(f"unknown backends {unknown}; expected some of {', '.join(ALL_BACKENDS)}")
    if any(b in REFERENCE_BACKENDS for b in names):
        check_backbone(backbone, model)
    src = corpus or write_corpus(work / "corpus.parquet", synthetic, seed)
    results: dict[str, Any] = {"command": "tommer-bench " + " ".join(sys.argv[1:]), "backends": {}}
    peaks = matmul_peaks(threads=threads)
    results["machine"] = machine_record(peaks)
    peak = results["machine"]["matmul_fp32_peak_flops"]
    base = {"backbone": backbone, "head": manifest.head.source, "layer": manifest.head.layer,
            "batch_tokens": batch_tokens, "threads": threads}
    specs, runs = {}, {}
    for name in names:
        reason = skip_reason(name, int8_model is not None)
        if reason:
            results["backends"][name] = {"skipped": reason}
            continue
        bundle = int8_model if name == "onnx-int8" else model
        specs[name] = {**base, "name": name, "bundle": str(bundle)}
        runs[name] = []
    order = list(specs)
    for r in range(repeats):
        for name in order[r % len(order):] + order[: r % len(order)]:  # rotate who goes first
            typer.echo(f"round {r + 1}/{repeats}: {name}", err=True)
            runs[name].append(run_worker(specs[name], src, work / f"{name}.parquet"))
    results["batch_tokens_sweep"] = {}
    if "onnx-fp32" in specs:
        for value in [int(v) for v in sweep.split(",") if v.strip()] + [batch_tokens]:
            if str(value) in results["batch_tokens_sweep"]:
                continue
            if value == batch_tokens:
                tps = [x["tokens"] / x["wall_seconds"] for x in runs["onnx-fp32"]]
                results["batch_tokens_sweep"][str(value)] = sorted(tps)[len(tps) // 2]
                continue
            typer.echo(f"sweep: onnx-fp32 --batch-tokens {value}", err=True)
            x = run_worker({**specs["onnx-fp32"], "batch_tokens": value}, src, work / "sweep.parquet")
            results["batch_tokens_sweep"][str(value)] = x["tokens"] / x["wall_seconds"]
    results["backends"].update(figures(runs, src, work, manifest, peak, backbone))
    for path in write_all(results, out):
        typer.echo(f"wrote {path}", err=True)
    typer.echo(markdown_table(results))


def tracked_results(out: Path, names: tuple[str, ...]) -> list[Path]:
    """The files ``out/<name>`` that exist and that git tracks (committed results); none outside a checkout."""
    existing = [n for n in names if (out / n).is_file()]
    if not existing:
        return []
    try:
        proc = subprocess.run(["git", "ls-files", "--", *existing], cwd=out, capture_output=True, text=True)
    except OSError:  # no git
        return []
    tracked = set(proc.stdout.split()) if proc.returncode == 0 else set()
    return [out / n for n in existing if n in tracked]


def check_out(out: Path, names: tuple[str, ...], overwrite: bool) -> None:
    """Refuse to overwrite committed results in ``out`` unless ``--overwrite``."""
    tracked = tracked_results(out, names)
    if tracked and not overwrite:
        raise typer.BadParameter(f"{out} holds results committed to git ({', '.join(p.name for p in tracked)}), which "
                                 "this run would overwrite: pass --overwrite to replace them, or another --out "
                                 f"(default: {DEFAULT_OUT})", param_hint="--out")


def check_backbone(backbone: str, bundle: Path) -> None:
    """The reference backends load the backbone: a folder that is not there is a clear error."""
    looks_local = backbone.startswith((".", "/", "~")) or Path(backbone).is_absolute()
    if looks_local and not Path(backbone).expanduser().is_dir():
        raise typer.BadParameter(f"the reference backends load the backbone {backbone!r} recorded in {bundle}'s "
                                 "manifest, which is not a folder from here: pass --backbone FOLDER_OR_HUB_ID",
                                 param_hint="--backbone")


feed_app = typer.Typer(add_completion=False, rich_markup_mode=None,
                       help="Measure the host feed: the whole annotation process with a near-free model, against the raw tokenizer.")


@feed_app.command(cls=Command)
def feed(
    work: Path = typer.Option(DEFAULT_OUT / "work", help="Folder for the feed bundle and corpora (built once, reused)."),
    out: Path = typer.Option(DEFAULT_OUT, help="Folder for feed.json and feed.md. Results committed to git there are replaced only with --overwrite."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace results in --out that git tracks (the committed benchmarks/results)."),
    tokens: int = typer.Option(4_000_000, help="About how many tokens the main corpus holds (log-normal lengths, median ~60 tokens, tail to ~2,000)."),
    memory_tokens: str = typer.Option("1000000,10000000", help="Corpus sizes (tokens, comma-separated) at which peak RSS is measured once each; '' for none."),
    cores: str = typer.Option("0;0,1", help="Core sets to pin each run to with taskset, ';'-separated (e.g. '0;0,1' for 1 then 2 cores); '' runs unpinned."),
    repeats: int = typer.Option(3, help="Rounds; in each, the tokenizer and the annotation run alternately in fresh processes."),
    threshold: float = typer.Option(0.9, help="--threshold of the annotation (0.9 gives about 0.5 mentions per token with the feed bundle)."),
    batch_tokens: int = typer.Option(8192, help="--batch-tokens of the annotation."),
    chunk_rows: int = typer.Option(2048, help="--chunk-rows of the annotation (and the tokenizer's chunk size)."),
    host_threads: int = typer.Option(0, help="--host-threads of the annotation (0: automatic)."),
    seed: int = typer.Option(0, help="Seed of the corpus."),
    version: Optional[bool] = version_option(),
) -> None:
    """Run the feed benchmark and write feed.json and feed.md."""
    from .feed import feed_main

    check_out(out, FEED_FILES, overwrite)

    result = feed_main(work, out, tokens, [int(x) for x in memory_tokens.split(",") if x.strip()],
                       [c.strip() for c in cores.split(";")] if cores.strip() else [""], repeats, threshold,
                       batch_tokens, chunk_rows, host_threads, seed)
    for row in result["scaling"]:
        typer.echo(f"cores {row['cores'] or 'all'}: tokenizer {row['tokenizer_tokens_per_s']:,.0f} tokens/s, "
                   f"annotate {row['annotate_tokens_per_s']:,.0f} tokens/s, feed ratio {row['ratio']:.2f}, "
                   f"peak RSS {row['peak_rss_mb']:.0f} MB")


def feed_entry() -> None:
    feed_app(prog_name="tommer-bench-feed")


def main() -> None:
    app(prog_name="tommer-bench")


if __name__ == "__main__":
    sys.exit(main())
