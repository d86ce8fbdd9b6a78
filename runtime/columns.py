"""Arrow columns: the text column of an input, and the result columns of the output.

No I/O and no model here: readers use it to find and check the text column, the writers
and ``Annotator.annotate_table`` to build the output schema and rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import InputError
from .mentions import MENTION_TYPE

if TYPE_CHECKING:
    from .chunk import Chunk

RESULT_COLUMNS = ("mentions", "n_tokens", "candidates")


def is_string_type(t: pa.DataType) -> bool:
    """string, large_string or string_view."""
    return pa.types.is_string(t) or pa.types.is_large_string(t) or getattr(pa.types, "is_string_view", lambda _: False)(t)


def _is_text_type(t: pa.DataType) -> bool:
    return is_string_type(t) or (pa.types.is_dictionary(t) and is_string_type(t.value_type))


def texts_of(column: pa.ChunkedArray | pa.Array, file: str, name: str) -> list[str | None]:
    """Python strings of a text column (string, large_string, string_view or dictionary of those)."""
    t = column.type
    if pa.types.is_dictionary(t) and is_string_type(t.value_type):
        column = pc.cast(column, t.value_type)
    elif not is_string_type(t):
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
        strings = [f.name for f in schema if _is_text_type(f.type)]
        if "text" in names:
            column = "text"
        elif len(strings) == 1:
            column = strings[0]
        else:
            raise InputError(f"{file}: no column 'text' and {len(strings)} string columns ({', '.join(strings) or 'none'}); "
                             f"pick one with --text-column (columns: {', '.join(names)})")
    t = schema.field(column).type
    if not _is_text_type(t):
        raise InputError(f"{file}: column {column!r} has type {t}, expected a string column")
    return column


def output_schema(kept: list[pa.Field], keep_candidates: bool) -> pa.Schema:
    """The kept input columns, then ``mentions``, ``n_tokens`` (and ``candidates``)."""
    fields = list(kept) + [pa.field("mentions", pa.list_(MENTION_TYPE)), pa.field("n_tokens", pa.int32())]
    if keep_candidates:
        fields.append(pa.field("candidates", pa.list_(MENTION_TYPE)))
    return pa.schema(fields)


def append_results(table: pa.Table, chunk: Chunk) -> pa.Table:
    """Append the result columns of a processed chunk to its rows."""
    table = table.append_column("mentions", chunk.mentions)
    table = table.append_column("n_tokens", pa.array(chunk.tokens.n_tokens.astype(np.int32)))
    if chunk.candidates is not None:
        table = table.append_column("candidates", chunk.candidates)
    return table
