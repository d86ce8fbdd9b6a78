"""Input files as sources of Arrow tables: Parquet and JSON Lines behind one interface.

A source has a ``schema``, a number of ``rows`` and ``tables(columns, skip_rows)``, which
yields the rows in input order from ``skip_rows`` on. ``read_chunks`` cuts any source into
chunks of exactly ``chunk_rows`` rows, so the parts of an output do not depend on the
format nor on where a run was interrupted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import InputError
from .jsonl import JsonLines, jsonl_codec
from .locations import RemotePath, open_input
from .selection import chosen_tables

FORMATS_HELP = "Parquet (.parquet) or JSON Lines (.jsonl, .ndjson, .json; plain, .gz, .zst or .bz2)"


class Source(Protocol):
    name: str
    schema: pa.Schema
    rows: int

    def tables(self, columns: list[str], skip_rows: int = 0) -> Iterator[pa.Table]: ...


class ParquetSource:
    """A Parquet file: schema and row count from the footer, row groups already done are skipped."""

    def __init__(self, name: str, opener: Callable[[], IO[bytes]] | None = None, path: Path | None = None):
        self.name = name
        if path is None and opener is None:
            raise ValueError("ParquetSource needs a path or an opener")
        try:
            self.file = pq.ParquetFile(path if path is not None else opener())  # type: ignore[misc]
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"{name}: not a readable Parquet file ({exc})") from exc
        self.schema = self.file.schema_arrow
        self.rows = self.file.metadata.num_rows

    def tables(self, columns: list[str], skip_rows: int = 0) -> Iterator[pa.Table]:
        meta = self.file.metadata
        first, seen = 0, 0
        while first < meta.num_row_groups and seen + meta.row_group(first).num_rows <= skip_rows:
            seen += meta.row_group(first).num_rows  # skip the leading row groups already done, only those
            first += 1
        groups = list(range(first, meta.num_row_groups))
        to_drop = skip_rows - seen
        if not groups:
            return
        for batch in self.file.iter_batches(batch_size=65536, row_groups=groups, columns=columns):
            if to_drop:
                cut = min(to_drop, batch.num_rows)
                batch, to_drop = batch.slice(cut), to_drop - cut
            yield pa.Table.from_batches([batch])


def is_supported(name: str) -> bool:
    return name.lower().endswith(".parquet") or jsonl_codec(name)[0]


def open_source(path: Path | RemotePath, limit: int | None = None) -> Source:
    """The source of one input file, by its name: JSON Lines (scanned: see ``io/jsonl.py``) or Parquet.

    ``limit``: rows that will be read at most (a JSON Lines scan stops there).
    """
    if jsonl_codec(path.name)[0]:
        return JsonLines(str(path), lambda: open_input(path)).scan(limit)
    if isinstance(path, RemotePath):
        return ParquetSource(str(path), lambda: open_input(path))
    return ParquetSource(str(path), path=path)


def read_chunks(source: Source, columns: list[str], chunk_rows: int, skip_rows: int,
                choice=None) -> Iterator[pa.Table]:
    """Tables of exactly ``chunk_rows`` rows (the last may be shorter), from row ``skip_rows`` on.

    ``choice``: the rows to read (``selection.choose``; None: all); ``skip_rows`` counts chosen rows.
    """
    pending: list[pa.Table] = []
    pending_rows = 0
    tables = (source.tables(columns, skip_rows) if choice is None
              else chosen_tables(lambda raw_skip: source.tables(columns, raw_skip), choice, skip_rows))
    for table in tables:
        pending.append(table)
        pending_rows += table.num_rows
        while pending_rows >= chunk_rows:
            joined = pa.concat_tables(pending).combine_chunks()
            yield joined.slice(0, chunk_rows)
            rest = joined.slice(chunk_rows)
            pending, pending_rows = [rest], rest.num_rows
    if pending_rows:
        yield pa.concat_tables(pending).combine_chunks()
