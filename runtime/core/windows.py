"""Long documents, exactly: overlapping token windows and the rule that picks one window per span.

A document of T tokens (BOS excluded) longer than ``max_tokens - 1`` is cut into
windows of ``C = max_tokens - 1`` content tokens starting every ``step = C - overlap``
tokens, the last one reaching the end; each window gets BOS in front, as in training.
A span ending at token b is taken from the first window that holds token b + 1 (the
head reads the next token's probe), or the last window when b is the last token: of
the windows holding the span, that one gives it the most left context. With
``overlap >= band_width + 1`` that window holds the whole span, and every token of the
document lies in some window.
"""

from __future__ import annotations

import numpy as np


def window_starts(n_tokens: int, max_tokens: int, overlap: int) -> list[int]:
    """Start (content token index) of each window of a document of ``n_tokens`` tokens."""
    content = max_tokens - 1
    if n_tokens <= content:
        return [0]
    step = content - overlap
    starts = [0]
    while starts[-1] + content < n_tokens:
        starts.append(starts[-1] + step)
    return starts




def owner_rows(n_tokens: int, starts: list[int], max_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """For each content token b (span end): the owning window and b's row in it (BOS is row 0)."""
    b = np.arange(n_tokens)
    if len(starts) == 1:
        return np.zeros(n_tokens, dtype=np.int64), b + 1
    content = max_tokens - 1
    step = starts[1] - starts[0]
    first = np.ceil(np.maximum(b + 2 - content, 0) / step).astype(np.int64)  # first window holding b + 1
    window = np.minimum(first, len(starts) - 1)
    return window, b - np.asarray(starts)[window] + 1


def stitch(window_bands: list[np.ndarray], n_tokens: int, starts: list[int], max_tokens: int) -> np.ndarray:
    """Document band (n_tokens + 1, band_width) in BOS-first coordinates, from its windows' bands."""
    width = window_bands[0].shape[1]
    out = np.zeros((n_tokens + 1, width), dtype=np.float32)
    if len(starts) == 1:
        out[:] = window_bands[0][: n_tokens + 1]
        return out
    window, row = owner_rows(n_tokens, starts, max_tokens)
    for k, band in enumerate(window_bands):
        mine = window == k
        out[1:][mine] = band[row[mine]]
    return out


def plan_windows(lengths: np.ndarray, max_tokens: int, overlap: int) -> dict[str, np.ndarray]:
    """Every window of a chunk's documents as flat arrays (documents of length 0 have none).

    ``lengths`` counts tokens with BOS. Window ``w`` of document ``doc[w]`` starts at content
    token ``start[w]``, holds ``length[w]`` tokens with BOS, and its row ``r`` is the
    document's row ``start[w] + r`` (BOS-first); it owns rows ``own_lo[w] <= r < own_hi[w]``:
    for a document in one window every row, BOS included, else the rows whose span ends it
    owns by the rule of ``owner_rows``.
    """
    content = lengths - 1
    whole = np.flatnonzero((lengths > 0) & (content <= max_tokens - 1))
    parts = {"doc": [whole], "start": [np.zeros(len(whole), np.int64)], "length": [lengths[whole]],
             "own_lo": [np.zeros(len(whole), np.int64)], "own_hi": [lengths[whole]]}
    for d in np.flatnonzero(content > max_tokens - 1).tolist():
        n = int(content[d])
        starts = window_starts(n, max_tokens, overlap)
        owner, _ = owner_rows(n, starts, max_tokens)
        ks = np.arange(len(starts))
        first, last = np.searchsorted(owner, ks, "left"), np.searchsorted(owner, ks, "right")  # owned tokens b
        s = np.asarray(starts, dtype=np.int64)
        parts["doc"].append(np.full(len(starts), d, np.int64))
        parts["start"].append(s)
        parts["length"].append(np.minimum(max_tokens - 1, n - s) + 1)
        parts["own_lo"].append(first - s + 1)  # token b is row b - s + 1 of the window
        parts["own_hi"].append(last - s + 1)
    table = {k: np.concatenate(v).astype(np.int64) for k, v in parts.items()}
    order = np.argsort(table["doc"], kind="stable")  # document order (windows in order within one)
    return {k: v[order] for k, v in table.items()}
