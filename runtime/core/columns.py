"""Arrow columns: the text column of an input, and the result columns of the output.

No I/O and no model here: readers use it to find and check the text column, the writers
and ``Annotator.annotate_table`` to build the output schema and rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import InputError
from .mentions import MENTION_TYPE
from .spans import numeric_array

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


def field_at(schema: pa.Schema, name: str) -> pa.Field | None:
    """The column ``name``, or the nested field a dotted ``name`` reaches through structs (``meta.body``)."""
    if name in schema.names:
        return schema.field(name)
    root, *rest = name.split(".")
    f = schema.field(root) if root in schema.names else None
    for part in rest:
        if f is None or not pa.types.is_struct(f.type) or f.type.get_field_index(part) < 0:
            return None
        f = f.type.field(part)
    return f


def root_column(schema: pa.Schema, name: str) -> str:
    """The top-level column holding ``name`` (itself unless it is a dotted path into a struct)."""
    return name if name in schema.names else name.split(".")[0]


def column_at(table: pa.Table, name: str) -> pa.ChunkedArray:
    """The column ``name``, or the nested field it reaches; a null parent gives a null value."""
    if name in table.column_names:
        return table.column(name)
    root, *rest = name.split(".")
    return pc.struct_field(table.column(root), rest)


def resolve_text_column(schema: pa.Schema, requested: str | None, file: str) -> str:
    """``requested`` if present (a dotted name reaches into structs); else 'text'; else the only string
    column; else an error listing them."""
    names = schema.names
    if requested and field_at(schema, requested) is not None:
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
    t = field_at(schema, column).type
    if not _is_text_type(t):
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


def append_results(table: pa.Table, chunk: Chunk) -> pa.Table:
    """Append the result columns of a processed chunk to its rows."""
    table = table.append_column("mentions", chunk.mentions)
    table = table.append_column("n_tokens", numeric_array(chunk.tokens.n_tokens, pa.int32()))
    if chunk.candidates is not None:
        table = table.append_column("candidates", chunk.candidates)
    return table
