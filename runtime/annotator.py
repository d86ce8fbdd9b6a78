"""The public ``Annotator``: the core annotator plus the ways to reach files and other libraries.

``tommer.runtime.core.annotator.Annotator`` maps texts to mentions and owns no I/O. This
subclass adds one method per adapter, each a thin call into the engine or integration that
does the work, so that the core never imports an adapter and users still find every entry
point on one object. ``AnnotateOptions`` comes from ``tommer.runtime.options``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .core import annotator as core
from .options import AnnotateOptions, RunOptions

__all__ = ["AnnotateOptions", "Annotator", "RunOptions"]


class Annotator(core.Annotator):
    """Annotate texts, Arrow tables, Parquet or JSON Lines files, ``datasets`` and pandas objects."""

    def map_batch(self, batch: Any, text_column: str | None = "text") -> dict[str, list]:
        """For ``datasets``: ``ds.map(annotator.map_batch, batched=True)`` adds ``mentions`` and ``n_tokens``.

        ``batch`` is a dict of lists (or a pyarrow Table); pass ``fn_kwargs={"text_column": ...}``
        for another column. ``annotate_dataset`` also sets the Arrow types of the Parquet output.
        """
        from .integrations.dataframes import map_batch

        return map_batch(self, batch, text_column)

    def annotate_dataset(self, dataset: Any, text_column: str | None = None, **kwargs: Any) -> Any:
        """A ``datasets.Dataset`` with the result columns; see ``integrations.dataframes.annotate_dataset``."""
        from .integrations.dataframes import annotate_dataset

        return annotate_dataset(self, dataset, text_column, **kwargs)

    def annotate_dataframe(self, frame: Any, text_column: str | None = None, **kwargs: Any) -> Any:
        """A pandas DataFrame with the result columns; see ``integrations.dataframes.annotate_dataframe``."""
        from .integrations.dataframes import annotate_dataframe

        return annotate_dataframe(self, frame, text_column, **kwargs)

    def annotate_parquet(self, src: str | Path, dst: str | Path | None = None, **kwargs: Any):
        """Annotate Parquet or JSON Lines file(s) to Parquet; see ``engines.local.annotate_files``.

        ``kwargs``: the fields of ``RunOptions`` (text_column, columns, chunk_rows, host_threads,
        overwrite, resume) and the engine's callbacks and selection.
        """
        from .engines.local import annotate_files

        return annotate_files(self, str(src), None if dst is None else str(dst), **kwargs)
