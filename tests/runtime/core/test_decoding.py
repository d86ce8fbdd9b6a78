"""Decoders on planted scores, and their properties under hypothesis."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tommer.runtime.core.decoding import STRATEGIES, decode


def planted(n, width, spans):
    """A band with probability p at each planted (start, end) span."""
    band = np.zeros((n, width), np.float32)
    for (start, end), p in spans.items():
        band[end, end - start] = p
    return band


def as_set(result):
    starts, ends, scores = result
    return {(int(s), int(e)): round(float(p), 4) for s, e, p in zip(starts, ends, scores)}


# nested (1..3) inside (1..5); (4..6) crosses (1..5); (8..8) alone
SPANS = {(1, 5): 0.9, (1, 3): 0.8, (4, 6): 0.95, (8, 8): 0.6, (2, 2): 0.5}


def test_threshold_is_strict_and_keeps_overlaps():
    got = as_set(decode(planted(10, 6, SPANS), 0.5, "threshold"))
    assert got == {(1, 5): 0.9, (1, 3): 0.8, (4, 6): 0.95, (8, 8): 0.6}  # 0.5 is not > 0.5


def test_greedy_takes_best_first():
    assert set(as_set(decode(planted(10, 6, SPANS), 0.5, "greedy"))) == {(4, 6), (1, 3), (8, 8)}


def test_greedy_ties_prefer_longer_then_earlier():
    band = planted(10, 6, {(1, 2): 0.7, (1, 3): 0.7, (3, 4): 0.7})
    assert set(as_set(decode(band, 0.5, "greedy"))) == {(1, 3)}


def test_flat_maximises_total_score():
    # greedy takes (2, 4) = 0.9; flat prefers (0, 2) + (3, 5) = 1.6
    band = planted(8, 6, {(2, 4): 0.9, (0, 2): 0.8, (3, 5): 0.8})
    assert set(as_set(decode(band, 0.5, "greedy"))) == {(2, 4)}
    assert set(as_set(decode(band, 0.5, "flat"))) == {(0, 2), (3, 5)}


def test_nested_keeps_nesting_drops_crossing():
    assert set(as_set(decode(planted(10, 6, SPANS), 0.5, "nested"))) == {(4, 6), (1, 3), (8, 8)}
    band = planted(10, 6, {(1, 5): 0.9, (1, 3): 0.8, (4, 5): 0.7, (3, 6): 0.6})
    assert set(as_set(decode(band, 0.5, "nested"))) == {(1, 5), (1, 3), (4, 5)}


def test_empty_band():
    for strategy in STRATEGIES:
        starts, ends, scores = decode(np.zeros((0, 5), np.float32), 0.5, strategy)
        assert len(starts) == len(ends) == len(scores) == 0


bands = st.integers(1, 30).flatmap(lambda n: arrays(np.float32, (n, 6), elements=st.floats(0, 1, width=32)))


def brute_force_best(cands, compatible):
    """Best total score over all subsets whose pairs are compatible (small inputs only)."""
    best = 0.0
    for mask in range(1 << len(cands)):
        chosen = [c for i, c in enumerate(cands) if mask >> i & 1]
        if all(compatible(a, b) for i, a in enumerate(chosen) for b in chosen[i + 1:]):
            best = max(best, sum(c[2] for c in chosen))
    return best


def disjoint(a, b):
    return a[1] < b[0] or b[1] < a[0]


def laminar(a, b):
    return disjoint(a, b) or (a[0] <= b[0] and b[1] <= a[1]) or (b[0] <= a[0] and a[1] <= b[1])


@settings(max_examples=200, deadline=None)
@given(bands, st.floats(0.05, 0.95))
def test_properties(band, threshold):
    n = band.shape[0]
    for strategy in STRATEGIES:
        starts, ends, scores = decode(band, threshold, strategy)
        assert np.all(starts >= 0) and np.all(ends < n) and np.all(starts <= ends)
        assert np.all(scores > threshold)
        spans = list(zip(starts.tolist(), ends.tolist()))
        assert spans == sorted(spans) and len(set(spans)) == len(spans)
        if strategy in ("greedy", "flat"):
            assert all(disjoint(a, b) for i, a in enumerate(spans) for b in spans[i + 1:])
        if strategy == "nested":
            assert all(laminar(a, b) for i, a in enumerate(spans) for b in spans[i + 1:])
    higher = decode(band, min(threshold + 0.1, 1.0), "threshold")
    lower = decode(band, threshold, "threshold")
    assert set(zip(*higher[:2])) <= set(zip(*lower[:2])), "a higher threshold never adds spans"


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 7).flatmap(lambda n: arrays(np.float32, (n, 3), elements=st.floats(0, 1, width=32))))
def test_flat_and_nested_are_optimal(band):
    cands = [(int(e - o), int(e), float(band[e, o])) for e, o in zip(*np.nonzero(band > 0.5)) if e - o >= 0]
    if len(cands) > 12:
        return
    for strategy, compatible in (("flat", disjoint), ("nested", laminar)):
        _, _, scores = decode(band, 0.5, strategy)
        assert abs(float(scores.sum()) - brute_force_best(cands, compatible)) < 1e-4
