"""Hugging Face ``datasets`` and pandas: the same mentions as the Parquet path, in their containers.

Neither library is imported by the runtime: they come with the user's objects (``pip install
'tommer[datasets]'`` gives both). The text column is found by the same rules as for files.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ..core.chunk import Chunk
from ..core.columns import RESULT_COLUMNS, column_at, output_schema, resolve_text_column, texts_of
from ..errors import InputError

if TYPE_CHECKING:
    from ..core.annotator import Annotator


def mentions_batch(annotator: Annotator, texts: list[str | None]) -> dict[str, list]:
    """``{"mentions": [[{start, end, text, score}, ...], ...], "n_tokens": [...]}`` (plus ``candidates``)."""
    chunk = annotator.process(Chunk(texts=list(texts)))
    out = {"mentions": chunk.mentions.to_pylist(), "n_tokens": chunk.tokens.n_tokens.tolist()}
    if chunk.candidates is not None:
        out["candidates"] = chunk.candidates.to_pylist()
    return out


def map_batch(annotator: Annotator, batch: Any, text_column: str | None = "text") -> dict[str, list]:
    """``datasets``' batched map function: the result columns of ``batch`` (see ``Annotator.map_batch``).

    Bound with ``functools.partial``, it pickles as the annotator does (its bundle folder, options
    and bundle id), so ``datasets`` can hash it and send it to workers."""
    return mentions_batch(annotator, batch_texts(batch, text_column))


def batch_texts(batch: Any, text_column: str | None) -> list[str | None]:
    """Texts of a ``datasets`` batch: a dict of lists (the default format) or a pyarrow Table."""
    if isinstance(batch, pa.Table):
        column = resolve_text_column(batch.schema, text_column, "<batch>")
        return texts_of(column_at(batch, column), "<batch>", column)
    if not isinstance(batch, Mapping):
        raise InputError(f"map_batch takes a batch (dict of lists or pyarrow Table), found {type(batch).__name__}: "
                         "call ds.map(annotator.map_batch, batched=True)")
    column = text_column or "text"
    if column not in batch:
        raise InputError(f"<batch>: no column {column!r}; columns: {', '.join(batch)}; pass "
                         "fn_kwargs={'text_column': ...} to ds.map")
    return list(batch[column])


def _result_features(annotator: Annotator):
    from datasets import Features

    schema = output_schema([], annotator.options.keep_candidates is not None)
    return Features.from_arrow_schema(schema)


def annotate_dataset(annotator: Annotator, dataset, text_column: str | None = None, batch_size: int = 256,
                     **map_kwargs: Any):
    """A ``datasets.Dataset`` with ``mentions`` and ``n_tokens`` (and ``candidates``), Arrow types as in Parquet."""
    schema = dataset.features.arrow_schema
    column = resolve_text_column(schema, text_column, "<dataset>")
    clash = [c for c in RESULT_COLUMNS if c in schema.names]
    if clash:
        raise InputError(f"<dataset>: columns {clash} would be overwritten; remove them first (ds.remove_columns)")
    features = dataset.features.copy()
    features.update(_result_features(annotator))
    return dataset.map(functools.partial(map_batch, annotator), batched=True, batch_size=batch_size, features=features,
                       fn_kwargs={"text_column": column}, **map_kwargs)


def annotate_dataframe(annotator: Annotator, frame, text_column: str | None = None, chunk_rows: int = 2048):
    """A copy of a pandas DataFrame with ``mentions`` (lists of dicts) and ``n_tokens`` (and ``candidates``)."""
    column = resolve_text_column(pa.Schema.from_pandas(frame, preserve_index=False), text_column, "<DataFrame>")
    clash = [c for c in RESULT_COLUMNS if c in frame.columns]
    if clash:
        raise InputError(f"<DataFrame>: columns {clash} would be overwritten; drop them first")
    texts = texts_of(pa.array(frame[column], from_pandas=True), "<DataFrame>", column)
    results: dict[str, list] = {}
    for lo in range(0, len(texts), chunk_rows):
        for name, values in mentions_batch(annotator, texts[lo:lo + chunk_rows]).items():
            results.setdefault(name, []).extend(values)
    if not texts:
        results = {"mentions": [], "n_tokens": []}
    return frame.assign(**results)
