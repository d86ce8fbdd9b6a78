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

import glob
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .annotator import MENTION_TYPE, Annotator, Chunk, Stats, append_results
from .errors import InputError, Interrupted, collect_and_raise
from .pipeline import pipelined

PROGRESS_NAME = "progress.json"
OUTPUT_SUFFIX = ".mentions.parquet"


def _is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or getattr(pa.types, "is_string_view", lambda _: False)(t)


def _hidden(path: Path, root: Path) -> bool:
    """Hidden or underscore-prefixed below ``root`` (pyarrow's dataset convention: parts, _SUCCESS, ...)."""
    return any(part.startswith((".", "_")) for part in path.relative_to(root).parts)


def resolve_inputs(source: str, output: str | None = None) -> tuple[list[Path], Path | None]:
    """Input files (sorted) and the folder their relative output names start from (None: one file).

    Hidden and underscore-prefixed files and folders are skipped, and so is everything under
    ``output``: an output folder inside the input folder is never read back as input.
    """
    path = Path(source)
    if path.is_file():
        return [path], None
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.parquet") if p.is_file() and not _hidden(p, path))
        root: Path | None = path
    else:
        files = sorted(Path(p) for p in glob.glob(source, recursive=True) if Path(p).is_file())
        root = Path(os.path.commonpath([str(p.parent) for p in files])) if files else None
        files = [f for f in files if not _hidden(f, root)]
    if output is not None:
        out = Path(output).resolve()
        files = [f for f in files if f.resolve() != out and out not in f.resolve().parents]
    if not files:
        raise InputError(f"{source}: no Parquet file found (expected a file, a folder of *.parquet or a glob; "
                         "hidden and _-prefixed files and the output location are skipped)")
    return files, root


def output_paths(files: list[Path], root: Path | None, output: str | None) -> list[Path]:
    """Where each input's output goes; a folder input keeps relative names under ``output``.

    A folder or glob that matched exactly one file is treated like that file.
    """
    if len(files) == 1:
        root = None
    if output is None:
        if root is not None:
            raise InputError("several input files: pass --output FOLDER for their outputs")
        return [files[0].with_name(files[0].name.removesuffix(".parquet") + OUTPUT_SUFFIX)]
    out = Path(output)
    if root is not None and out.suffix == ".parquet":
        raise InputError(f"--output {output} names one Parquet file, but there are {len(files)} input files "
                         f"({files[0]}, {files[1]}, ...): pass a folder for their outputs")
    if root is None and out.suffix == ".parquet":
        return [out]
    if root is None:
        return [out / files[0].name]
    return [out / f.relative_to(root) for f in files]


def texts_of(column: pa.ChunkedArray | pa.Array, file: str, name: str) -> list[str | None]:
    """Python strings of a text column (string, large_string, string_view or dictionary of those)."""
    t = column.type
    if pa.types.is_dictionary(t) and _is_string(t.value_type):
        column = pc.cast(column, t.value_type)
    elif not _is_string(t):
        raise InputError(f"{file}: column {name!r} has type {t}, expected a string column")
    return column.to_pylist()


def resolve_text_column(schema: pa.Schema, requested: str | None, file: str) -> str:
    """``requested`` if present; else 'text'; else the only string column; else an error listing them."""
    names = schema.names
    if requested and requested in names:
        column = requested
    elif requested and requested != "text":
        raise InputError(f"{file}: no column {requested!r}; columns: {', '.join(names)}")
    else:
        strings = [f.name for f in schema if _is_string(f.type) or
                   (pa.types.is_dictionary(f.type) and _is_string(f.type.value_type))]
        if "text" in names:
            column = "text"
        elif len(strings) == 1:
            column = strings[0]
        else:
            raise InputError(f"{file}: no column 'text' and {len(strings)} string columns ({', '.join(strings) or 'none'}); "
                             f"pick one with --text-column (columns: {', '.join(names)})")
    t = schema.field(column).type
    if not (_is_string(t) or (pa.types.is_dictionary(t) and _is_string(t.value_type))):
        raise InputError(f"{file}: column {column!r} has type {t}, expected a string column")
    return column


@dataclass(frozen=True)
class InputFile:
    path: Path
    output: Path
    text_column: str
    keep: list[str]  # input columns carried to the output
    rows: int
    out_schema: pa.Schema
    identity: dict[str, Any]  # size, mtime and footer hash: a resume refuses a changed input


def inspect_input(path: Path, output: Path, text_column: str | None, columns: list[str] | None,
                  keep_candidates: bool) -> InputFile:
    """Open a Parquet file's metadata and check the columns; errors name the file."""
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: not a readable Parquet file ({exc})") from exc
    schema = pf.schema_arrow
    column = resolve_text_column(schema, text_column, str(path))
    keep = list(schema.names) if columns is None else columns
    missing = [c for c in keep if c not in schema.names]
    if missing:
        raise InputError(f"{path}: --columns names {missing} which the file lacks; columns: {', '.join(schema.names)}")
    clash = [c for c in ("mentions", "n_tokens", "candidates") if c in keep]
    if clash:
        raise InputError(f"{path}: input columns {clash} would be overwritten by the output; drop them with --columns")
    fields = [schema.field(c) for c in keep] + [pa.field("mentions", pa.list_(MENTION_TYPE)), pa.field("n_tokens", pa.int32())]
    if keep_candidates:
        fields.append(pa.field("candidates", pa.list_(MENTION_TYPE)))
    return InputFile(path, output, column, keep, pf.metadata.num_rows, pa.schema(fields), file_identity(path))


def file_identity(path: Path) -> dict[str, Any]:
    """Size, modification time and sha256 of the Parquet footer (row group offsets, sizes and statistics).

    The footer changes whenever a Parquet writer rewrites the file with other rows, and reading it
    costs one seek, whatever the file's size.
    """
    st = path.stat()
    with open(path, "rb") as fh:
        fh.seek(-8, os.SEEK_END)
        footer = int.from_bytes(fh.read(4), "little")
        fh.seek(-8 - footer, os.SEEK_END)
        digest = hashlib.sha256(fh.read(footer)).hexdigest()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "footer_sha256": digest}


def identity_problem(path: Path, then: dict[str, Any] | None, now: dict[str, Any], what: str) -> str | None:
    """A message naming ``path`` and what changed since ``what`` recorded it, or None if nothing did."""
    if not then or then == now:
        return None
    changed = ", ".join(f"{k} {then.get(k)} then, {v} now" for k, v in now.items() if then.get(k) != v)
    return (f"{path}: the input changed since {what} ({changed}); resuming would mix two versions of the "
            "file: restore it, or pass --overwrite to annotate the new version from the start")


def read_chunks(path: Path, columns: list[str], chunk_rows: int, skip_rows: int) -> Iterator[pa.Table]:
    """Tables of exactly ``chunk_rows`` rows (the last may be shorter), from row ``skip_rows`` on."""
    pf = pq.ParquetFile(path)
    first, seen = 0, 0
    while first < pf.metadata.num_row_groups and seen + pf.metadata.row_group(first).num_rows <= skip_rows:
        seen += pf.metadata.row_group(first).num_rows  # skip the leading row groups already done
        first += 1
    groups = list(range(first, pf.metadata.num_row_groups))
    pending: list[pa.RecordBatch] = []
    pending_rows, to_drop = 0, skip_rows - seen
    if not groups:
        return
    for batch in pf.iter_batches(batch_size=min(chunk_rows, 65536), row_groups=groups, columns=columns):
        if to_drop:
            cut = min(to_drop, batch.num_rows)
            batch, to_drop = batch.slice(cut), to_drop - cut
        pending.append(batch)
        pending_rows += batch.num_rows
        while pending_rows >= chunk_rows:
            table = pa.Table.from_batches(pending).combine_chunks()
            yield table.slice(0, chunk_rows)
            rest = table.slice(chunk_rows)
            pending, pending_rows = rest.to_batches(), rest.num_rows
    if pending_rows:
        yield pa.Table.from_batches(pending).combine_chunks()


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
        shutil.rmtree(self.folder, ignore_errors=True)
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
                n = pq.read_metadata(self.folder / self.part_name(done)).num_rows
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
        shutil.rmtree(self.folder, ignore_errors=True)

    @staticmethod
    def part_name(index: int) -> str:
        return f"part-{index:06d}.parquet"

    def write(self, index: int, table: pa.Table) -> None:
        target = self.folder / self.part_name(index)
        tmp = target.with_name(f".{target.name}.tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, target)

    def finalize(self, schema: pa.Schema, parts: int) -> None:
        """Join the parts, in order, into the output (through a temporary name)."""
        tmp = self.output.with_name(f".{self.output.name}.tmp")
        with pq.ParquetWriter(tmp, schema) as writer:
            for k in range(parts):
                for batch in pq.ParquetFile(self.folder / self.part_name(k)).iter_batches(batch_size=65536):
                    writer.write_batch(batch)
        os.replace(tmp, self.output)
        shutil.rmtree(self.folder)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


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
                   columns: list[str] | None = None, chunk_rows: int = 2048, overwrite: bool = False,
                   resume: bool = False, on_chunk: Callable[[Chunk], None] | None = None,
                   on_total: Callable[[int], None] | None = None, host_threads: int = 0) -> Summary:
    """Annotate every input file; all inputs are checked before anything is written.

    ``on_total`` is called once with the number of rows to process (those a resume keeps left
    out), ``on_chunk`` after each chunk (``chunk.stats.rows``, ``chunk.stats.tokens``); for
    progress within a chunk, see ``Annotator.on_progress``. ``host_threads`` threads run each of the
    tokenize, decode and write stages (0: ``default_host_threads()``); one runs the session.
    """
    if host_threads < 0:
        raise InputError(f"--host-threads must be >= 0, found {host_threads}")
    if overwrite and resume:
        raise InputError("--overwrite and --resume exclude each other")
    if chunk_rows < 1:
        raise InputError(f"--chunk-rows must be >= 1, found {chunk_rows}")
    files, root = resolve_inputs(source, output)
    outs = output_paths(files, root, output)
    inputs, problems = [], []
    for f, o in zip(files, outs):
        try:
            inputs.append(inspect_input(f, o, text_column, columns, annotator.options.keep_candidates is not None))
        except InputError as exc:
            problems.append(str(exc))
    for item in inputs:
        if item.output.exists() and not (overwrite or resume):
            problems.append(f"{item.output} already exists: pass --overwrite to replace it or --resume to keep it")
        elif PartStore(item.output, {}).folder.exists() and not (overwrite or resume):
            problems.append(f"{item.output}: an interrupted run left finished parts: pass --resume to continue "
                            "it or --overwrite to start again")
        if item.output.resolve() == item.path.resolve():
            problems.append(f"{item.output}: the output would overwrite its input")
    fingerprint = {**annotator.options.output_fingerprint(), "bundle": annotator.manifest.bundle_id,
                   "chunk_rows": chunk_rows, "columns": columns, "text_column": text_column}
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
            info = json.loads((pq.read_schema(item.output).metadata or {}).get(b"tommer", b"{}"))
        except (pa.ArrowException, OSError, ValueError) as exc:
            return f"{item.output}: cannot read the finished output ({exc}); pass --overwrite to redo it"
        return identity_problem(item.path, info.get("input"), item.identity, f"{item.output} was written")
    return PartStore(item.output, fingerprint, item.identity).resume_problem(item.path)


def _annotate_one(annotator: Annotator, item: InputFile, fingerprint: dict[str, Any], chunk_rows: int,
                  resume: bool, on_chunk: Callable[[Chunk], None] | None, host_threads: int) -> Stats:
    store = PartStore(item.output, fingerprint, item.identity)
    done = store.start(resume)
    stats = Stats()
    read_columns = list(dict.fromkeys(item.keep + [item.text_column]))

    def read() -> Iterator[Chunk]:
        for index, table in enumerate(read_chunks(item.path, read_columns, chunk_rows, done * chunk_rows), start=done):
            begin = time.perf_counter()
            chunk = Chunk(texts=texts_of(table.column(item.text_column), str(item.path), item.text_column),
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
            "source": str(item.path), "text_column": item.text_column, "input": item.identity}
    return {b"tommer": json.dumps(info).encode()}
