"""Decode a band of span probabilities into token spans (spec section 4).

A band ``P[i, o]`` (shape ``(n, band_width)``) holds the probability of the span
from token ``i - o`` to token ``i`` (inclusive). Candidates are the spans with
``p > threshold`` (strict); only candidates are ever looped over in Python.
Every function returns ``(starts, ends, scores)``: int64, int64, float32 arrays
sorted by (start, end), ``end`` inclusive.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable

import numpy as np

from ..options import STRATEGIES

Spans = tuple[np.ndarray, np.ndarray, np.ndarray]


def candidates(band: np.ndarray, threshold: float) -> Spans:
    """Every span with probability strictly above ``threshold``, sorted by (start, end).

    Cells that would start before the text (``o > i``) are never candidates.
    """
    band = np.asarray(band)
    ends, offsets = np.nonzero(band > threshold)
    inside = offsets <= ends
    ends, offsets = ends[inside], offsets[inside]
    starts = ends - offsets
    scores = band[ends, offsets].astype(np.float32)
    order = np.lexsort((ends, starts))
    return starts[order].astype(np.int64), ends[order].astype(np.int64), scores[order]


def _select(spans: Spans, keep: list[int] | np.ndarray, return_index: bool = False):
    keep = np.asarray(sorted(keep, key=lambda k: (spans[0][k], spans[1][k])), dtype=np.int64)
    if return_index:
        return keep
    return spans[0][keep], spans[1][keep], spans[2][keep]


def decode_threshold(band: np.ndarray, threshold: float = 0.5) -> Spans:
    """All candidates, nested and overlapping ones included (the reference default)."""
    return candidates(band, threshold)


def decode_greedy(band: np.ndarray, threshold: float = 0.5) -> Spans:
    """Highest score first (ties: longer, then smaller start, then smaller end); no overlaps."""
    return select_greedy(candidates(band, threshold))


def select_greedy(spans: Spans, return_index: bool = False):
    """``decode_greedy`` on candidate spans; with ``return_index`` the kept indices, sorted by (start, end)."""
    starts, ends, scores = spans
    order = np.lexsort((ends, starts, -(ends - starts), -scores.astype(np.float64)))
    taken = np.zeros(int(ends.max()) + 1 if len(ends) else 0, dtype=bool)
    keep = []
    for k in order:
        s, e = starts[k], ends[k] + 1
        if not taken[s:e].any():
            taken[s:e] = True
            keep.append(int(k))
    return _select(spans, keep, return_index)


def decode_flat(band: np.ndarray, threshold: float = 0.5) -> Spans:
    """Weighted interval scheduling: the non-overlapping set with the largest total score."""
    return select_flat(candidates(band, threshold))


def select_flat(spans: Spans, return_index: bool = False):
    """``decode_flat`` on candidate spans (see ``select_greedy``)."""
    starts, ends, scores = spans
    order = sorted(range(len(ends)), key=lambda k: (ends[k], starts[k]))
    end_list = [int(ends[k]) for k in order]
    best = [0.0] * (len(order) + 1)  # best[m]: optimum over the first m spans by end
    took = [False] * (len(order) + 1)
    prev = [0] * (len(order) + 1)
    for m, k in enumerate(order, start=1):
        p = bisect.bisect_left(end_list, int(starts[k]), 0, m - 1)  # spans ending before start
        with_it = best[p] + float(scores[k])
        took[m], prev[m] = with_it > best[m - 1], p
        best[m] = max(with_it, best[m - 1])
    keep, m = [], len(order)
    while m > 0:
        if took[m]:
            keep.append(order[m - 1])
            m = prev[m]
        else:
            m -= 1
    return _select(spans, keep, return_index)


def _best_laminar(lo: int, hi: int, members: list[int], spans: Spans,
                  value: dict[int, float], inner: dict[int, list[int]]) -> tuple[float, list[int]]:
    """Best set of top-level spans inside tokens [lo, hi], span k worth value[k] with inner[k].

    Returns the total value and the chosen spans, nested ones included.
    """
    starts, ends, _ = spans
    by_end: dict[int, list[int]] = {}
    for k in members:
        by_end.setdefault(int(ends[k]), []).append(k)
    size = hi - lo + 2
    best = [0.0] * size  # best[x - lo]: optimum over tokens lo..x-1
    back = [-1] * size  # span ending at x-1 chosen for best[x - lo], or -1
    for x in range(lo, hi + 1):
        best[x + 1 - lo] = best[x - lo]
        for k in by_end.get(x, ()):
            total = best[int(starts[k]) - lo] + value[k]
            if total > best[x + 1 - lo]:
                best[x + 1 - lo], back[x + 1 - lo] = total, k
    chosen, x = [], hi + 1
    while x > lo:
        k = back[x - lo]
        if k < 0:
            x -= 1
        else:
            chosen.append(k)
            chosen.extend(inner[k])
            x = int(starts[k])
    return best[size - 1], chosen


def decode_nested(band: np.ndarray, threshold: float = 0.5) -> Spans:
    """The best well-nested set (spans may nest, never cross), by dynamic programming."""
    return select_nested(candidates(band, threshold))


def select_nested(spans: Spans, return_index: bool = False):
    """``decode_nested`` on candidate spans (see ``select_greedy``)."""
    starts, ends, scores = spans
    if len(starts) == 0:
        return np.zeros(0, dtype=np.int64) if return_index else spans
    order = sorted(range(len(starts)), key=lambda k: (ends[k] - starts[k], starts[k]))
    value: dict[int, float] = {}
    inner: dict[int, list[int]] = {}
    done_by_start: dict[int, list[int]] = {}
    for k in order:  # shorter spans first: every span strictly inside k is done
        s, e = int(starts[k]), int(ends[k])
        inside = [c for x in range(s, e + 1) for c in done_by_start.get(x, ()) if ends[c] <= e]
        v, chosen = _best_laminar(s, e, inside, spans, value, inner)
        value[k], inner[k] = float(scores[k]) + v, chosen
        done_by_start.setdefault(s, []).append(k)
    _, keep = _best_laminar(int(starts.min()), int(ends.max()), list(value), spans, value, inner)
    return _select(spans, keep, return_index)


DECODERS: dict[str, Callable[[np.ndarray, float], Spans]] = {
    "threshold": decode_threshold,
    "greedy": decode_greedy,
    "flat": decode_flat,
    "nested": decode_nested,
}


# selections after thresholding, on candidate spans sorted by (start, end)
SELECTORS: dict[str, Callable[..., np.ndarray | Spans]] = {
    "greedy": select_greedy,
    "flat": select_flat,
    "nested": select_nested,
}


def decode(band: np.ndarray, threshold: float = 0.5, strategy: str = "threshold") -> Spans:
    """Decode one text's band with the named strategy (see ``STRATEGIES``)."""
    try:
        decoder = DECODERS[strategy]
    except KeyError:
        raise ValueError(f"unknown decoding {strategy!r}; expected one of {', '.join(STRATEGIES)}") from None
    return decoder(band, threshold)
