"""The ``tommer`` key of an output's Parquet schema metadata, written by both engines.

It records the bundle, the options as resolved, the source file and its identity, the row
selection and the output fingerprint (what a resume must repeat), so that a finished output
can be checked against a later run exactly as unfinished parts are.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from ..._version import __version__
from .locations import RemotePath, open_input

KEY = b"tommer"


def tommer_metadata(record: dict[str, Any], *, source: str, text_column: str, selection: dict[str, int] | None,
                    identity: dict[str, Any], fingerprint: dict[str, Any]) -> dict[bytes, bytes]:
    """The schema metadata of an output: ``record`` (bundle and options, see
    ``engines.inspect.output_record``) plus where the rows came from and the run's fingerprint."""
    info = {**record, "tommer_version": __version__, "source": source, "text_column": text_column,
            "selection": selection, "input": identity, "fingerprint": fingerprint}
    return {KEY: json.dumps(info).encode()}


def read_schema_metadata(path: Path | RemotePath) -> dict[bytes, bytes] | None:
    with open_input(path) as fh:
        return pq.read_schema(fh).metadata


def read_tommer(path: Path | RemotePath) -> dict[str, Any]:
    """The ``tommer`` record of a finished output ({} for an output written without one).

    Raises:
        OSError, pyarrow.ArrowException, ValueError: the file cannot be read as Parquet, or the record
        is not JSON (the caller names the file).
    """
    metadata = read_schema_metadata(path) or {}
    info = json.loads(metadata.get(KEY, b"{}"))
    if not isinstance(info, dict):
        raise ValueError(f"the {KEY.decode()!r} metadata is not a JSON object")
    return info
