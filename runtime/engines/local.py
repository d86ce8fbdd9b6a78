"""The local engine: files in, Parquet out, streaming, in input order, resumable, never half-written.

Every input is found and checked before anything is written (``engines.inspect``); each
output is built from parts (``io.parts``) by the stage pipeline (``engines.pipeline``):
read, tokenize, infer, decode, write, each in its own threads with bounded queues.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pyarrow as pa

from ..core.annotator import Annotator
from ..core.chunk import Annotated, Chunk, Inferred, Stats, Tokenized
from ..core.columns import append_results, column_at, texts_of
from ..core.partial import Partial
from ..errors import InputError, Interrupted, collect_and_raise
from ..io.inputs import corpus_file, format_problem, output_paths, resolve_inputs
from ..io.metadata import read_tommer
from ..io.parts import PartStore
from ..io.selection import Selection, choose
from ..io.sources import read_chunks
from ..options import RunOptions
from .inspect import (
    InputFile,
    Summary,
    finished_output_problem,
    inspect_input,
    metadata_for,
    output_record,
    run_fingerprint,
)
from .pipeline import pipelined


def annotate_files(annotator: Annotator, source: str | Sequence[str], output: str | None, *,
                   run: RunOptions | None = None, on_chunk: Callable[[Written], None] | None = None,
                   on_total: Callable[[int], None] | None = None,
                   selection: Selection = Selection(), **run_fields) -> Summary:
    """Annotate every input file; all inputs are checked before anything is written.

    ``source``: a file, a folder or a glob, or several of them (one set of inputs); ``output``: see
    ``io/inputs.py`` (one input: a ``.parquet`` file or a folder ``out/``; several: a folder).

    ``run``: how files are walked (``options.RunOptions``); its fields may also be given as
    keywords (``text_column=``, ``columns=``, ``chunk_rows=``, ``host_threads=``, ``overwrite=``,
    ``resume=``). ``selection``: ``--limit``/``--sample`` (see ``io/selection.py``).

    ``on_total`` is called once with the number of rows to process (those a resume keeps left
    out), ``on_chunk`` after each chunk is written (a ``Written``: ``.index``, ``.stats.rows``, ``.stats.tokens``); for
    progress within a chunk, see ``Annotator.on_progress``.
    """
    run = dataclasses.replace(run or RunOptions(), **run_fields).for_provider(annotator.provider)
    files, root = resolve_inputs(source, output, accept=corpus_file)
    outs = output_paths(files, root, output)
    inputs, problems = [], []
    remaining = selection.limit
    for f, o in zip(files, outs):
        if remaining == 0:
            break  # --limit reached: later files are not read
        problem = format_problem(f)
        if problem:
            problems.append(problem)
            continue
        try:
            inputs.append(inspect_input(f, o, run.text_column, run.columns,
                                        annotator.options.keep_candidates is not None, scan_limit=remaining))
        except InputError as exc:
            problems.append(str(exc))
            continue
        remaining = None if remaining is None else remaining - min(inputs[-1].rows, remaining)
    inputs = choose(inputs, selection) if not problems else inputs
    fingerprint = run_fingerprint(annotator.manifest, annotator.options, run, selection)
    problems += [p for item in inputs for p in _output_problems(item, run, fingerprint)]
    collect_and_raise(problems, InputError, "cannot annotate")
    summary, start = Summary(), time.perf_counter()
    summary.text_columns = {str(i.path): i.text_column for i in inputs if i.text_column_chosen}
    summary.resumed_rows = sum(_rows_done(i, fingerprint) for i in inputs) if run.resume else 0
    if on_total is not None:
        on_total(sum(i.rows for i in inputs) - summary.resumed_rows)
    record = output_record(annotator.manifest, annotator.options)
    for item in inputs:
        if run.resume and item.output.exists():
            PartStore(item.output, {}).discard()
            summary.skipped_files += 1
            summary.kept.append(str(item.output))
            continue
        summary.stats.add(_annotate_one(annotator, item, record, fingerprint, run, on_chunk))
        summary.files += 1
        summary.written.append(str(item.output))
    summary.elapsed = time.perf_counter() - start
    return summary


def _output_problems(item: InputFile, run: RunOptions, fingerprint: dict) -> list[str]:
    """What stops ``item``'s output from being written: an existing output or parts without
    --overwrite/--resume, an output that is its input, or a resume that would mix two runs."""
    problems = []
    exists = item.output.exists()
    if str(item.output) == str(item.path) or (exists and item.output.resolve() == item.path.resolve()):
        problems.append(f"{item.output}: the output would overwrite its input: pass another --output")
    elif exists and not (run.overwrite or run.resume):
        problems.append(f"{item.output} already exists: pass --overwrite to replace it or --resume to keep it")
    elif PartStore(item.output, {}).folder.exists() and not (run.overwrite or run.resume):
        problems.append(f"{item.output}: an interrupted run left finished parts: pass --resume to continue "
                        "it or --overwrite to start again")
    if run.resume and exists:
        problem = _kept_output_problem(item, fingerprint)
        problems += [problem] if problem else []
    elif run.resume:
        problem = PartStore(item.output, fingerprint, item.identity).resume_problem(item.path)
        problems += [problem] if problem else []
    return problems


def _kept_output_problem(item: InputFile, fingerprint: dict) -> str | None:
    """Why --resume may not keep ``item``'s finished output (rows, options or input differ)."""
    try:
        info = read_tommer(item.output)
    except (pa.ArrowException, OSError, ValueError) as exc:
        return f"{item.output}: cannot read the finished output ({exc}); pass --overwrite to redo it"
    held = info.get("selection")
    if held != item.selection:
        return (f"{item.output} holds the rows of {held or 'every row'}, not of {item.selection or 'every row'}: "
                "pass --overwrite to replace it")
    return finished_output_problem(item.output, item.path, item.identity, fingerprint, info)


def _rows_done(item: InputFile, fingerprint: dict) -> int:
    """Rows a resume keeps: the whole file if its output exists, else its finished parts."""
    if item.output.exists():
        return item.rows
    store = PartStore(item.output, fingerprint)
    return min(item.rows, store.finished_parts() * fingerprint["chunk_rows"]) if store.started else 0


@dataclasses.dataclass(frozen=True)
class Written:
    """A chunk whose part is written: its index in the file and what it took."""

    index: int
    stats: Stats


def _annotate_one(annotator: Annotator, item: InputFile, record: dict, fingerprint: dict, run: RunOptions,
                  on_chunk: Callable[[Written], None] | None) -> Stats:
    """Annotate one input into its part store, then join the parts into the output.

    On any exception (Ctrl-C, ``Annotator.cancel``, an error), the model work of the chunks not yet
    written is kept beside the parts (``_keep_unwritten``), so that a resume loses at most the
    batches in flight: one per stream.
    """
    assert run.chunk_rows is not None  # resolved by RunOptions.for_provider
    chunk_rows = run.chunk_rows
    store = PartStore(item.output, fingerprint, item.identity)
    done = store.start(run.resume)
    saved = store.partial_indices() if run.resume else set()  # chunks an interrupted run got part way
    unwritten: dict[int, Partial] = {}  # chunk index -> its windows done, until its part is written
    stats = Stats()

    def read() -> Iterator[Chunk]:
        for index, table in enumerate(read_chunks(item.source, item.read_columns, chunk_rows, done * chunk_rows,
                                                  item.choice), start=done):
            begin = time.perf_counter()
            chunk = Chunk(texts=texts_of(column_at(table, item.text_column), str(item.path), item.text_column),
                          payload=(index, table.select(item.keep)))
            if index in saved:
                chunk.partial = _saved_partial(store, index, table.num_rows)
            chunk.stats.seconds["read"] += time.perf_counter() - begin
            yield chunk

    def infer(chunk: Tokenized) -> Inferred:
        try:
            return annotator.infer(chunk)
        finally:  # done or not: what the graph did for this chunk is kept until its part is written
            if chunk.partial is not None and len(chunk.partial.windows):
                unwritten[chunk.payload[0]] = chunk.partial

    schema = item.out_schema.remove_metadata()

    def write(chunk: Annotated) -> Written:
        begin = time.perf_counter()
        index, rows = chunk.payload
        store.write(index, append_results(rows, chunk).cast(schema))
        unwritten.pop(index, None)
        if index in saved:
            store.drop_partial(index)
        chunk.stats.seconds["write"] += time.perf_counter() - begin
        return Written(index, chunk.stats)  # the chunk's texts, tokens and mentions are freed here

    n = run.host_threads
    index = done
    stages: list[Callable[[Any], Any]] = [annotator.tokenize, infer, annotator.decode, write]
    chunks = pipelined(read(), stages, workers=[n, 1, n, n], cancel=annotator.cancel)
    try:
        for written in chunks:
            index = written.index + 1
            stats.add(written.stats)
            if on_chunk is not None:
                on_chunk(written)
    except BaseException as exc:
        chunks.close()  # the graph run in flight is cancelled, every stage thread joined
        annotator.reset_cancel()
        kept = _keep_unwritten(store, unwritten, exc)
        if isinstance(exc, Interrupted):
            parts = store.finished_parts() if store.folder.is_dir() else 0
            exc.kept.append(f"{item.output}: {parts} finished part(s) of {chunk_rows} rows kept in {store.folder}")
            exc.kept += [f"{item.output}: {line}" for line in kept]
        raise
    store.finalize(item.out_schema.with_metadata(metadata_for(item, record, fingerprint)), index)
    return stats


def _saved_partial(store: PartStore, index: int, rows: int) -> Partial | None:
    """The windows of chunk ``index`` an interrupted run kept, or None (none, unreadable, another chunk)."""
    arrays = store.read_partial(index)
    partial = None if arrays is None else Partial.from_arrays(arrays)
    return partial if partial is not None and partial.rows == rows else None


def _keep_unwritten(store: PartStore, unwritten: dict[int, Partial], exc: BaseException) -> list[str]:
    """Save the model work of the chunks whose part was not written; one line per chunk kept, for the user.

    A failure to save never hides ``exc``: it is told in the lines (or in a note on ``exc``).
    """
    if not unwritten or not store.folder.is_dir():
        return []
    lines = []
    try:
        for index in sorted(unwritten):
            p = unwritten[index]
            path = store.write_partial(index, p.to_arrays())
            what = (f"every window done ({p.rows:,} rows, not yet written)" if p.complete else
                    f"the finished batches: {len(p.windows):,} of {p.total:,} windows, every window of "
                    f"{p.rows_done:,} of {p.rows:,} rows")
            lines.append(f"part {index}: {what}, kept in {path}")
    except Exception as failure:  # noqa: BLE001 - told to the user, never in place of exc
        lines.append(f"the finished batches could not be kept ({failure}): a resume redoes them")
        if hasattr(exc, "add_note") and not isinstance(exc, Interrupted):
            exc.add_note(lines[-1])
    return lines
