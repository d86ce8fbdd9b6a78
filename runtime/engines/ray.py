"""Scale out on Ray Data: the same annotator on many CPUs/GPUs and machines.

One Ray Dataset reads every input file (``include_paths`` tags each row with its file), one
pool of stateful actors annotates it (each actor loads the bundle once for the whole job
and runs the very same ``Annotator.process``: tokenization, length-sorted batches,
windows, decoding), and a datasink writes each write task's rows of a file as one part,
``<output>/<file>/part-<task index>.parquet``, with the same ``tommer`` schema metadata
as the local engine. A task Ray retries (a worker or actor lost) has the same index and
rewrites the same parts, so no row is written twice. A file is complete once all its rows
are written: a small ledger actor counts them as write tasks finish and writes the
folder's ``_SUCCESS`` last, so a job stopped midway keeps its finished files, and
``--resume`` skips them and redoes the others from scratch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..bundle import read_manifest
from ..core.annotator import Annotator
from ..core.chunk import Chunk
from ..core.columns import append_results, column_at, texts_of
from ..errors import GraphRunError, InputError, TommerError, collect_and_raise
from ..execution.session import describe_error
from ..io.inputs import resolve_inputs
from ..io.locations import RemotePath, as_location, atomic_writer, remove_tree
from ..io.parts import part_name
from ..io.selection import Selection
from ..options import DEFAULT_RAY_ROWS_PER_BATCH, AnnotateOptions, RunOptions, check_options
from .inspect import (
    InputFile,
    Summary,
    finished_output_problem,
    inspect_input,
    metadata_for,
    output_record,
    run_fingerprint,
)

try:
    from ray.data import Datasink
except ImportError:  # Ray is optional: annotate_files_ray says what to install
    Datasink = object  # type: ignore[misc,assignment]

SUCCESS = "_SUCCESS"
PATH_COLUMN = "path"  # the column ray.data.read_parquet(include_paths=True) adds: each row's input file


def _require_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise InputError("--engine ray needs Ray Data: pip install 'tommer[ray]'") from exc
    try:
        import fsspec.implementations.http  # noqa: F401
    except ImportError:
        # Without aiohttp this import fails; Ray Data's path resolution tries it from several
        # threads at once and then sometimes fails with "cannot import name 'HTTPFileSystem'"
        # (an ImportError it does not catch) instead of the ModuleNotFoundError it expects.
        # A None entry makes every later try raise ModuleNotFoundError at once.
        sys.modules.setdefault("fsspec.implementations.http", None)
    return ray


class _AnnotateBlocks:
    """The Ray actor: one Annotator per worker, reused for every block of every file."""

    def __init__(self, bundle: str, options: dict[str, Any], text_column: str, keep: list[str] | None):
        self.annotator = Annotator(bundle, AnnotateOptions(**options))
        self.text_column, self.keep = text_column, keep

    def __call__(self, batch: pa.Table) -> pa.Table:
        where = batch.column(PATH_COLUMN)[0].as_py() if PATH_COLUMN in batch.column_names and batch.num_rows else "<ray block>"
        chunk = self.annotator.process(Chunk(texts=texts_of(column_at(batch, self.text_column), where,
                                                             self.text_column)))
        rows = batch.select(self.keep) if self.keep is not None else batch
        return append_results(rows, chunk)


def annotate_dataset(dataset, bundle: str | Path, *, text_column: str = "text", columns: list[str] | None = None,
                     rows_per_batch: int = 2048, workers: int = 1, num_cpus_per_worker: float = 1.0,
                     num_gpus_per_worker: float = 0.0, task_retries: int = 3, actor: type = _AnnotateBlocks,
                     **options: Any):
    """A Ray Dataset of the input rows (or ``columns``) plus ``mentions`` and ``n_tokens``.

    ``options`` are those of ``AnnotateOptions`` (decoding, threshold, max_tokens, ...). One pool
    of ``workers`` actors; a lost actor is restarted (a node can go away), and the block it was
    annotating is retried on a live actor, at most ``task_retries`` times: a block that kills
    every actor it reaches (out of memory, a crash) fails the job instead of looping forever
    (Ray Data's default retries without end). Unless ``threads`` is given, an actor runs the
    graph on ``num_cpus_per_worker`` threads (at least 1; on the CPU one stream each), so that
    actors sharing a node do not oversubscribe it. ``actor``: the actor class (tests inject
    faults through a subclass).
    """
    from ray.data import ActorPoolStrategy

    if num_gpus_per_worker and options.get("provider", "auto") == "auto":
        options = {**options, "provider": "cuda"}  # a GPU actor runs the cuda provider
    if not options.get("threads"):  # an actor runs the graph on the CPUs Ray reserved for it, not on every core
        options = {**options, "threads": max(1, int(num_cpus_per_worker))}
    keep = None if columns is None else list(columns)
    with warnings.catch_warnings():
        # max_restarts / max_task_retries have no named parameter in map_batches yet, and Ray warns
        # on every extra remote argument (to be removed in Ray 2.64: the extra pins ray below it)
        warnings.filterwarnings("ignore", message=r".*ray_remote_args. is deprecated")
        return dataset.map_batches(
            actor, batch_format="pyarrow", batch_size=rows_per_batch, compute=ActorPoolStrategy(size=workers),
            num_cpus=num_cpus_per_worker, num_gpus=num_gpus_per_worker, max_restarts=-1, max_task_retries=task_retries,
            fn_constructor_kwargs={"bundle": str(bundle), "options": options, "text_column": text_column, "keep": keep},
        )


@dataclasses.dataclass(frozen=True)
class _Target:
    """One input file to annotate and its output folder."""

    key: str  # the file as Ray's reader and its path column name it
    source: str  # the file as the user named it (metadata, messages)
    folder: Path | RemotePath
    rows: int
    schema: pa.Schema  # the output schema, with the tommer metadata
    identity: dict[str, Any]


def _part(folder, task: int):
    return folder / part_name(task)


def _mark_complete(target: _Target) -> None:
    """``_SUCCESS``: the file's ``tommer`` record (options, fingerprint, input identity) and its rows."""
    with atomic_writer(target.folder / SUCCESS) as fh:
        fh.write(json.dumps({**json.loads(target.schema.metadata[b"tommer"]), "rows": target.rows}).encode())


class _Ledger:
    """Counts the rows written per file (per write task, so a retried task counts once) and marks a
    file complete as soon as all its rows are written, while the job goes on."""

    def __init__(self, targets: dict[str, _Target]):
        self.targets = targets
        self.written: dict[str, dict[int, int]] = defaultdict(dict)

    def wrote(self, task: int, rows: dict[str, int]) -> None:
        for source, n in rows.items():
            self.written[source][task] = n
            if sum(self.written[source].values()) == self.targets[source].rows:
                _mark_complete(self.targets[source])


class _PerFileParquet(Datasink):
    """Ray Data's write step: each task writes its rows of each file as one part named by the task
    index, with the file's output schema (and metadata), then tells the ledger."""

    def __init__(self, targets: dict[str, _Target], ledger):
        self.targets, self.ledger = targets, ledger
        self.totals: dict[str, list[int]] = {}

    def write(self, blocks: Iterable, ctx) -> dict[str, list[int]]:
        import ray
        from ray.data.block import BlockAccessor

        tables = [t for t in (BlockAccessor.for_block(b).to_arrow() for b in blocks) if t.num_rows]
        if not tables:
            return {}
        table = pa.concat_tables(tables)
        paths = table.column(PATH_COLUMN)
        done: dict[str, list[int]] = {}
        for source in pc.unique(paths).to_pylist():
            target = self.targets.get(source)
            if target is None:
                raise TommerError(f"Ray read rows of {source!r}, which is none of the inputs "
                                  f"({', '.join(list(self.targets)[:3])}, ...): please report this")
            rows = table.filter(pc.equal(paths, source)).select(target.schema.names).cast(target.schema)
            with atomic_writer(_part(target.folder, ctx.task_idx)) as fh:
                pq.write_table(rows, fh)
            done[source] = [rows.num_rows, int(pc.sum(rows.column("n_tokens")).as_py() or 0),
                            int(pc.sum(pc.list_value_length(rows.column("mentions"))).as_py() or 0)]
        try:
            ray.get(self.ledger.wrote.remote(ctx.task_idx, {s: v[0] for s, v in done.items()}))
        except ray.exceptions.RayActorError:
            pass  # the ledger only marks files early; on_write_complete marks every complete file
        return done

    def on_write_complete(self, write_result) -> None:
        """Check every file's row count against its input and mark the complete ones (those the
        ledger has not marked yet: files without rows, or if the ledger was lost)."""
        totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        for returned in write_result.write_returns:
            for source, counts in (returned or {}).items():
                totals[source] = [a + b for a, b in zip(totals[source], counts)]
        wrong = []
        for key, target in self.targets.items():
            rows = totals[key][0]
            if rows != target.rows:
                wrong.append(f"{target.source}: Ray wrote {rows} rows, the input has {target.rows}; "
                             f"{target.folder} is left incomplete (no {SUCCESS}): rerun with --resume")
                continue
            if rows == 0:  # no task saw this file: an empty part keeps its schema
                with atomic_writer(_part(target.folder, 0)) as fh:
                    pq.write_table(target.schema.empty_table(), fh)
            if not (target.folder / SUCCESS).is_file():
                _mark_complete(target)
        self.totals = dict(totals)
        collect_and_raise(wrong, TommerError, "the Ray job lost or duplicated rows")


def annotate_files_ray(bundle: str | Path, source: str, output: str, *, run: RunOptions = RunOptions(),
                       workers: int = 1, num_cpus_per_worker: float = 1.0, num_gpus_per_worker: float = 0.0,
                       options: AnnotateOptions = AnnotateOptions(), address: str | None = None,
                       quiet: bool = False, task_retries: int = 3, actor: type = _AnnotateBlocks) -> Summary:
    """Annotate every input file into ``output/<file>/`` (part files + ``_SUCCESS``) in one Ray job.

    Inputs: a Parquet file, a folder or a glob, local or a URL, found as the local engine finds
    them; a folder keeps its relative names under ``output``. Every input is checked before Ray
    starts. An existing output folder is an error unless ``resume`` (complete folders, those with
    ``_SUCCESS``, are kept; the others redone from scratch) or ``overwrite`` (all redone).
    ``quiet``: no progress bars or execution logs from Ray Data. ``task_retries``: how many
    times a block whose actor died is retried before the job fails (see ``annotate_dataset``).
    ``run.chunk_rows``: rows per actor call [default: ``DEFAULT_RAY_ROWS_PER_BATCH``].
    """
    if task_retries < 0:
        raise InputError(f"--ray-task-retries must be >= 0, found {task_retries}")
    run.check()
    rows_per_batch = run.chunk_rows or DEFAULT_RAY_ROWS_PER_BATCH
    run = dataclasses.replace(run, chunk_rows=rows_per_batch)
    manifest = read_manifest(Path(bundle))
    options = check_options(manifest, options)
    plan = _plan(manifest, options, source, output, run)
    summary = Summary(files=len(plan.targets), skipped_files=plan.skipped, kept=plan.kept,
                      written=[str(t.folder) for t in plan.targets],
                      text_columns={t.source: plan.text_column for t in plan.targets} if plan.chosen else {})
    if not plan.targets:
        return summary
    ray = _require_ray()
    start = time.perf_counter()
    for target in plan.targets:  # a folder that exists here was asked for with --resume or --overwrite
        remove_tree(target.folder)
        target.folder.mkdir(parents=True)
    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False,
                 **({"logging_level": logging.WARNING} if quiet else {}))
    targets = {t.key: t for t in plan.targets}
    ledger = ray.remote(num_cpus=0, max_restarts=0)(_Ledger).remote(targets)
    sink = _PerFileParquet(targets, ledger)
    try:
        with _settings(ray, quiet):  # before the dataset is made: it keeps a copy of the settings
            dataset = ray.data.read_parquet(list(targets), filesystem=plan.filesystem, include_paths=True)
            dataset = dataset.select_columns([*plan.read_columns, PATH_COLUMN])  # pushed down into the read
            annotated = annotate_dataset(dataset, bundle, text_column=plan.text_column,
                                         columns=plan.keep + [PATH_COLUMN], rows_per_batch=rows_per_batch,
                                         workers=workers, num_cpus_per_worker=num_cpus_per_worker,
                                         num_gpus_per_worker=num_gpus_per_worker, task_retries=task_retries,
                                         actor=actor,
                                         **dataclasses.asdict(options))
            try:
                annotated.write_datasink(sink)
            except Exception as exc:
                if not _actor_lost(ray, exc):
                    raise
                raise GraphRunError(
                    f"a Ray actor was lost on the same block {task_retries + 1} time(s) (the first try and "
                    f"--ray-task-retries {task_retries}): the block kills the actor that annotates it, most often "
                    "by running out of memory (lower --batch-tokens or --chunk-rows, or reserve more per worker), "
                    "else a crash: the workers' logs say which. Raise --ray-task-retries if nodes merely go away. "
                    f"Complete output folders (with {SUCCESS}) are kept; --resume redoes the others. "
                    f"Ray said: {describe_error(exc)}") from exc
    finally:
        ray.kill(ledger)
    for counts in sink.totals.values():
        summary.stats.rows += counts[0]
        summary.stats.tokens += counts[1]
        summary.stats.mentions += counts[2]
    summary.elapsed = time.perf_counter() - start
    return summary


def _actor_lost(ray, exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) says an actor died or became unreachable."""
    lost = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)
    seen = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, lost):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


@contextlib.contextmanager
def _settings(ray, quiet: bool):
    """Ray Data settings for one job, restored after: rows in input order (and so the parts);
    with ``quiet``, no progress bars or progress logs."""
    context = ray.data.DataContext.get_current()
    saved = (context.execution_options.preserve_order, context.enable_progress_bars, context.print_on_execution_start)
    loggers = [logging.getLogger(name) for name in ("ray.data", "ray.data._internal.progress")]
    levels = [logger.level for logger in loggers]
    context.execution_options.preserve_order = True
    if quiet:
        context.enable_progress_bars = context.print_on_execution_start = False
        loggers[0].setLevel(logging.WARNING)  # progress lines and "execution finished"
        loggers[1].setLevel(logging.ERROR)  # "Progress bars disabled. To enable, ..."
    try:
        yield
    finally:
        context.execution_options.preserve_order, context.enable_progress_bars, context.print_on_execution_start = saved
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


@dataclasses.dataclass
class _Plan:
    targets: list[_Target]  # the files to annotate
    skipped: int  # complete outputs kept by --resume
    kept: list[str]  # their folders
    text_column: str
    chosen: bool  # the text column was not named: the only string column was taken
    keep: list[str]  # input columns carried to the output
    read_columns: list[str]
    filesystem: Any  # for Ray's reader: None (local) or the inputs' fsspec filesystem, wrapped for pyarrow


def _plan(manifest, options: AnnotateOptions, source: str, output: str, run: RunOptions) -> _Plan:
    """Find and check every input and its output folder; every problem is reported at once."""
    files, root = resolve_inputs(source, output)
    out = as_location(output)
    out = out if isinstance(out, RemotePath) else Path(os.path.abspath(out))  # Ray workers may run elsewhere
    problems: list[str] = []
    targets: list[_Target] = []
    kept: list[str] = []
    first: tuple[InputFile, pa.Schema] | None = None  # every file to read must match the first one
    fingerprint = run_fingerprint(manifest, options, run, Selection())  # what a finished folder records drops the chunking
    record = output_record(manifest, options)
    for f in files:
        folder = out / (f.relative_to(root) if root is not None else f.name)
        try:
            item, read = _inspect(f, folder, run, options)
        except InputError as exc:
            problems.append(str(exc))
            continue
        complete = (folder / SUCCESS).is_file()
        if folder.exists() and not (run.resume or run.overwrite):
            problems.append(f"{folder} already exists: pass --overwrite to replace it or --resume to keep it" if complete
                            else f"{folder}: an interrupted run left an incomplete output (no {SUCCESS}): pass "
                            "--resume or --overwrite to redo it")
        elif run.resume and complete:
            changed = _changed_since(item, folder, fingerprint)
            problems += [changed] if changed else []
            kept += [] if changed else [str(folder)]
        elif first is not None and ((item.text_column, item.keep) != (first[0].text_column, first[0].keep)
                                    or not read.equals(first[1])):
            problems.append(f"{f}: --engine ray reads every input as one dataset, so the files must share the text "
                            f"column and the kept columns with their types; {first[0].path} has text column "
                            f"{first[0].text_column!r} and columns {_describe(first[1])}, this file "
                            f"{item.text_column!r} and {_describe(read)}: annotate them separately, or pick the "
                            "shared columns with --columns")
        else:
            first = first or (item, read)
            key = f.path if isinstance(f, RemotePath) else os.path.abspath(f)  # as Ray's path column names it
            targets.append(_Target(key=key, source=str(f), folder=folder, rows=item.rows,
                                   schema=item.out_schema.with_metadata(metadata_for(item, record, fingerprint)),
                                   identity=item.identity))
    collect_and_raise(problems, InputError, "cannot annotate")
    filesystem = None
    if targets and isinstance(files[0], RemotePath):
        import pyarrow.fs as pafs

        filesystem = pafs.PyFileSystem(pafs.FSSpecHandler(files[0].fs))
    if first is None:
        return _Plan(targets, len(kept), kept, "text", False, [], [], filesystem)
    return _Plan(targets, len(kept), kept, first[0].text_column, first[0].text_column_chosen, first[0].keep,
                 first[1].names, filesystem)


def _inspect(f, folder, run: RunOptions, options: AnnotateOptions) -> tuple[InputFile, pa.Schema]:
    """One input checked as the local engine checks it (``inspect.inspect_input``), and the schema
    of the columns Ray reads of it.

    Raises:
        InputError: naming the file (not Parquet, unreadable, a column missing or clashing).
    """
    if not f.name.lower().endswith(".parquet"):
        raise InputError(f"{f}: --engine ray reads Parquet only; use the local engine for JSON Lines")
    item = inspect_input(f, folder, run.text_column, run.columns, options.keep_candidates is not None)
    schema = item.source.schema
    read = pa.schema([schema.field(c) for c in item.read_columns])
    if PATH_COLUMN in read.names:
        raise InputError(f"{f}: column {PATH_COLUMN!r} clashes with the column --engine ray adds to route each row "
                         "to its file; leave it out with --columns, or use the local engine")
    return item, read


def _changed_since(item: InputFile, folder, fingerprint: dict[str, Any]) -> str | None:
    """Why a complete output cannot be kept by --resume (other options, or its input changed), or None."""
    try:
        marker = json.loads((folder / SUCCESS).read_text() or "{}")
    except ValueError as exc:
        return f"{folder / SUCCESS}: unreadable ({exc}); pass --overwrite to redo {folder}"
    return finished_output_problem(folder, item.path, item.identity, fingerprint, marker)


def _describe(schema: pa.Schema) -> str:
    return "(" + ", ".join(f"{f.name}: {f.type}" for f in schema) + ")"


__all__ = ["annotate_dataset", "annotate_files_ray"]
