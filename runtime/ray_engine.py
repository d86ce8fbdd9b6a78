"""Scale out on Ray Data: the same annotator on many CPUs/GPUs and machines.

Each Ray worker is a stateful actor that loads the bundle once and runs the very same
``Annotator.process`` (tokenization, length-sorted batches, windows, decoding) on the
blocks Ray hands it; Ray reads and writes Parquet on any filesystem pyarrow or fsspec
supports, and retries tasks when a worker is lost. Resume is per input file: its
output folder gets ``_SUCCESS`` last, and a rerun skips the files that have one.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

from .annotator import AnnotateOptions, Annotator, Chunk, append_results
from .errors import InputError

SUCCESS = "_SUCCESS"


def _require_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise InputError("--engine ray needs Ray Data: pip install 'tommer[ray]'") from exc
    return ray


class _AnnotateBlocks:
    """The Ray actor: one Annotator per worker, reused for every block."""

    def __init__(self, bundle: str, options: dict[str, Any], text_column: str, keep: list[str] | None):
        self.annotator = Annotator(bundle, AnnotateOptions(**options))
        self.text_column, self.keep = text_column, keep

    def __call__(self, batch: pa.Table) -> pa.Table:
        from .parquet_io import texts_of

        chunk = self.annotator.process(Chunk(texts=texts_of(batch.column(self.text_column), "<ray block>",
                                                             self.text_column)))
        rows = batch.select(self.keep) if self.keep is not None else batch
        return append_results(rows, chunk)


def annotate_dataset(dataset, bundle: str | Path, *, text_column: str = "text", columns: list[str] | None = None,
                     rows_per_batch: int = 2048, workers: int = 1, num_cpus_per_worker: float = 1.0,
                     num_gpus_per_worker: float = 0.0, **options: Any):
    """A Ray Dataset of the input rows (or ``columns``) plus ``mentions`` and ``n_tokens``.

    ``options`` are those of ``AnnotateOptions`` (decoding, threshold, max_tokens, ...).
    """
    if num_gpus_per_worker and options.get("provider", "auto") == "auto":
        options = {**options, "provider": "cuda"}  # a GPU actor runs the cuda provider
    keep = None if columns is None else list(columns)
    return dataset.map_batches(
        _AnnotateBlocks, batch_format="pyarrow", batch_size=rows_per_batch, concurrency=workers,
        num_cpus=num_cpus_per_worker, num_gpus=num_gpus_per_worker,
        fn_constructor_kwargs={"bundle": str(bundle), "options": options, "text_column": text_column, "keep": keep},
    )


def _complete(fs, folder: str) -> bool:
    import pyarrow.fs as pafs

    return fs.get_file_info(f"{folder}/{SUCCESS}").type == pafs.FileType.File


def annotate_files_ray(bundle: str | Path, source: str, output: str, *, text_column: str | None = None,
                       columns: list[str] | None = None, rows_per_batch: int = 2048, workers: int = 1,
                       num_cpus_per_worker: float = 1.0, num_gpus_per_worker: float = 0.0,
                       options: AnnotateOptions = AnnotateOptions(), address: str | None = None) -> dict[str, Any]:
    """Annotate every input file into ``output/<file name>/`` (Ray's part files + ``_SUCCESS``).

    Inputs: a file, a folder or a glob, local or remote (``s3://...``). Files whose output
    folder holds ``_SUCCESS`` are skipped; an incomplete folder is removed and redone.
    """
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    ray = _require_ray()
    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    in_fs, in_path = pafs.FileSystem.from_uri(source) if "://" in source else (pafs.LocalFileSystem(), source)
    files = _list_inputs(in_fs, in_path)
    out_fs, out_root = pafs.FileSystem.from_uri(output) if "://" in output else (pafs.LocalFileSystem(), output)
    summary: dict[str, Any] = {"files": 0, "skipped_files": 0, "rows": 0, "seconds": 0.0}
    start = time.perf_counter()
    from .parquet_io import resolve_text_column

    for path in files:
        name = path.rsplit("/", 1)[-1]
        folder = f"{out_root.rstrip('/')}/{name}"
        if _complete(out_fs, folder):
            summary["skipped_files"] += 1
            continue
        out_fs.delete_dir_contents(folder, missing_dir_ok=True)
        schema = pq.read_schema(path, filesystem=in_fs)
        column = resolve_text_column(schema, text_column, path)
        dataset = ray.data.read_parquet(path, filesystem=in_fs)
        annotated = annotate_dataset(dataset, bundle, text_column=column, columns=columns,
                                     rows_per_batch=rows_per_batch, workers=workers,
                                     num_cpus_per_worker=num_cpus_per_worker,
                                     num_gpus_per_worker=num_gpus_per_worker, **dataclasses.asdict(options))
        annotated.write_parquet(folder, filesystem=out_fs)
        rows = sum(pq.ParquetFile(f.path, filesystem=out_fs).metadata.num_rows
                   for f in out_fs.get_file_info(pafs.FileSelector(folder)) if f.path.endswith(".parquet"))
        expected = pq.ParquetFile(path, filesystem=in_fs).metadata.num_rows
        if rows != expected:
            raise InputError(f"{path}: Ray wrote {rows} rows, the input has {expected}; the output is left incomplete")
        with out_fs.open_output_stream(f"{folder}/{SUCCESS}") as fh:
            fh.write(json.dumps({"source": path, "rows": rows}).encode())
        summary["files"] += 1
        summary["rows"] += rows
    summary["seconds"] = time.perf_counter() - start
    return summary


def _list_inputs(fs, path: str) -> list[str]:
    """Input files, as the local engine finds them (``resolve_inputs``) or on a remote filesystem."""
    import pyarrow.fs as pafs

    from .parquet_io import resolve_inputs

    if isinstance(fs, pafs.LocalFileSystem):
        return [str(p) for p in resolve_inputs(path)[0]]
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        return [path]
    if info.type == pafs.FileType.Directory:
        found = fs.get_file_info(pafs.FileSelector(path, recursive=True))
        return sorted(f.path for f in found if f.type == pafs.FileType.File and f.path.endswith(".parquet")
                      and not f.base_name.startswith("."))
    raise InputError(f"{path}: no Parquet file found (expected a file or a folder of *.parquet; globs are local only)")


__all__ = ["annotate_dataset", "annotate_files_ray"]
