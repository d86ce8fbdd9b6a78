"""Arrow columns: the text column of an input, and the result columns of the output.

No I/O and no model here: readers use it to find and check the text column, the writers
and ``Annotator.annotate_table`` to build the output schema and rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

from ..errors import InputError
from ..fields import column_at, field_at, is_string_type, is_text_type, root_column, texts_of
from .mentions import MENTION_TYPE
from .spans import numeric_array

if TYPE_CHECKING:
    from .chunk import Annotated

__all__ = ["RESULT_COLUMNS", "append_results", "column_at", "field_at", "is_string_type", "kept_columns",
           "output_schema", "resolve_text_column", "root_column", "texts_of"]

RESULT_COLUMNS = ("mentions", "n_tokens", "candidates")


def resolve_text_column(schema: pa.Schema, requested: str | None, file: str) -> str:
    """``requested`` if present (a dotted name reaches into structs); else 'text'; else the only string
    column; else an error listing them."""
    names = schema.names
    if requested and field_at(schema, requested) is not None:
        column = requested
    elif requested and requested != "text":
        raise InputError(f"{file}: no column {requested!r}; columns: {', '.join(names)}")
    else:
        strings = [f.name for f in schema if is_text_type(f.type)]
        if "text" in names:
            column = "text"
        elif len(strings) == 1:
            column = strings[0]
        else:
            raise InputError(f"{file}: no column 'text' and {len(strings)} string columns ({', '.join(strings) or 'none'}); "
                             f"pick one with --text-column (columns: {', '.join(names)})")
    found = field_at(schema, column)
    assert found is not None  # the column was just found, or is "text" and present
    t = found.type
    if not is_text_type(t):
        raise InputError(f"{file}: column {column!r} has type {t}, expected a string column")
    return column


def kept_columns(schema: pa.Schema, columns: list[str] | None, file: str) -> list[str]:
    """The input columns carried to the output (``--columns``; None: all), checked against ``schema``:
    each must exist, and none may be a result column."""
    keep = list(schema.names) if columns is None else list(columns)
    missing = [c for c in keep if c not in schema.names]
    if missing:
        raise InputError(f"{file}: --columns names {missing} which the file lacks; columns: {', '.join(schema.names)}")
    clash = [c for c in RESULT_COLUMNS if c in keep]
    if clash:
        raise InputError(f"{file}: input columns {clash} would be overwritten by the output; drop them with --columns")
    return keep


def output_schema(kept: list[pa.Field], keep_candidates: bool) -> pa.Schema:
    """The kept input columns, then ``mentions``, ``n_tokens`` (and ``candidates``)."""
    fields = list(kept) + [pa.field("mentions", pa.list_(MENTION_TYPE)), pa.field("n_tokens", pa.int32())]
    if keep_candidates:
        fields.append(pa.field("candidates", pa.list_(MENTION_TYPE)))
    return pa.schema(fields)


def append_results(table: pa.Table, chunk: Annotated) -> pa.Table:
    """Append the result columns of a processed chunk to its rows."""
    table = table.append_column("mentions", chunk.mentions)
    table = table.append_column("n_tokens", numeric_array(chunk.tokens.n_tokens, pa.int32()))
    if chunk.candidates is not None:
        table = table.append_column("candidates", chunk.candidates)
    return table
