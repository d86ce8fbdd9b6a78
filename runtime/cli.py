"""``tommer-annotate``: a thin Typer command over ``annotate_files``."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, rich_markup_mode=None,
                  help="Annotate Parquet or JSON Lines corpora with a tommer bundle: every mention of every document, to Parquet.")


class Decoding(str, Enum):
    threshold = "threshold"
    greedy = "greedy"
    flat = "flat"
    nested = "nested"


class Engine(str, Enum):
    local = "local"
    ray = "ray"


class Provider(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    tensorrt = "tensorrt"


DEFAULT_CHUNK_ROWS = {"cpu": 2048, "cuda": 16384, "tensorrt": 16384}


def _columns(value: Optional[str]) -> Optional[list[str]]:
    return None if value is None else [c.strip() for c in value.split(",") if c.strip()]


@app.command()
def annotate(
    source: str = typer.Argument(..., help="A Parquet or JSON Lines file (.jsonl, .ndjson, .json; plain, .gz, .zst or .bz2), a folder of such files (recursive), or a glob; local or a URL (file://, s3://, gs://, hf://datasets/owner/name@revision/..., any fsspec filesystem)."),
    model: Path = typer.Option(..., "--model", "-m", help="Bundle folder made by tommer-export."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Output file (*.parquet, one input) or folder (one output per input file, same relative names, .parquet); local or a URL. [default: <input>.mentions.parquet beside a single input file]"),
    text_column: Optional[str] = typer.Option(None, help="Column holding the text; a dotted name reaches a nested field (meta.body). [default: 'text'; if absent, the only string column]"),
    columns: Optional[str] = typer.Option(None, help="Comma-separated input columns to keep in the output, e.g. 'id'. [default: all]"),
    decoding: Decoding = typer.Option(Decoding.threshold, help="threshold: every span above the threshold (nested and overlapping kept); greedy: best first, no overlap; flat: best non-overlapping total; nested: best well-nested set."),
    threshold: float = typer.Option(0.5, help="Keep spans with probability strictly above this."),
    keep_candidates: Optional[float] = typer.Option(None, help="Also write a 'candidates' column with every span above this floor, to re-threshold later without the model. [default: off]"),
    max_tokens: Optional[int] = typer.Option(None, help="Tokens per window, BOS included; longer documents are cut into overlapping windows, never truncated. [default: from the bundle]"),
    window_overlap: int = typer.Option(128, help="Tokens shared by consecutive windows (at least the band width + 1)."),
    batch_tokens: Optional[int] = typer.Option(None, help="Token budget of a batch, padding included. [default: 512 on cpu (fastest measured: activations stay in cache), 65536 on cuda/tensorrt]"),
    chunk_rows: Optional[int] = typer.Option(None, help="Rows read, sorted by length and written per part (the look-ahead pool the batches are cut from; also the resume granularity). GPU budgets need a large pool: with 2,048 rows and 65,536-token batches only 64% of the tokens fed were real on the benchmark corpus, 92% with 16,384 (benchmarks/results/buckets.md). [default: 2048 on cpu, 16384 on cuda/tensorrt]"),
    provider: Provider = typer.Option(Provider.auto, help="onnxruntime execution provider; auto picks tensorrt, then cuda, then cpu; a named provider that is missing is an error."),
    threads: int = typer.Option(0, help="onnxruntime intra-op threads; 0 lets onnxruntime use every core."),
    buckets: Optional[bool] = typer.Option(None, "--buckets/--no-buckets", help="Shape buckets: window lengths rounded up to a ladder of 4 sizes per doubling and fixed rows per size, so the graph sees a small fixed set of shapes (TensorRT profiles, CUDA graphs). [default: on for cuda/tensorrt, off on cpu]"),
    io_binding: bool = typer.Option(True, "--io-binding/--no-io-binding", help="Run through onnxruntime IO binding with buffers made once per batch shape (on CUDA: device buffers, one copy of the band back)."),
    cuda_graphs: bool = typer.Option(False, help="Capture one CUDA graph per bucket shape and replay it (cuda/tensorrt only; needs buckets)."),
    cache_dir: Optional[Path] = typer.Option(None, help="Folder for TensorRT engine and timing caches (one subfolder per bundle), reused by later runs and Ray actors. [default: $TOMMER_CACHE, else $XDG_CACHE_HOME/tommer, else ~/.cache/tommer]"),
    host_threads: int = typer.Option(0, help="Threads for each host stage (tokenize, decode, write) around the one that runs the model; 0: one per 4 usable cores, 1 to 8."),
    limit: Optional[int] = typer.Option(None, help="Annotate only the first N rows, in input order across the files (sorted names); later files are not read and get no output. For a trial run. [default: every row]"),
    sample: Optional[int] = typer.Option(None, help="Annotate N rows drawn uniformly at random without replacement from all input rows (JSON Lines inputs are read once more to count them), kept in input order; files with none get no output. [default: every row]"),
    seed: int = typer.Option(0, help="Random seed of --sample: the same inputs and seed give the same rows."),
    resume: bool = typer.Option(False, help="Continue an interrupted run: keep finished outputs and finished parts."),
    overwrite: bool = typer.Option(False, help="Replace existing outputs."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar; print only the summary."),
    engine: Engine = typer.Option(Engine.local, help="local: this process; ray: Ray Data (pip install 'tommer[ray]'), inputs and --output may be remote (s3://...), one output folder per input file."),
    num_workers: int = typer.Option(1, help="With --engine ray: annotator actors (each loads the bundle once)."),
    num_cpus_per_worker: float = typer.Option(1.0, help="With --engine ray: CPUs reserved per actor; leave some for Ray's read and write tasks."),
    num_gpus_per_worker: float = typer.Option(0.0, help="With --engine ray: GPUs per actor (> 0 selects the cuda provider)."),
    ray_address: Optional[str] = typer.Option(None, help="With --engine ray: cluster address. [default: a running cluster, else a local one]"),
) -> None:
    """Find every mention in the texts of SOURCE and write them to Parquet."""
    from .annotator import AnnotateOptions, Annotator
    from .errors import TommerError
    from .parquet_io import annotate_files
    from .selection import Selection

    if engine is Engine.ray and (limit is not None or sample is not None):
        typer.echo("error: --limit and --sample work with the local engine only", err=True)
        raise typer.Exit(code=2)
    if engine is Engine.ray:
        _annotate_ray(model, source, output, text_column, _columns(columns), chunk_rows or 2048, num_workers,
                      num_cpus_per_worker, num_gpus_per_worker, ray_address, AnnotateOptions(
                          decoding=decoding.value, threshold=threshold, max_tokens=max_tokens,
                          window_overlap=window_overlap, batch_tokens=batch_tokens, keep_candidates=keep_candidates,
                          provider=provider.value, threads=threads, buckets=buckets, io_binding=io_binding,
                          cuda_graphs=cuda_graphs, cache_dir=str(cache_dir) if cache_dir else None))
        return
    try:
        annotator = Annotator(model, AnnotateOptions(
            decoding=decoding.value, threshold=threshold, max_tokens=max_tokens, window_overlap=window_overlap,
            batch_tokens=batch_tokens, keep_candidates=keep_candidates, provider=provider.value, threads=threads,
            buckets=buckets, io_binding=io_binding, cuda_graphs=cuda_graphs,
            cache_dir=str(cache_dir) if cache_dir else None))
        chunk_rows = chunk_rows or DEFAULT_CHUNK_ROWS[annotator.provider]
        with _progress(quiet or not sys.stderr.isatty()) as bar:
            summary = annotate_files(annotator, source, output, text_column=text_column, columns=_columns(columns),
                                     chunk_rows=chunk_rows, overwrite=overwrite, resume=resume,
                                     on_chunk=bar and bar.update, on_total=bar and bar.total,
                                     host_threads=host_threads, selection=Selection(limit, sample, seed))
    except TommerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    s = summary.stats
    typer.echo(
        f"annotated {summary.files} file(s) ({summary.skipped_files} already done) on {annotator.provider}: "
        f"{s.rows} rows, {s.documents_windowed} documents windowed, {s.tokens} tokens, {s.mentions} mentions, "
        f"padding {s.padding_fraction:.1%}, {summary.elapsed:.1f} s, {summary.tokens_per_second:,.0f} tokens/s"
    )


def _annotate_ray(model, source, output, text_column, columns, rows, workers, cpus, gpus, address, options) -> None:
    from .annotator import check_options
    from .bundle import read_manifest
    from .errors import InputError, TommerError
    from .ray_engine import annotate_files_ray

    try:
        if output is None:
            raise InputError("--engine ray needs --output FOLDER (one output folder per input file)")
        check_options(read_manifest(model), options)  # fail fast, before Ray starts; no graph loaded
        summary = annotate_files_ray(model, source, output, text_column=text_column, columns=columns,
                                     rows_per_batch=rows, workers=workers, num_cpus_per_worker=cpus,
                                     num_gpus_per_worker=gpus, options=options, address=address)
    except TommerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    typer.echo(f"annotated {summary['files']} file(s) ({summary['skipped_files']} already done) on Ray: "
               f"{summary['rows']} rows, {summary['seconds']:.1f} s")


class _progress:
    """A rich progress bar (rows, tokens/s, elapsed, ETA) on a terminal; nothing otherwise."""

    def __init__(self, silent: bool):
        self.silent = silent

    def __enter__(self):
        if self.silent:
            return None
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.bar = Progress(BarColumn(), MofNCompleteColumn(), TextColumn("rows"), TextColumn("{task.fields[rate]}"),
                            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), transient=True)
        self.bar.__enter__()
        self.task = self.bar.add_task("annotate", total=None, rate="")
        self.tokens = 0
        import time

        self.start = time.perf_counter()
        return self

    def total(self, rows: int) -> None:
        self.bar.update(self.task, total=rows)

    def update(self, chunk) -> None:
        import time

        self.tokens += chunk.stats.tokens
        rate = self.tokens / max(time.perf_counter() - self.start, 1e-9)
        self.bar.update(self.task, advance=chunk.stats.rows, rate=f"{rate:,.0f} tokens/s")

    def __exit__(self, *exc):
        if not self.silent:
            self.bar.__exit__(*exc)
        return False


def main() -> None:
    app(prog_name="tommer-annotate")


if __name__ == "__main__":
    sys.exit(main())
