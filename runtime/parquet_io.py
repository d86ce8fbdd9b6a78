"""Parquet in, Parquet out: streaming, in input order, resumable, never half-written.

Each output file is built from parts: input rows ``[k * chunk_rows, (k + 1) * chunk_rows)``
go to part k, written under a temporary name and renamed when complete, in a hidden
folder beside the output with a small progress manifest (``progress.json``). When
every part is there, they are joined into the output (again through a temporary
name) and the folder is removed. ``--resume`` continues after the last complete
part; the chunking does not depend on the interruption and a row's mentions do not
depend on its batch, so the result equals an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from .chunk import Chunk, Stats
from .columns import (RESULT_COLUMNS, append_results, column_at, output_schema, resolve_text_column, root_column,
                      texts_of)
from .errors import InputError, collect_and_raise
from .inputs import OUTPUT_SUFFIX, corpus_file, output_paths, resolve_inputs  # noqa: F401 - re-exported
from .locations import atomic_writer, open_input, remove_tree
from .pipeline import pipelined
from .selection import Selection, choose, output_selection
from .sources import Source, open_source, read_chunks

if TYPE_CHECKING:
    from .annotator import Annotator

PROGRESS_NAME = "progress.json"


@dataclass(frozen=True)
class InputFile:
    path: Path
    output: Path
    text_column: str
    keep: list[str]  # input columns carried to the output
    rows: int
    out_schema: pa.Schema
    source: Source
    choice: Any = None  # the rows to annotate (selection.choose); None: all
    selection: dict[str, int] | None = None  # --limit/--sample, as recorded in the output


def inspect_input(path: Path, output: Path, text_column: str | None, columns: list[str] | None,
                  keep_candidates: bool, scan_limit: int | None = None) -> InputFile:
    """Open an input (Parquet footer, or a JSON Lines scan of up to ``scan_limit`` rows) and check the
    columns; errors name the file."""
    source = open_source(path, limit=scan_limit)
    schema = source.schema
    column = resolve_text_column(schema, text_column, str(path))
    keep = list(schema.names) if columns is None else columns
    missing = [c for c in keep if c not in schema.names]
    if missing:
        raise InputError(f"{path}: --columns names {missing} which the file lacks; columns: {', '.join(schema.names)}")
    clash = [c for c in RESULT_COLUMNS if c in keep]
    if clash:
        raise InputError(f"{path}: input columns {clash} would be overwritten by the output; drop them with --columns")
    return InputFile(path, output, column, keep, source.rows,
                     output_schema([schema.field(c) for c in keep], keep_candidates), source)


class PartStore:
    """The hidden folder of an output's parts, and its progress manifest."""

    def __init__(self, output: Path, fingerprint: dict[str, Any]):
        self.output = output
        self.folder = output.with_name(f".{output.name}.parts")
        self.fingerprint = fingerprint

    def start(self, resume: bool) -> int:
        """Prepare the folder; returns how many parts are complete (0 unless resuming)."""
        progress = self.folder / PROGRESS_NAME
        if resume and progress.is_file():
            saved = json.loads(progress.read_text())
            if saved.get("fingerprint") != self.fingerprint:
                diff = {k: (saved.get("fingerprint", {}).get(k), v) for k, v in self.fingerprint.items()
                        if saved.get("fingerprint", {}).get(k) != v}
                raise InputError(f"{self.output}: cannot resume, the options differ from the interrupted run "
                                 f"(option: (then, now)) {diff}; rerun with --overwrite to start again")
            done = 0
            while (self.folder / self.part_name(done)).is_file():
                done += 1
            return done
        remove_tree(self.folder)
        self.folder.mkdir(parents=True)
        _write_atomic(progress, json.dumps({"fingerprint": self.fingerprint, "started": time.time()}, indent=2))
        return 0

    @staticmethod
    def part_name(index: int) -> str:
        return f"part-{index:06d}.parquet"

    def write(self, index: int, table: pa.Table) -> None:
        with atomic_writer(self.folder / self.part_name(index)) as fh:
            pq.write_table(table, fh)

    def finalize(self, schema: pa.Schema, parts: int) -> None:
        """Join the parts, in order, into the output (through a temporary name)."""
        with atomic_writer(self.output) as fh, pq.ParquetWriter(fh, schema) as writer:
            for k in range(parts):
                with open_input(self.folder / self.part_name(k)) as part:
                    for batch in pq.ParquetFile(part).iter_batches(batch_size=65536):
                        writer.write_batch(batch)
        remove_tree(self.folder)


def _write_atomic(path: Path, text: str) -> None:
    with atomic_writer(path) as fh:
        fh.write(text.encode())


@dataclass
class Summary:
    files: int = 0
    skipped_files: int = 0
    stats: Stats = field(default_factory=Stats)
    elapsed: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.stats.tokens / self.elapsed if self.elapsed else 0.0


def annotate_files(annotator: Annotator, source: str, output: str | None, *, text_column: str | None = None,
                   columns: list[str] | None = None, chunk_rows: int = 2048, overwrite: bool = False,
                   resume: bool = False, on_chunk: Callable[[Chunk], None] | None = None,
                   on_total: Callable[[int], None] | None = None, host_threads: int = 0,
                   selection: Selection = Selection()) -> Summary:
    """Annotate every input file; all inputs are checked before anything is written.

    ``selection``: ``--limit``/``--sample`` (see ``runtime/selection.py``).

    ``on_total`` is called once with the number of rows to process, ``on_chunk`` after each chunk
    (``chunk.stats.rows``, ``chunk.stats.tokens``). ``host_threads`` threads run each of the
    tokenize, decode and write stages (0: ``default_host_threads()``); one runs the session.
    """
    if host_threads < 0:
        raise InputError(f"--host-threads must be >= 0, found {host_threads}")
    if overwrite and resume:
        raise InputError("--overwrite and --resume exclude each other")
    if chunk_rows < 1:
        raise InputError(f"--chunk-rows must be >= 1, found {chunk_rows}")
    files, root = resolve_inputs(source, output, accept=corpus_file)
    outs = output_paths(files, root, output)
    inputs, problems = [], []
    remaining = selection.limit
    for f, o in zip(files, outs):
        if remaining == 0:
            break  # --limit reached: later files are not read
        try:
            inputs.append(inspect_input(f, o, text_column, columns, annotator.options.keep_candidates is not None,
                                        scan_limit=remaining))
        except InputError as exc:
            problems.append(str(exc))
            continue
        remaining = None if remaining is None else remaining - min(inputs[-1].rows, remaining)
    inputs = choose(inputs, selection) if not problems else inputs
    for item in inputs:
        held = output_selection(_metadata(item.output)) if resume and item.output.exists() else None
        if held != item.selection and resume and item.output.exists():
            problems.append(f"{item.output} holds the rows of {held or 'every row'}, not of "
                            f"{item.selection or 'every row'}: pass --overwrite to replace it")
        if item.output.exists() and not (overwrite or resume):
            problems.append(f"{item.output} already exists: pass --overwrite to replace it or --resume to keep it")
        elif PartStore(item.output, {}).folder.exists() and not (overwrite or resume):
            problems.append(f"{item.output}: an interrupted run left finished parts: pass --resume to continue "
                            "it or --overwrite to start again")
        if item.output.resolve() == item.path.resolve():
            problems.append(f"{item.output}: the output would overwrite its input")
    collect_and_raise(problems, InputError, "cannot annotate")
    fingerprint = {**annotator.options.output_fingerprint(), "bundle": annotator.manifest.bundle_id,
                   "chunk_rows": chunk_rows, "columns": columns, "text_column": text_column,
                   "selection": selection.fingerprint()}
    summary, start = Summary(), time.perf_counter()
    if on_total is not None:
        on_total(sum(i.rows for i in inputs if not (resume and i.output.exists())))
    for item in inputs:
        if resume and item.output.exists():
            summary.skipped_files += 1
            continue
        summary.stats.add(_annotate_one(annotator, item, fingerprint, chunk_rows, resume, on_chunk, host_threads))
        summary.files += 1
    summary.elapsed = time.perf_counter() - start
    return summary


def _annotate_one(annotator: Annotator, item: InputFile, fingerprint: dict[str, Any], chunk_rows: int,
                  resume: bool, on_chunk: Callable[[Chunk], None] | None, host_threads: int) -> Stats:
    store = PartStore(item.output, fingerprint)
    done = store.start(resume)
    stats = Stats()
    read_columns = list(dict.fromkeys(item.keep + [root_column(item.source.schema, item.text_column)]))

    def read() -> Iterator[Chunk]:
        for index, table in enumerate(read_chunks(item.source, read_columns, chunk_rows, done * chunk_rows, item.choice), start=done):
            begin = time.perf_counter()
            chunk = Chunk(texts=texts_of(column_at(table, item.text_column), str(item.path), item.text_column),
                          payload=(index, table.select(item.keep)))
            chunk.stats.seconds["read"] += time.perf_counter() - begin
            yield chunk

    schema = item.out_schema.remove_metadata()

    def write(chunk: Chunk) -> Chunk:
        begin = time.perf_counter()
        index, rows = chunk.payload
        store.write(index, append_results(rows, chunk).cast(schema))
        chunk.payload = index
        chunk.texts, chunk.tokens, chunk.mentions, chunk.candidates = [], None, None, None  # free early
        chunk.stats.seconds["write"] += time.perf_counter() - begin
        return chunk

    n = host_threads or default_host_threads()
    index = done
    stages = [annotator.tokenize, annotator.infer, annotator.decode, write]
    for chunk in pipelined(read(), stages, workers=[n, 1, n, n]):
        index = chunk.payload + 1
        stats.add(chunk.stats)
        if on_chunk is not None:
            on_chunk(chunk)
    store.finalize(item.out_schema.with_metadata(output_metadata(annotator, item)), index)
    return stats


def _metadata(path) -> dict[bytes, bytes] | None:
    with open_input(path) as fh:
        return pq.read_schema(fh).metadata


def default_host_threads() -> int:
    """Threads of each host stage (tokenize, decode, write): one per 4 cores this process may use, 1 to 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores // 4))


def output_metadata(annotator: Annotator, item: InputFile) -> dict[bytes, bytes]:
    from .. import __version__

    opts = annotator.options
    info = {"bundle_id": annotator.manifest.bundle_id, "bundle_backbone": annotator.manifest.backbone.source,
            "layer": annotator.manifest.head.layer, "threshold": opts.threshold, "decoding": opts.decoding,
            "keep_candidates": opts.keep_candidates, "max_tokens": opts.max_tokens,
            "window_overlap": opts.window_overlap, "tommer_version": __version__,
            "source": str(item.path), "text_column": item.text_column, "selection": item.selection}
    return {b"tommer": json.dumps(info).encode()}
