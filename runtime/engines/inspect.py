"""What both engines need before they annotate: each input checked, its output, the run's
fingerprint, and whether a resume may keep what an earlier run wrote.

The local and the Ray engine share these, so that the same input gives the same errors, the
same output schema and metadata, and the same resume rules whichever engine runs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..bundle import Manifest
from ..core.chunk import Stats
from ..core.columns import kept_columns, output_schema, resolve_text_column, root_column
from ..io.identity import file_identity, identity_problem
from ..io.locations import RemotePath
from ..io.metadata import tommer_metadata
from ..io.parts import fingerprint_problem
from ..io.selection import Selection
from ..io.sources import Source, open_source
from ..options import AnnotateOptions, RunOptions


@dataclass(frozen=True)
class InputFile:
    path: Path | RemotePath
    output: Path | RemotePath
    text_column: str
    keep: list[str]  # input columns carried to the output
    rows: int
    out_schema: pa.Schema
    source: Source
    identity: dict[str, Any]  # size, mtime and a content hash: a resume refuses a changed input
    choice: Any = None  # the rows to annotate (selection.choose); None: all
    selection: dict[str, int] | None = None  # --limit/--sample, as recorded in the output
    text_column_chosen: bool = False  # the text column was not named: the only string column was taken

    @property
    def read_columns(self) -> list[str]:
        """The input columns to read: the kept ones and the text column's top-level column."""
        return list(dict.fromkeys(self.keep + [root_column(self.source.schema, self.text_column)]))


def inspect_input(path: Path | RemotePath, output: Path | RemotePath, text_column: str | None,
                  columns: list[str] | None, keep_candidates: bool, scan_limit: int | None = None) -> InputFile:
    """Open an input (Parquet footer, or a JSON Lines scan of up to ``scan_limit`` rows) and check the
    columns; errors name the file."""
    source = open_source(path, limit=scan_limit)
    schema = source.schema
    column = resolve_text_column(schema, text_column, str(path))
    keep = kept_columns(schema, columns, str(path))
    return InputFile(path, output, column, keep, source.rows,
                     output_schema([schema.field(c) for c in keep], keep_candidates), source,
                     file_identity(path), text_column_chosen=text_column is None and column != "text")


def output_record(manifest: Manifest, options: AnnotateOptions) -> dict[str, Any]:
    """The bundle and the options (as resolved by ``check_options``) an output records."""
    return {"bundle_id": manifest.bundle_id, "bundle_backbone": manifest.backbone.source,
            "layer": manifest.head.layer, "threshold": options.threshold, "decoding": options.decoding,
            "keep_candidates": options.keep_candidates, "max_tokens": options.max_tokens,
            "window_overlap": options.window_overlap}


def run_fingerprint(manifest: Manifest, options: AnnotateOptions, run: RunOptions,
                    selection: Selection) -> dict[str, Any]:
    """The options that shape an output: a resume must repeat every one of them."""
    return {**options.output_fingerprint(), "bundle": manifest.bundle_id, "chunk_rows": run.chunk_rows,
            "columns": run.columns, "text_column": run.text_column, "selection": selection.fingerprint()}


def finished_fingerprint(fingerprint: dict[str, Any]) -> dict[str, Any]:
    """What a finished output records of the run's fingerprint: all but the chunking, which decides
    the parts, not the rows (both engines write the same output whatever their chunks)."""
    return {k: v for k, v in fingerprint.items() if k != "chunk_rows"}


def metadata_for(item: InputFile, record: dict[str, Any], fingerprint: dict[str, Any]) -> dict[bytes, bytes]:
    return tommer_metadata(record, source=str(item.path), text_column=item.text_column, selection=item.selection,
                           identity=item.identity, fingerprint=finished_fingerprint(fingerprint))


def finished_output_problem(output: Path | RemotePath, source: Path | RemotePath, identity: dict[str, Any],
                            fingerprint: dict[str, Any], info: dict[str, Any]) -> str | None:
    """Why ``--resume`` may not keep a finished ``output``: other options (the same check as for
    parts, ``io.parts.fingerprint_problem``) or a changed input; None if it may.

    ``info``: the output's ``tommer`` record (the local engine reads it from the Parquet
    metadata, the Ray engine from ``_SUCCESS``).
    """
    return (fingerprint_problem(output, info.get("fingerprint"), finished_fingerprint(fingerprint),
                                "the run that wrote it")
            or identity_problem(source, info.get("input"), identity, f"{output} was written"))


@dataclass
class Summary:
    """What a run did, whichever engine ran it."""

    files: int = 0
    skipped_files: int = 0
    stats: Stats = field(default_factory=Stats)  # what this run processed
    resumed_rows: int = 0  # rows an interrupted run had finished (finished files and parts)
    elapsed: float = 0.0
    written: list[str] = field(default_factory=list)  # the outputs written (files or folders)
    kept: list[str] = field(default_factory=list)  # finished outputs a resume kept
    text_columns: dict[str, str] = field(default_factory=dict)  # text column per input, when not named by the user

    @property
    def tokens_per_second(self) -> float:
        return self.stats.tokens / self.elapsed if self.elapsed else 0.0
