"""Arrow fields and columns by name: a dotted name reaches into structs (``meta.body``), and string
columns (string, large_string, string_view or a dictionary of those) read as Python strings.

A base module (pure pyarrow, no I/O, no model): ``core`` finds and reads the text column with it,
and ``quality`` (``tommer-show``) reads the same dotted names in the outputs, without the core.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from .errors import InputError


def is_string_type(t: pa.DataType) -> bool:
    """string, large_string or string_view."""
    is_view = getattr(pa.types, "is_string_view", lambda _: False)
    return pa.types.is_string(t) or pa.types.is_large_string(t) or is_view(t)


def is_text_type(t: pa.DataType) -> bool:
    """A string type, or a dictionary of one."""
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
