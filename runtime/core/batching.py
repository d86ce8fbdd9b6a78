"""Batches for throughput: sort by length inside a pool, cut by a token budget; optional shape buckets.

Without buckets (the CPU default) a batch is padded to its longest window only, so the
padding stays near zero but every batch has its own shape. GPU providers are faster on a
small fixed set of shapes (TensorRT optimization profiles, CUDA graphs, kernels tuned and
memory planned once per shape): with ``ShapeBuckets`` a window's length is rounded up to
the next bucket length (a geometric ladder, ``per_octave`` steps per doubling, multiples of
8), a bucket's batches have ``batch_tokens // length`` rows, and its last, partial batch is
padded with empty rows up to a power of two. ``benchmarks/experiments/buckets.py`` measures what this
padding costs on the benchmark corpus.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Batch:
    """Indices of the windows of one batch and the (rows, width) it is padded to."""

    index: np.ndarray
    rows: int
    width: int


def plan_batches(lengths: np.ndarray, batch_tokens: int, max_batch_size: int = 1024) -> list[np.ndarray]:
    """Indices of each batch, sorted by length so that padding stays small.

    A batch holds as many sequences as fit in ``batch_tokens`` once padded to its
    longest (at least one, however long it is).
    """
    order = np.argsort(lengths, kind="stable")
    batches: list[np.ndarray] = []
    current: list[int] = []
    longest = 0
    for i in order.tolist():
        n = int(lengths[i])
        if current and (max(longest, n) * (len(current) + 1) > batch_tokens or len(current) >= max_batch_size):
            batches.append(np.asarray(current))
            current, longest = [], 0
        current.append(i)
        longest = max(longest, n)
    if current:
        batches.append(np.asarray(current))
    return batches


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())


@dataclass(frozen=True)
class ShapeBuckets:
    """A fixed set of batch shapes: bucket lengths and, per length, the rows of a full batch."""

    lengths: tuple[int, ...]  # ascending; the last is the longest window
    batch_tokens: int
    max_rows: int = 1024

    @classmethod
    def ladder(cls, max_tokens: int, batch_tokens: int, per_octave: int = 4, smallest: int = 16,
               multiple: int = 8, max_rows: int = 1024) -> ShapeBuckets:
        """Lengths ``smallest * 2**(k / per_octave)`` rounded up to ``multiple``, up to ``max_tokens``."""
        lengths: list[int] = []
        k = 0
        while True:
            n = int(np.ceil(smallest * 2 ** (k / per_octave) / multiple) * multiple)
            if n >= max_tokens:
                break
            if not lengths or n > lengths[-1]:
                lengths.append(n)
            k += 1
        lengths.append(int(max_tokens))
        return cls(tuple(lengths), int(batch_tokens), max_rows)

    def rows_for(self, width: int) -> int:
        """Rows of a full batch of bucket length ``width``."""
        return int(min(self.max_rows, max(1, self.batch_tokens // width)))

    def width_for(self, lengths: np.ndarray) -> np.ndarray:
        """The bucket length of each window length."""
        table = np.asarray(self.lengths)
        index = np.searchsorted(table, lengths, side="left")
        if len(lengths) and index.max() >= len(table):
            raise ValueError(f"window of {int(np.max(lengths))} tokens is longer than the last bucket {table[-1]}")
        return table[index]

    def shapes(self) -> list[tuple[int, int]]:
        """Every (rows, width) a full batch can have (partial batches use power-of-two rows below it)."""
        return [(self.rows_for(w), w) for w in self.lengths]

    def plan(self, lengths: np.ndarray) -> list[Batch]:
        """Batches of bucketed shapes, longest bucket first inside each length-sorted run."""
        widths = self.width_for(np.asarray(lengths))
        order = np.lexsort((np.asarray(lengths), widths))
        out = []
        for width in np.unique(widths).tolist():
            members = order[widths[order] == width]
            rows = self.rows_for(width)
            for lo in range(0, len(members), rows):
                index = members[lo:lo + rows]
                out.append(Batch(index, rows if len(index) == rows else min(rows, _pow2_at_least(len(index))), width))
        return out


def plan_exact(lengths: np.ndarray, batch_tokens: int) -> list[Batch]:
    """``plan_batches`` as ``Batch`` records (each padded to its longest window, rows as they are)."""
    lengths = np.asarray(lengths)
    return [Batch(b, len(b), int(lengths[b].max())) for b in plan_batches(lengths, batch_tokens)]
