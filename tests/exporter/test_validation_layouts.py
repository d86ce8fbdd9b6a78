"""Validation's batch layouts with a text near the window, and its figures by position."""

from __future__ import annotations

import numpy as np

from tommer.exporter.texts import LONG_VALIDATION_TEXT, VALIDATION_TEXTS
from tommer.exporter.validate import _batch_layouts, _home, error_by_position, validation_encodings
from tommer.runtime.core.tokenization import Encoding


def test_the_long_text_is_batched_with_one_short_text_and_alone():
    lengths = [5, 9, 2048, 3, 7]
    layouts = _batch_layouts(lengths, (2, 11), long_over=512)
    assert layouts[0] == ([0, 1, 3, 4], 0)  # the short texts together: no (13, heads, 2048, 2048) scratch
    assert all(2 not in members or len(members) <= 2 for members, _ in layouts)
    assert ([2, 4], 0) in layouts and ([2], 0) in layouts
    assert sorted(i for members, _ in layouts if len(members) == 1 for i in members) == list(range(5))
    per_layout = [{i: np.full(3, float(k)) for i in members} for k, (members, _) in enumerate(layouts)]
    home = _home(per_layout)
    assert home[0][0] == 0 and home[2][0] == layouts.index(([2, 4], 0))  # first layout holding each text


def test_validation_encodings_cut_the_long_text_to_the_window():
    class Tokenizer:  # one token per character, BOS 1 first, as BundleTokenizer encodes
        def encode_batch(self, texts):
            return [Encoding(np.array([1, *range(2, 2 + len(t))]), np.zeros((len(t) + 1, 2), np.int64))
                    for t in texts]

    encodings = validation_encodings(Tokenizer(), max_tokens=2048)
    assert len(encodings) == len(VALIDATION_TEXTS) + 1 and len(LONG_VALIDATION_TEXT) > 12_000
    assert len(encodings[-1]) == 2048 and encodings[-1].offsets.shape == (2048, 2)
    assert [len(e) for e in encodings[:-1]] == [len(t) + 1 for t in VALIDATION_TEXTS]


def test_error_by_position_reports_the_buckets_that_have_tokens():
    reference = [np.zeros((2048, 3)), np.zeros((100, 3))]
    other = [np.zeros((2048, 3)), np.zeros((100, 3))]
    other[0][1500, 1] = 0.25
    other[1][50, 0] = 0.01
    assert error_by_position(reference, other) == {"0-255": 0.01, "256-1023": 0.0, "1024+": 0.25}
    assert list(error_by_position([np.zeros((10, 3))], [np.zeros((10, 3))])) == ["0-255"]
