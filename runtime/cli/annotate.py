"""``tommer-annotate``: a thin Typer command over ``annotate_files``."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from ..execution.providers import AUTO_ORDER
from .common import Command, version_option

app = typer.Typer(add_completion=False, rich_markup_mode=None,
                  help="Annotate Parquet or JSON Lines corpora with a tommer bundle: every mention of every document, to Parquet.")


class Decoding(str, Enum):  # options.STRATEGIES (tests/runtime/test_runtime_light.py holds them equal)
    threshold = "threshold"
    greedy = "greedy"
    flat = "flat"
    nested = "nested"


class Provider(str, Enum):  # "auto" and execution.providers.AUTO_ORDER (held equal by the same test)
    auto = "auto"
    tensorrt = "tensorrt"
    cuda = "cuda"
    cpu = "cpu"


class Engine(str, Enum):
    local = "local"
    ray = "ray"




def _columns(value: Optional[str]) -> Optional[list[str]]:
    return None if value is None else [c.strip() for c in value.split(",") if c.strip()]


@app.command(cls=Command)
def annotate(
    source: Optional[list[str]] = typer.Argument(None, metavar="SOURCE", help="A Parquet or JSON Lines file (.jsonl, .ndjson, .json; plain, .gz, .zst or .bz2), a folder of such files (recursive), or a glob; local or a URL (file://, s3://, gs://, hf://datasets/owner/name@revision/..., any fsspec filesystem). Several (an unquoted glob the shell expanded, or names listed) are one set of inputs, like a quoted glob."),
    model: Path = typer.Option(..., "--model", "-m", help="Bundle folder made by tommer-export (or a file in it, such as bundle/model.onnx)."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Outputs are Parquet. One input file: a file name ending in .parquet, or a folder ending in / (out/ writes out/<name>.parquet); any other name is an error. A folder, a glob or several inputs: a folder (one output per input file, same relative names). Local or a URL. [default: <input>.mentions.parquet beside a single input file]"),
    text_column: Optional[str] = typer.Option(None, help="Column holding the text; a dotted name reaches a nested field (meta.body). [default: 'text'; if absent, the only string column]"),
    columns: Optional[str] = typer.Option(None, help="Comma-separated input columns to keep in the output, e.g. 'id'. [default: all]"),
    decoding: Decoding = typer.Option(Decoding("threshold"), help="threshold: every span above the threshold (nested and overlapping kept); greedy: best first, no overlap; flat: best non-overlapping total; nested: best well-nested set."),
    threshold: float = typer.Option(0.5, help="Keep spans with probability strictly above this."),
    keep_candidates: Optional[float] = typer.Option(None, help="Also write a 'candidates' column with every span above this floor, to re-threshold later without the model. [default: off]"),
    max_tokens: Optional[int] = typer.Option(None, help="Tokens per window, BOS included; longer documents are cut into overlapping windows, never truncated. [default: from the bundle]"),
    window_overlap: Optional[int] = typer.Option(None, help="Tokens shared by consecutive windows (at least the band width + 1). [default: 128, or a quarter of --max-tokens when that is smaller, never below the band width + 1]"),
    batch_tokens: Optional[int] = typer.Option(None, help="Token budget of a batch, padding included. Measured figures: the README's Benchmarks. [default: 512 on cpu, 65536 on cuda/tensorrt]"),
    chunk_rows: Optional[int] = typer.Option(None, help="Rows read, sorted by length and written per part (the look-ahead pool the batches are cut from; also the resume granularity). GPU budgets need a larger pool (the README's Batching). With --engine ray: rows per actor call. [default: 2048 on cpu, 16384 on cuda/tensorrt; 2048 with --engine ray]"),
    provider: Provider = typer.Option(Provider("auto"), help=f"onnxruntime execution provider; auto picks {', then '.join(AUTO_ORDER)} (the first that loads and suits the bundle); a named provider that is missing is an error."),
    threads: int = typer.Option(0, help="CPU threads that run the graph, in all (split among --streams); 0: every usable core. On cuda/tensorrt: the threads of the few nodes left on the CPU (0: onnxruntime's default)."),
    streams: int = typer.Option(0, help="Batches the graph runs at once (one session, each batch on its own --threads / --streams threads; output unchanged). Measured figures: the README's Streams. 0: one per CPU thread (at most 8) on cpu, 1 on cuda/tensorrt."),
    buckets: Optional[bool] = typer.Option(None, "--buckets/--no-buckets", help="Shape buckets: window lengths rounded up to a ladder of 4 sizes per doubling and fixed rows per size, so the graph sees a small fixed set of shapes (TensorRT profiles, CUDA graphs). [default: on for cuda/tensorrt, off on cpu]"),
    io_binding: bool = typer.Option(True, "--io-binding/--no-io-binding", help="Run through onnxruntime IO binding with buffers made once per batch shape (on CUDA: device buffers, one copy of the band back)."),
    cuda_graphs: bool = typer.Option(False, help="Capture one CUDA graph per bucket shape and replay it (cuda/tensorrt only; needs buckets)."),
    cache_dir: Optional[Path] = typer.Option(None, help="Folder for TensorRT engine and timing caches (one subfolder per bundle), reused by later runs and Ray actors. [default: $TOMMER_CACHE, else $XDG_CACHE_HOME/tommer, else ~/.cache/tommer]"),
    host_threads: int = typer.Option(0, help="Threads for each host stage (tokenize, decode, write) around the one that runs the model; 0: one per 4 usable cores, 1 to 8."),
    limit: Optional[int] = typer.Option(None, help="Annotate only the first N rows, in input order across the files (sorted names); later files are not read and get no output. For a trial run. [default: every row]"),
    sample: Optional[int] = typer.Option(None, help="Annotate N rows drawn uniformly at random without replacement from all input rows (JSON Lines inputs are read once more to count them), kept in input order; files with none get no output. N above the rows there are: every row, and the summary says so. [default: every row]"),
    seed: int = typer.Option(0, help="Random seed of --sample: the same inputs and seed give the same rows."),
    resume: bool = typer.Option(False, help="Continue an interrupted run: keep finished outputs and finished parts. With --engine ray: keep the complete output folders (those with _SUCCESS) and redo the others from scratch."),
    overwrite: bool = typer.Option(False, help="Replace existing outputs (with --engine ray: every output folder of the inputs)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or progress lines (with --engine ray: no Ray Data progress bars or logs); print only the summary. [default: off]"),
    progress_every: float = typer.Option(30.0, help="When stderr is not a terminal (logs, nohup, schedulers): seconds between plain progress lines (rows, tokens, tokens/s, ETA); on a terminal a bar is shown instead."),
    engine: Engine = typer.Option(Engine.local, help="local: this process; ray: Ray Data (pip install 'tommer[ray]'): one job, one pool of --num-workers actors for every input (Parquet only, sharing the text column and kept columns), inputs and --output local or URLs, one output folder per input file (part files, then _SUCCESS)."),
    num_workers: int = typer.Option(1, help="With --engine ray: annotator actors (each loads the bundle once)."),
    num_cpus_per_worker: float = typer.Option(1.0, help="With --engine ray: CPUs reserved per actor; leave some for Ray's read and write tasks. Unless --threads is given, an actor runs the graph on this many threads (at least 1)."),
    num_gpus_per_worker: float = typer.Option(0.0, help="With --engine ray: GPUs per actor (> 0 selects the cuda provider)."),
    ray_address: Optional[str] = typer.Option(None, help="With --engine ray: cluster address. [default: a running cluster, else a local one]"),
    ray_task_retries: int = typer.Option(3, help="With --engine ray: how many times a block is retried after the actor annotating it was lost (a node went away, out of memory, a crash); past that the job stops with an error instead of retrying without end. Lost actors are always restarted."),
    version: Optional[bool] = version_option(),
    check: bool = typer.Option(False, "--check", help="Read no input: open the bundle's session as this run would (the same --provider, --threads, --cuda-graphs, ...), run one small batch, and print the provider that loaded, every node not on it (onnxruntime's placement log), the Memcpy nodes, the attention kernel path and whether CUDA graphs are possible. Exits 1 when a node of the model fell back to another provider (or --cuda-graphs cannot work), 2 when the session cannot open."),
) -> None:
    """Find every mention in the texts of SOURCE and write them to Parquet."""
    from ..errors import Interrupted, TommerError
    from ..options import AnnotateOptions, RunOptions

    options = AnnotateOptions(
        decoding=decoding.value, threshold=threshold, max_tokens=max_tokens, window_overlap=window_overlap,
        batch_tokens=batch_tokens, keep_candidates=keep_candidates, provider=provider.value, threads=threads,
        streams=streams, buckets=buckets, io_binding=io_binding, cuda_graphs=cuda_graphs,
        cache_dir=str(cache_dir) if cache_dir else None)
    run = RunOptions(text_column=text_column, columns=_columns(columns), chunk_rows=chunk_rows,
                     host_threads=host_threads, overwrite=overwrite, resume=resume)
    if check:
        raise typer.Exit(code=_check(model, options))
    if not source:
        typer.echo("error: Missing argument 'SOURCE' (the inputs to annotate; --check needs none)", err=True)
        raise typer.Exit(code=2)
    sources = source[0] if len(source) == 1 else source
    if engine is Engine.ray and (limit is not None or sample is not None):
        typer.echo("error: --limit and --sample work with the local engine only", err=True)
        raise typer.Exit(code=2)
    if engine is Engine.ray:
        _annotate_ray(model, sources, output, run, options, workers=num_workers, cpus=num_cpus_per_worker,
                      gpus=num_gpus_per_worker, address=ray_address, quiet=quiet, task_retries=ray_task_retries)
        return
    from ..annotator import Annotator
    from ..engines.local import annotate_files
    from ..io.selection import Selection

    try:
        with _signals_stop():
            with _progress(quiet, sys.stderr.isatty(), progress_every) as bar:
                annotator = Annotator(_bundle_folder(model), options)
                annotator.on_progress = bar and bar.advance
                summary = annotate_files(annotator, sources, output, run=run, on_total=bar and bar.set_total,
                                         selection=Selection(limit, sample, seed))
    except TommerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    except Interrupted as exc:
        _report_interrupt(exc)
        raise typer.Exit(code=128 + exc.signum) from None
    streams = annotator.options.streams
    _print_summary(summary, f"{annotator.provider} ({streams} stream{'s' if streams > 1 else ''})")
    _note_selection(summary, limit, sample)


def _bundle_folder(model: Path) -> Path:
    """The bundle folder ``--model`` names: a file in a bundle (``bundle/model.onnx``, ``bundle/tommer.json``)
    stands for its folder."""
    from ..bundle import MANIFEST_NAME
    from ..errors import BundleError

    if not model.is_file():
        return model
    if (model.parent / MANIFEST_NAME).is_file():
        return model.parent
    raise BundleError(f"--model {model} is a file: --model takes the bundle folder made by tommer-export "
                      f"(the folder holding {MANIFEST_NAME}, model.onnx and tokenizer.json)")


def _note_selection(summary, limit: int | None, sample: int | None) -> None:
    """Say so when --limit or --sample asked for more rows than the inputs hold (every row was annotated)."""
    asked = sample if sample is not None else limit
    if asked is None:
        return
    held = summary.stats.rows + summary.resumed_rows
    if asked > held:
        flag = "--sample" if sample is not None else "--limit"
        typer.echo(f"note: {flag} {asked:,} asked for more rows than the inputs hold ({held:,}): every row was "
                   "annotated")


def _print_summary(summary, where: str) -> None:
    """The closing lines: what was done, then every output written or kept, and the text column
    when tommer chose it."""
    s = summary.stats
    resumed = f" (+{summary.resumed_rows} rows finished before the resume)" if summary.resumed_rows else ""
    padding = f"padding {s.padding_fraction:.1%}, " if s.padded_tokens else ""
    windowed = f"{s.documents_windowed} documents windowed, " if s.padded_tokens else ""
    typer.echo(
        f"annotated {summary.files} file(s) ({summary.skipped_files} already done) on {where}: "
        f"{s.rows} rows{resumed}, {windowed}{s.tokens} tokens, {s.mentions} mentions, "
        f"{padding}{summary.elapsed:.1f} s, {summary.tokens_per_second:,.0f} tokens/s"
    )
    for path, column in summary.text_columns.items():
        typer.echo(f"text column: {column!r} of {path} (the only string column; name another with --text-column)")
    for path in summary.written:
        typer.echo(f"wrote {path}")
    for path in summary.kept:
        typer.echo(f"kept {path} (finished before the resume)")


def _annotate_ray(model, source, output, run, options, *, workers: int, cpus: float, gpus: float, address,
                  quiet: bool, task_retries: int = 3) -> None:
    from ..engines.ray import SUCCESS, annotate_files_ray
    from ..errors import InputError, Interrupted, TommerError

    try:
        if output is None:
            raise InputError("--engine ray needs --output FOLDER (one output folder per input file)")
        with _signals_stop():
            summary = annotate_files_ray(_bundle_folder(model), source, output, run=run, workers=workers, num_cpus_per_worker=cpus,
                                         num_gpus_per_worker=gpus, options=options, address=address, quiet=quiet,
                                         task_retries=task_retries)
    except TommerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    except Interrupted as exc:
        exc.kept.append(f"{output}: the complete output folders (with {SUCCESS}) are kept")
        _report_interrupt(exc)
        raise typer.Exit(code=128 + exc.signum) from None
    _print_summary(summary, "Ray")


@contextlib.contextmanager
def _signals_stop():
    """SIGINT (Ctrl-C) and SIGTERM raise ``Interrupted`` in the main thread, which stops the pipeline in
    order (the graph run in flight is cancelled, finished parts are kept); a second signal exits at once."""
    import os
    import signal

    from ..errors import Interrupted

    def handler(signum, frame):
        if stopping:
            os.write(2, b"\nsecond signal: exiting now; finished parts are kept\n")
            os._exit(128 + signum)
        stopping.append(signum)
        raise Interrupted(signum)

    stopping: list[int] = []
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _report_interrupt(exc) -> None:
    import shlex
    import signal

    args = [a for a in sys.argv[1:] if a != "--overwrite"]
    again = shlex.join(["tommer-annotate", *args] + ([] if "--resume" in args else ["--resume"]))
    kept = "".join(f"\n  {line}" for line in exc.kept)
    typer.echo(f"interrupted by {signal.Signals(exc.signum).name}: stopped cleanly{kept}\n"
               f"to continue where it stopped: {again}", err=True)


class _progress:
    """Progress in rows and tokens, moving within a chunk (``Annotator.on_progress``, once per batch).

    On a terminal: a rich bar (rows of the total, tokens, tokens/s, elapsed, ETA). Elsewhere (logs,
    ``nohup``, schedulers): a plain line on stderr at once (loading the bundle, checking the inputs),
    again when the rows to do are known, then every ``every`` seconds. ``silent``: nothing.
    """

    def __init__(self, silent: bool, terminal: bool, every: float):
        self.silent, self.terminal, self.every = silent, terminal, every
        self.rows: float = 0.0  # rows done, fractional within a chunk (a batch's share of its tokens)
        self.tokens = 0
        self.total: int | None = None
        self.lock = threading.Lock()

    def __enter__(self):
        if self.silent:
            return None
        self.start = self.last = time.perf_counter()
        if self.terminal:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.bar = Progress(BarColumn(), TextColumn("{task.fields[rows]} rows"), TextColumn("{task.fields[rate]}"),
                                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), transient=True)
            self.bar.__enter__()
            self.task = self.bar.add_task("annotate", total=None, rows="0", rate="")
        else:
            self._write("progress: loading the bundle and checking the inputs")
        return self

    def set_total(self, rows: int) -> None:
        self.total = rows
        if self.terminal:
            self.bar.update(self.task, total=rows, rows=f"0/{rows:,}")
        elif not self.silent:
            with self.lock:
                self.last = now = time.perf_counter()
                self._write(self.line(now, 0.0))

    @staticmethod
    def _write(line: str) -> None:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def advance(self, rows: float, tokens: int) -> None:
        with self.lock:
            self.rows += rows
            self.tokens += tokens
            now = time.perf_counter()
            rate = self.tokens / max(now - self.start, 1e-9)
            if self.terminal:
                self.bar.update(self.task, advance=rows, rows=f"{int(self.rows):,}/{self.total or 0:,}",
                                rate=f"{self.tokens:,} tokens, {rate:,.0f} tokens/s")
            elif now - self.last >= self.every:
                self.last = now
                self._write(self.line(now, rate))

    def line(self, now: float, rate: float) -> str:
        done, total = int(self.rows), self.total or 0
        elapsed = now - self.start
        eta = elapsed * (total - self.rows) / self.rows if self.rows and total else None
        share = f" ({self.rows / total:.1%})" if total else ""
        return (f"progress: {done:,}/{total:,} rows{share}, {self.tokens:,} tokens, {rate:,.0f} tokens/s, "
                f"elapsed {_clock(elapsed)}, ETA {_clock(eta) if eta is not None else '?'}")

    def __exit__(self, *exc):
        if not self.silent and self.terminal:
            self.bar.__exit__(*exc)
        return False


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _check(model: Path, options) -> int:
    """``--check``: where the graph really runs, from onnxruntime's own log (``execution.placement``).

    The session is the one a run opens (``Annotator`` with the same options); one batch of a short
    and a window-long text runs in it, since the CUDA kernels say which attention path they take
    when they run. Returns the exit status: 0 passed, 1 a node of the model fell back (or CUDA
    graphs were asked for and cannot work), 2 the session could not open or run."""
    from ..annotator import Annotator
    from ..errors import TommerError
    from ..execution import placement

    annotator, error = None, None
    with placement.observe() as seen:
        try:
            annotator = Annotator(model, options)
            long = " ".join(["word"] * max(1, annotator.max_tokens))
            annotator.annotate(["Ada Lovelace met Charles Babbage in London.", long])
        except TommerError as exc:
            error = exc
    typer.echo(f"bundle: {model} (asked for --provider {options.provider})")
    parsed = placement.parse_log(seen.text)
    loaded = annotator.provider if annotator is not None else options.provider
    result = placement.check(parsed, loaded, cuda_graphs=options.cuda_graphs)
    if annotator is None and not parsed.seen:
        typer.echo(f"error: {error}", err=True)
        return 2
    for line in placement.report_lines(result, on_purpose=len(parsed.on_purpose)):
        typer.echo(line)
    if error is not None:
        typer.echo(f"error: {error}", err=True)
        return 2
    return 0 if result.ok else 1


def main() -> None:
    app(prog_name="tommer-annotate")


if __name__ == "__main__":
    main()
