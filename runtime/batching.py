"""Batches for throughput: sort by length inside a pool, cut by a token budget."""

from __future__ import annotations

import numpy as np


def plan_batches(lengths: np.ndarray, batch_tokens: int, max_batch_size: int = 1024) -> list[np.ndarray]:
    """Indices of each batch, sorted by length so that padding stays small.

    A batch holds as many sequences as fit in ``batch_tokens`` once padded to its
    longest (at least one, however long it is).
    """
    order = np.argsort(lengths, kind="stable")
    batches, current, longest = [], [], 0
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
