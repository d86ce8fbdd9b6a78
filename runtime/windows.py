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

from .errors import InputError


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


def check_window_options(max_tokens: int, overlap: int, band_width: int) -> None:
    if overlap < band_width + 1:
        raise InputError(f"--window-overlap {overlap} is too small: it must be at least the band width + 1 "
                         f"({band_width + 1}) so that every span fits in a window with its next token")
    if max_tokens - 1 <= overlap:
        raise InputError(f"--max-tokens {max_tokens} must exceed --window-overlap {overlap} + 1")


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
