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

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from .chunk import Chunk, Stats
from .columns import (append_results, column_at, kept_columns, output_schema, resolve_text_column, root_column,
                      texts_of)
from .errors import InputError, Interrupted, collect_and_raise
from .inputs import OUTPUT_SUFFIX, corpus_file, output_paths, resolve_inputs  # noqa: F401 - re-exported
from .locations import RemotePath, atomic_writer, open_input, remove_tree
from .pipeline import pipelined
from .providers import DEFAULT_CHUNK_ROWS, usable_cores
from .selection import Selection, choose, output_selection
from .sources import Source, open_source, read_chunks

if TYPE_CHECKING:
    from .annotator import AnnotateOptions, Annotator
    from .bundle import Manifest

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
    identity: dict[str, Any]  # size, mtime and a content hash: a resume refuses a changed input
    choice: Any = None  # the rows to annotate (selection.choose); None: all
    selection: dict[str, int] | None = None  # --limit/--sample, as recorded in the output


def inspect_input(path: Path, output: Path, text_column: str | None, columns: list[str] | None,
                  keep_candidates: bool, scan_limit: int | None = None) -> InputFile:
    """Open an input (Parquet footer, or a JSON Lines scan of up to ``scan_limit`` rows) and check the
    columns; errors name the file."""
    source = open_source(path, limit=scan_limit)
    schema = source.schema
    column = resolve_text_column(schema, text_column, str(path))
    keep = kept_columns(schema, columns, str(path))
    return InputFile(path, output, column, keep, source.rows,
                     output_schema([schema.field(c) for c in keep], keep_candidates), source,
                     file_identity(path))


def file_identity(path: Path | RemotePath) -> dict[str, Any]:
    """What tells two versions of an input apart, read cheaply whatever the file's size.

    Local Parquet: size, modification time and the sha256 of the footer (row group offsets,
    sizes and statistics: it changes whenever a writer rewrites the file with other rows).
    Local JSON Lines: size, modification time and the sha256 of the last MiB. Remote: size
    and the store's own version tag (ETag, mtime or last-modified), as fsspec reports them.
    """
    if isinstance(path, RemotePath):
        info = path.fs.info(path.path)
        tag = next((info[k] for k in ("ETag", "etag", "mtime", "LastModified", "last_modified", "last_commit")
                    if info.get(k) is not None), None)
        return {"size": info.get("size"), "version": str(tag) if tag is not None else None}
    st = path.stat()
    with open(path, "rb") as fh:
        if path.name.lower().endswith(".parquet") and st.st_size >= 12:
            fh.seek(-8, os.SEEK_END)
            footer = int.from_bytes(fh.read(4), "little")
            fh.seek(-8 - min(footer, st.st_size - 8), os.SEEK_END)
            return {"size": st.st_size, "mtime_ns": st.st_mtime_ns,
                    "footer_sha256": hashlib.sha256(fh.read(footer)).hexdigest()}
        fh.seek(max(0, st.st_size - (1 << 20)))
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "tail_sha256": hashlib.sha256(fh.read()).hexdigest()}


def identity_problem(path: Path, then: dict[str, Any] | None, now: dict[str, Any], what: str) -> str | None:
    """A message naming ``path`` and what changed since ``what`` recorded it, or None if nothing did."""
    if not then or then == now:
        return None
    changed = ", ".join(f"{k} {then.get(k)} then, {v} now" for k, v in now.items() if then.get(k) != v)
    return (f"{path}: the input changed since {what} ({changed}); resuming would mix two versions of the "
            "file: restore it, or pass --overwrite to annotate the new version from the start")




# The options a resume must repeat, as the CLI spells them.
_FLAGS = {"decoding": "--decoding", "threshold": "--threshold", "max_tokens": "--max-tokens",
          "window_overlap": "--window-overlap", "keep_candidates": "--keep-candidates", "chunk_rows": "--chunk-rows",
          "columns": "--columns", "text_column": "--text-column", "bundle": "--model (bundle id)"}


def _flag_value(value: Any) -> str:
    if value is None:
        return "(not given)"
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


class PartStore:
    """The hidden folder of an output's parts, and its progress manifest."""

    def __init__(self, output: Path, fingerprint: dict[str, Any], identity: dict[str, Any] | None = None):
        self.output = output
        self.folder = output.with_name(f".{output.name}.parts")
        self.fingerprint = fingerprint
        self.identity = identity

    def resume_problem(self, source: Path) -> str | None:
        """Why the interrupted run's parts cannot be continued (other options, changed input), or None."""
        progress = self.folder / PROGRESS_NAME
        if not progress.is_file():
            return None
        saved = json.loads(progress.read_text())
        then = saved.get("fingerprint", {})
        diff = [k for k, v in self.fingerprint.items() if then.get(k) != v]
        if diff:
            used = ", ".join(f"{_FLAGS.get(k, k)} {_flag_value(then.get(k))} (now {_flag_value(self.fingerprint[k])})"
                             for k in diff)
            return (f"{self.output}: cannot resume, the interrupted run used {used}: pass the same values to "
                    "continue it, or --overwrite to start again")
        return identity_problem(source, saved.get("input"), self.identity or {}, "the interrupted run started")

    def start(self, resume: bool) -> int:
        """Prepare the folder; returns how many parts are complete (0 unless resuming)."""
        progress = self.folder / PROGRESS_NAME
        if resume and progress.is_file():
            return self._finished_parts()
        remove_tree(self.folder)
        self.folder.mkdir(parents=True)
        _write_atomic(progress, json.dumps({"fingerprint": self.fingerprint, "input": self.identity,
                                            "started": time.time()}, indent=2))
        return 0

    def _finished_parts(self) -> int:
        """How many consecutive parts, from part 0, are complete and readable with the expected rows.

        A part is renamed into place only when written whole, so a present part is complete; its
        footer and row count are still checked (cheap: metadata only), and a part that fails is
        redone with every later one.
        """
        rows = self.fingerprint.get("chunk_rows")
        done = 0
        while (self.folder / self.part_name(done)).is_file():
            try:
                with open_input(self.folder / self.part_name(done)) as fh:
                    n = pq.read_metadata(fh).num_rows
            except (pa.ArrowException, OSError):
                break
            if rows is not None and n > rows:
                break
            done += 1
            if rows is not None and n < rows:  # a short part is the file's last one
                break
        return done

    def discard(self) -> None:
        """Remove the parts folder (a run killed after renaming the output, before this removal)."""
        remove_tree(self.folder)

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
    stats: Stats = field(default_factory=Stats)  # what this run processed
    resumed_rows: int = 0  # rows an interrupted run had finished (finished files and parts)
    elapsed: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.stats.tokens / self.elapsed if self.elapsed else 0.0


def annotate_files(annotator: Annotator, source: str, output: str | None, *, text_column: str | None = None,
                   columns: list[str] | None = None, chunk_rows: int | None = None, overwrite: bool = False,
                   resume: bool = False, on_chunk: Callable[[Chunk], None] | None = None,
                   on_total: Callable[[int], None] | None = None, host_threads: int = 0,
                   selection: Selection = Selection()) -> Summary:
    """Annotate every input file; all inputs are checked before anything is written.

    ``selection``: ``--limit``/``--sample`` (see ``runtime/selection.py``). ``chunk_rows``: rows per
    chunk [default: ``DEFAULT_CHUNK_ROWS`` of the annotator's provider: GPU batches need a large pool].

    ``on_total`` is called once with the number of rows to process (those a resume keeps left
    out), ``on_chunk`` after each chunk (``chunk.stats.rows``, ``chunk.stats.tokens``); for
    progress within a chunk, see ``Annotator.on_progress``. ``host_threads`` threads run each of the
    tokenize, decode and write stages (0: ``default_host_threads()``); one runs the session.
    """
    if host_threads < 0:
        raise InputError(f"--host-threads must be >= 0, found {host_threads}")
    if overwrite and resume:
        raise InputError("--overwrite and --resume exclude each other")
    chunk_rows = DEFAULT_CHUNK_ROWS[annotator.provider] if chunk_rows is None else chunk_rows
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
    fingerprint = {**annotator.options.output_fingerprint(), "bundle": annotator.manifest.bundle_id,
                   "chunk_rows": chunk_rows, "columns": columns, "text_column": text_column,
                   "selection": selection.fingerprint()}
    if resume:
        problems += [p for item in inputs if (p := _resume_problem(item, fingerprint))]
    collect_and_raise(problems, InputError, "cannot annotate")
    summary, start = Summary(), time.perf_counter()
    summary.resumed_rows = sum(_rows_done(i, fingerprint, chunk_rows) for i in inputs) if resume else 0
    if on_total is not None:
        on_total(sum(i.rows for i in inputs) - summary.resumed_rows)
    for item in inputs:
        if resume and item.output.exists():
            PartStore(item.output, {}).discard()
            summary.skipped_files += 1
            continue
        summary.stats.add(_annotate_one(annotator, item, fingerprint, chunk_rows, resume, on_chunk, host_threads))
        summary.files += 1
    summary.elapsed = time.perf_counter() - start
    return summary


def _rows_done(item: InputFile, fingerprint: dict[str, Any], chunk_rows: int) -> int:
    """Rows a resume keeps: the whole file if its output exists, else its finished parts."""
    if item.output.exists():
        return item.rows
    store = PartStore(item.output, fingerprint)
    return min(item.rows, store._finished_parts() * chunk_rows) if (store.folder / PROGRESS_NAME).is_file() else 0


def _resume_problem(item: InputFile, fingerprint: dict[str, Any]) -> str | None:
    """What forbids resuming ``item``: other options or a changed input (for parts or a finished output)."""
    if item.output.exists():
        try:
            info = json.loads((_metadata(item.output) or {}).get(b"tommer", b"{}"))
        except (pa.ArrowException, OSError, ValueError) as exc:
            return f"{item.output}: cannot read the finished output ({exc}); pass --overwrite to redo it"
        return identity_problem(item.path, info.get("input"), item.identity, f"{item.output} was written")
    return PartStore(item.output, fingerprint, item.identity).resume_problem(item.path)


def _annotate_one(annotator: Annotator, item: InputFile, fingerprint: dict[str, Any], chunk_rows: int,
                  resume: bool, on_chunk: Callable[[Chunk], None] | None, host_threads: int) -> Stats:
    store = PartStore(item.output, fingerprint, item.identity)
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
    chunks = pipelined(read(), stages, workers=[n, 1, n, n], cancel=annotator.cancel)
    try:
        for chunk in chunks:
            index = chunk.payload + 1
            stats.add(chunk.stats)
            if on_chunk is not None:
                on_chunk(chunk)
    except BaseException as exc:
        chunks.close()  # the graph run in flight is cancelled, every stage thread joined
        annotator.reset_cancel()
        if isinstance(exc, Interrupted):
            kept = store._finished_parts() if store.folder.is_dir() else 0
            exc.kept.append(f"{item.output}: {kept} finished part(s) of {chunk_rows} rows kept in {store.folder}")
        raise
    store.finalize(item.out_schema.with_metadata(output_metadata(annotator, item)), index)
    return stats


def _metadata(path) -> dict[bytes, bytes] | None:
    with open_input(path) as fh:
        return pq.read_schema(fh).metadata


def default_host_threads() -> int:
    """Threads of each host stage (tokenize, decode, write): one per 4 cores this process may use, 1 to 8."""
    return max(1, min(8, usable_cores() // 4))


def output_metadata(annotator: Annotator, item: InputFile) -> dict[bytes, bytes]:
    return tommer_metadata(annotator.manifest, annotator.options, source=str(item.path), text_column=item.text_column,
                           selection=item.selection, identity=item.identity)


def tommer_metadata(manifest: Manifest, options: AnnotateOptions, *, source: str, text_column: str,
                    selection: dict[str, int] | None, identity: dict[str, Any]) -> dict[bytes, bytes]:
    """The ``tommer`` key of an output's Parquet schema metadata: bundle, options (as resolved by
    ``check_options``), source file and its identity. Both engines write it."""
    from .. import __version__

    info = {"bundle_id": manifest.bundle_id, "bundle_backbone": manifest.backbone.source,
            "layer": manifest.head.layer, "threshold": options.threshold, "decoding": options.decoding,
            "keep_candidates": options.keep_candidates, "max_tokens": options.max_tokens,
            "window_overlap": options.window_overlap, "tommer_version": __version__,
            "source": source, "text_column": text_column, "selection": selection, "input": identity}
    return {b"tommer": json.dumps(info).encode()}
