"""Windows of long documents: coverage, the one-window-per-span rule, stitching."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tommer.runtime.core.windows import owner_rows, stitch, window_starts
from tommer.runtime.errors import InputError
from tommer.runtime.options import check_window_options


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 3000), st.integers(8, 300), st.integers(2, 40), st.data())
def test_every_span_has_exactly_one_owner_holding_it_and_its_next_token(n, band, margin, data):
    overlap = band + 1 + margin
    max_tokens = data.draw(st.integers(overlap + 2, overlap + 400))
    starts = window_starts(n, max_tokens, overlap)
    content = max_tokens - 1
    ends = [min(s + content, n) for s in starts]
    assert starts[0] == 0 and ends[-1] == n
    assert all(b > a for a, b in zip(starts, starts[1:]))
    covered = np.zeros(n, bool)
    for s, e in zip(starts, ends):
        covered[s:e] = True
    assert covered.all(), "every token lies in some window"
    window, row = owner_rows(n, starts, max_tokens)
    for b in range(n):
        k = window[b]
        s, e = starts[k], ends[k]
        assert row[b] == b - s + 1
        assert s <= max(b - band + 1, 0), "the owner holds the longest span ending at b"
        assert b + 1 < e or e == n, "the owner holds the next token (or b is the last token)"
        earlier = [j for j in range(k) if starts[j] <= b and (b + 1 < ends[j] or ends[j] == n)]
        assert not earlier, "no earlier window qualifies: the owner gives the most left context"


def test_short_document_is_one_window():
    assert window_starts(10, 64, 30) == [0]
    assert window_starts(63, 64, 30) == [0]
    assert window_starts(64, 64, 30) == [0, 33]


def brute_force_owner(n, starts, max_tokens):
    """Window owning each span end b, by definition: the first window that holds b and b's next
    token (or ends the document), scanning every window; b's row is its offset after BOS."""
    ends = [min(s + max_tokens - 1, n) for s in starts]
    owner = []
    for b in range(n):
        k = next(k for k, (s, e) in enumerate(zip(starts, ends)) if s <= b and (b + 1 < e or e == n))
        owner.append((k, b - starts[k] + 1))
    return owner


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 400), st.integers(2, 12), st.integers(0, 8), st.integers(0, 30), st.integers(0, 2**31 - 1))
def test_stitch_takes_each_row_from_its_owner(n, width, margin, extra, seed):
    overlap = width + 1 + margin
    max_tokens = overlap + 2 + extra
    starts = window_starts(n, max_tokens, overlap)
    rng = np.random.default_rng(seed)
    bands = [rng.random((min(max_tokens, n - s + 1), width)).astype(np.float32) for s in starts]
    doc = stitch(bands, n, starts, max_tokens)
    assert doc.shape == (n + 1, width)
    if len(starts) == 1:
        np.testing.assert_array_equal(doc, bands[0][: n + 1])
        return
    assert not doc[0].any()
    for b, (k, row) in enumerate(brute_force_owner(n, starts, max_tokens)):
        assert starts[k] <= max(b - width + 1, 0), "the owner holds the longest span ending at b"
        np.testing.assert_array_equal(doc[b + 1], bands[k][row])


def test_overlap_must_cover_the_band():
    with pytest.raises(InputError, match="at least the band width \\+ 1 \\(27\\)"):
        check_window_options(512, 20, 26)
    with pytest.raises(InputError, match="must exceed --window-overlap"):
        check_window_options(40, 40, 26)


def test_pure_numpy_tests_run_without_the_vendored_data(tmp_path):
    """Only the tests that read the published head or the golden band need tests/data; they fail
    (never skip) without it, and the others still run."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    here = Path(__file__).parent
    tests = tmp_path / "repo" / "tests"
    tests.mkdir(parents=True)
    shutil.copy(here.parents[1] / "conftest.py", tests)  # tests/conftest.py: the vendored data's paths
    shutil.copy(here / "test_windows.py", tests)
    (tests / "test_needs_golden.py").write_text("def test_golden(golden):\n    assert golden\n")
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests),
                          "-k", "not pure_numpy and not stitch"], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode != 0 and "3 passed, 2 deselected, 1 error" in out.stdout, out.stdout[-2000:]
    assert "vendored test data is missing" in out.stdout
