"""The chunk-wide, vectorized decoding equals the per-document oracle, byte for byte.

Property tests (hypothesis) on random bands, random tokenizations and hostile texts:
unicode, combining marks, emoji, tabs, newlines, runs of spaces, no spaces at all,
empty, whitespace-only and null documents, and long documents cut into windows.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tommer.runtime.annotator import Annotator
from tommer.runtime.core.annotator import _select_per_document
from tommer.runtime.core.chunk import Chunk
from tommer.runtime.core.decoding import SELECTORS, decode
from tommer.runtime.core.mentions import char_mentions, mentions_array
from tommer.runtime.core.spans import ChunkText, Hits, band_hits, mentions_column, whitespace_table
from tommer.runtime.engines.pipeline import pipelined

HOSTILE = ["a", "b", "Z", "é", "e\u0301", "\u0301", "🙂", "👍🏽", "🇫🇷", "名", " ", "  ", "\t", "\n", "\r\n", "\u00a0",
           "\u2003", "\u3000", "\u200b", "\x1c", "\x85", ".", ",", "-", "word", " Paris", "New York"]
text_st = st.one_of(st.none(), st.just(""), st.lists(st.sampled_from(HOSTILE), max_size=30).map("".join),
                    st.text(max_size=40))
WIDTH = 6


@st.composite
def tokenized(draw):
    """A text, and token offsets that cover it in order (tokens may share or split characters)."""
    text = draw(text_st)
    if text is None:
        return None, None
    n = len(text)
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=max(1, n))) + [0, n])
    offsets = [(a, b) for a, b in zip(cuts[:-1], cuts[1:])]
    if draw(st.booleans()) and offsets:  # like a character split across two byte-level tokens
        k = draw(st.integers(0, len(offsets) - 1))
        offsets.insert(k, offsets[k])
    return text, np.asarray([(0, 0)] + offsets, dtype=np.int64).reshape(-1, 2)


@st.composite
def bands(draw, n_rows):
    values = st.sampled_from([0.0, 0.2, 0.5, 0.50000006, 0.7, 0.9, 0.95, 1.0])
    return np.asarray(draw(st.lists(values, min_size=n_rows * WIDTH, max_size=n_rows * WIDTH)),
                      dtype=np.float32).reshape(n_rows, WIDTH)


def test_whitespace_table_is_str_isspace():
    table = whitespace_table()
    assert [c for c in range(0x110000) if chr(c).isspace()] == np.flatnonzero(table).tolist()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), threshold=st.sampled_from([0.0, 0.5, 0.9]), floor=st.sampled_from([0.0, 0.2, 0.5]))
def test_chunk_decoding_equals_per_document_oracle(data, threshold, floor):
    docs = data.draw(st.lists(tokenized(), min_size=1, max_size=6))
    texts = [t for t, _ in docs]
    per_doc_bands = [None if t is None else data.draw(bands(len(o))) for t, o in docs]
    # flat offsets and one padded batch, as the annotator lays them out
    lengths = np.asarray([0 if o is None else len(o) for _, o in docs], dtype=np.int64)
    token_start = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    flat_offsets = np.concatenate([o for _, o in docs if o is not None] or [np.zeros((0, 2), np.int64)])
    present = np.flatnonzero(lengths > 0)
    width = int(lengths.max(initial=1)) or 1
    batch = np.full((len(present), width, WIDTH), 0.99, dtype=np.float32)  # padding cells are never read
    for row, d in enumerate(present.tolist()):
        batch[row, : lengths[d]] = per_doc_bands[d]
    low = min(threshold, floor)
    hits = band_hits(batch, low, present, np.zeros(len(present), np.int64), np.zeros(len(present), np.int64),
                     lengths[present])
    chars = ChunkText(texts)

    def oracle(strategy, thr):
        out = []
        for (text, offsets), band in zip(docs, per_doc_bands):
            out.append([] if text is None else char_mentions(text, offsets, *decode(band, thr, strategy)))
        return mentions_array(out)

    for strategy in ("threshold", *SELECTORS):
        chosen = hits.above(threshold)
        if strategy != "threshold":
            chosen = _select_per_document(chosen.sorted(), SELECTORS[strategy])
        got = mentions_column(chosen, chars, token_start, flat_offsets)
        want = oracle(strategy, threshold)
        assert got.equals(want), (strategy, got.to_pylist(), want.to_pylist())
    assert mentions_column(hits.above(floor), chars, token_start, flat_offsets).equals(oracle("threshold", floor))


def test_mention_text_is_cut_from_the_utf8_bytes():
    texts = ["  🙂 Zürich\tnaïve e\u0301 ", None, "名古屋 and 🇫🇷"]
    chars = ChunkText(texts)
    # spans on a character-per-token layout
    offsets = [np.asarray([(0, 0)] + [(i, i + 1) for i in range(len(t or ""))], np.int64) for t in texts]
    lengths = np.asarray([0 if t is None else len(o) for t, o in zip(texts, offsets)])
    flat = np.concatenate([o for t, o in zip(texts, offsets) if t is not None])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    hits = Hits(np.asarray([0, 0, 2, 2]), np.asarray([1, 4, 1, 5]), np.asarray([len(texts[0]), 10, 3, 10]),
                np.asarray([0.9, 0.8, 0.7, 0.6], np.float32))
    got = mentions_column(hits, chars, starts, flat).to_pylist()
    assert [[m["text"] for m in doc] for doc in got] == [["🙂 Zürich\tnaïve e\u0301", "Zürich"], [],
                                                          ["名古屋", "and 🇫🇷"]]
    for doc, text in zip(got, texts):
        for m in doc:
            assert text[m["start"]:m["end"]] == m["text"]


@pytest.mark.parametrize("views", [True, False])
def test_mention_texts_of_every_size_are_exact(monkeypatch, views):
    from tommer.runtime.core import spans

    if not views:  # the byte-gather path of chunks too large for string views
        monkeypatch.setattr(spans, "VIEW_BUFFER_LIMIT", 0)
    rng = np.random.default_rng(3)
    alphabet = ["a", "é", "名", "🙂", " ", "Z"]
    text = "".join(rng.choice(alphabet, size=400))
    chars = ChunkText([text])
    s = rng.integers(0, 380, size=600)
    e = s + rng.integers(1, 21, size=600)  # 1 to 80 bytes: inline (<= 12) and buffer views
    got = spans._gather_text(chars, s, e)
    assert got.type == pa.string() and got.to_pylist() == [text[a:b] for a, b in zip(s, e)]


def test_lone_surrogate_is_a_clear_error():
    from tommer.runtime.errors import InputError

    with pytest.raises(InputError, match="row 1: .*surrogate"):
        ChunkText(["fine", "bad \ud800 text"])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(texts=st.lists(st.one_of(text_st, st.lists(st.sampled_from(HOSTILE), min_size=20, max_size=120).map(" ".join)),
                      min_size=1, max_size=8),
       seed=st.integers(0, 2**16), strategy=st.sampled_from(["threshold", "greedy", "flat", "nested"]),
       batch_tokens=st.sampled_from([16, 64, 4096]))
def test_annotator_equals_oracle_with_windows_and_batches(tiny_bundle, texts, seed, strategy, batch_tokens):
    """End to end through the annotator's stages (windows, length-sorted batches, padding) with a fake graph."""
    from oracle import TableSession, oracle_columns

    from tommer.runtime.execution.session import GraphRunner

    annotator = Annotator.from_bundle(tiny_bundle, max_tokens=24, window_overlap=8, decoding=strategy,
                                      threshold=0.6, keep_candidates=0.4, batch_tokens=batch_tokens)
    rng = np.random.default_rng(seed)
    annotator.session = TableSession(rng.random((97, annotator.manifest.band_width)) ** 0.5)
    annotator.runners = [GraphRunner(annotator.session, "cpu", io_binding=False) for _ in annotator.runners]
    chunk = annotator.process(Chunk(texts=texts))
    mentions, candidates = oracle_columns(annotator.session, annotator.tokenizer, texts, max_tokens=24, overlap=8,
                                          threshold=0.6, decoding=strategy, keep_candidates=0.4)
    assert chunk.mentions.equals(mentions)
    assert chunk.candidates.equals(candidates)
    assert chunk.tokens.n_tokens.tolist() == [0 if t is None else len(annotator.tokenizer.encode_batch([t])[0]) - 1
                                              for t in texts]


def test_pipeline_workers_keep_order_and_raise():
    import time

    def slow_square(x):
        time.sleep(0.001 * (x % 3))
        return x * x

    assert list(pipelined(range(50), [slow_square, lambda x: x + 1], workers=[3, 2])) == [x * x + 1 for x in range(50)]

    def boom(x):
        if x == 7:
            raise ValueError("seven")
        return x

    with pytest.raises(ValueError, match="seven"):
        list(pipelined(range(20), [boom], workers=[3]))
    with pytest.raises(ValueError, match="workers"):
        list(pipelined(range(3), [boom], workers=[0]))
