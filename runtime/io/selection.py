"""``--limit`` and ``--sample``: which input rows a trial run annotates.

- ``--limit N``: the first N rows of the input, in input order across the files (sorted
  names); the files after them are not read and get no output.
- ``--sample N``: N rows drawn uniformly at random without replacement from all the input
  rows (numpy's ``default_rng(seed).choice``), annotated in input order; the same inputs and
  ``--seed`` give the same rows. Needs every file's row count: Parquet footers, a full
  scan of each JSON Lines file. Files with no chosen row get no output.

The choice of each file is ``None`` (every row), an ``int`` k (its first k rows) or a
sorted array of row numbers. It is part of the resume fingerprint and of the output's
``tommer`` metadata, so a trial output is never taken for a complete one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import InputError


@dataclass(frozen=True)
class Selection:
    limit: int | None = None
    sample: int | None = None
    seed: int = 0

    def __post_init__(self):
        if self.limit is not None and self.sample is not None:
            raise InputError("--limit and --sample exclude each other")
        for name in ("limit", "sample"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(f"--{name} must be >= 1, found {value}")

    def fingerprint(self) -> dict[str, int] | None:
        """What the output holds: None for every row."""
        if self.limit is not None:
            return {"limit": self.limit}
        if self.sample is not None:
            return {"sample": self.sample, "seed": self.seed}
        return None


def choose(items: Sequence[Any], selection: Selection) -> list[Any]:
    """``items`` (dataclasses with ``rows``) with their ``choice``, ``rows`` and ``selection`` set.

    Items with no chosen row are dropped.
    """
    fp = selection.fingerprint()
    if fp is None:
        return list(items)
    counts = np.array([i.rows for i in items], dtype=np.int64)
    if selection.limit is not None:
        remaining, picks = selection.limit, []
        for n in counts.tolist():
            picks.append(min(n, remaining))
            remaining -= picks[-1]
        return [dataclasses.replace(i, rows=k, choice=k, selection=fp) for i, k in zip(items, picks) if k]
    total = int(counts.sum())
    assert selection.sample is not None  # a selection is a limit or a sample (its fingerprint is not None)
    rows = np.sort(np.random.default_rng(selection.seed).choice(total, size=min(selection.sample, total),
                                                                 replace=False))
    starts = np.concatenate([[0], np.cumsum(counts)])
    chosen = []
    for i, item in enumerate(items):
        mine = rows[np.searchsorted(rows, starts[i]):np.searchsorted(rows, starts[i + 1])] - starts[i]
        if len(mine):
            chosen.append(dataclasses.replace(item, rows=len(mine), choice=mine, selection=fp))
    return chosen


def chosen_tables(tables, choice: int | np.ndarray, skip: int) -> Iterator[pa.Table]:
    """The chosen rows of a file, from chosen row ``skip`` on; ``tables(raw_skip)`` reads the file."""
    if isinstance(choice, int):
        left = choice - skip
        for table in tables(skip):
            if left <= 0:
                return
            yield table.slice(0, left)
            left -= table.num_rows
        return
    wanted = choice[skip:]
    if not len(wanted):
        return
    offset = int(wanted[0])
    for table in tables(offset):
        lo, hi = np.searchsorted(wanted, [offset, offset + table.num_rows])
        if hi > lo:
            yield table.take(pa.array(wanted[lo:hi] - offset))
        offset += table.num_rows
        if hi == len(wanted):
            return
