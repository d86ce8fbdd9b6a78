"""The core annotator: parity with the graph per text, long documents, cancelling, windows and progress."""

from __future__ import annotations

import time

import numpy as np
import pytest
from annotate_helpers import TEXTS, check_mentions

from tommer.runtime.annotator import Annotator
from tommer.runtime.bundle import read_manifest
from tommer.runtime.core.chunk import Chunk
from tommer.runtime.core.decoding import decode
from tommer.runtime.core.mentions import char_mentions
from tommer.runtime.core.tokenization import BundleTokenizer, pad_batch
from tommer.runtime.errors import InputError
from tommer.runtime.execution.session import create_session, run_band


@pytest.mark.parametrize("strategy", ["threshold", "greedy", "flat", "nested"])
def test_mentions_equal_graph_decoded_per_text(tiny_bundle, strategy):
    """Batched, sorted annotation gives each text exactly its own graph output, decoded."""
    annotator = Annotator.from_bundle(tiny_bundle, decoding=strategy, batch_tokens=64)
    got = annotator.annotate(TEXTS)
    manifest = read_manifest(tiny_bundle)
    tok = BundleTokenizer.from_bundle(tiny_bundle, manifest)
    session = create_session(tiny_bundle / "model.onnx")
    for text, mentions in zip(TEXTS, got):
        if text is None:
            assert mentions == []
            continue
        (enc,) = tok.encode_batch([text])
        band = run_band(session, *pad_batch([enc.ids], 0))[0]
        expected = char_mentions(text, enc.offsets, *decode(band, 0.5, strategy))
        assert [(m.start, m.end, m.text) for m in mentions] == [(m.start, m.end, m.text) for m in expected]
        np.testing.assert_allclose([m.score for m in mentions], [m.score for m in expected], atol=1e-6)
    check_mentions(TEXTS, got)
    assert sum(map(len, got)) > 0


@pytest.mark.parametrize("strategy", ["threshold", "nested"])
def test_long_documents_are_windowed_never_truncated(tiny_bundle, strategy):
    """A document past --max-tokens: windows, owner rows stitched, equal to the per-document oracle."""
    from oracle import oracle_columns

    texts = [TEXTS[-1] * 2, "short one", TEXTS[-1] * 3]
    annotator = Annotator.from_bundle(tiny_bundle, max_tokens=48, window_overlap=27, decoding=strategy,
                                      keep_candidates=0.3, batch_tokens=100)
    chunk = annotator.process(Chunk(texts=texts))
    assert chunk.stats.documents_windowed == 2
    mentions, candidates = oracle_columns(annotator.session, annotator.tokenizer, texts, max_tokens=48, overlap=27,
                                          decoding=strategy, keep_candidates=0.3)
    assert chunk.mentions.equals(mentions) and chunk.candidates.equals(candidates)
    got = annotator.annotate(texts)
    assert max(m.end for m in got[0]) > len(texts[0]) - 15, "mentions reach the end of the document"
    check_mentions(texts, got)


def test_cancel_stops_the_graph_run_in_flight(tiny_bundle):
    """``Annotator.cancel`` from another thread terminates a long ``session.run`` (one batch), then reset works."""
    import threading

    from tommer.runtime.errors import Cancelled

    annotator = Annotator.from_bundle(tiny_bundle, batch_tokens=10**7)  # the whole chunk in one batch
    chunk = annotator.tokenize(Chunk(texts=["Paris and London by the river in 1903 " * 60] * 20))
    timer = threading.Timer(0.2, annotator.cancel)
    timer.start()
    begin = time.perf_counter()
    with pytest.raises(Cancelled, match="while the graph ran"):
        annotator.infer(chunk)
    assert time.perf_counter() - begin < 2.0, "the run was not cut short"
    annotator.reset_cancel()
    assert annotator.annotate(TEXTS[:1]) == Annotator.from_bundle(tiny_bundle).annotate(TEXTS[:1])


def test_window_overlap_adapts_to_max_tokens(tiny_bundle):
    """--max-tokens alone works: the default overlap shrinks with the window, never below band width + 1."""
    from tommer.runtime.options import AnnotateOptions, check_options

    manifest = read_manifest(tiny_bundle)  # band width 6
    resolved = {m: check_options(manifest, AnnotateOptions(max_tokens=m)).window_overlap for m in (9, 32, 128, 512)}
    assert resolved == {9: 7, 32: 7, 128: 31, 512: 127}
    assert check_options(manifest, AnnotateOptions()).window_overlap == 127  # the bundle's 512 tokens
    with pytest.raises(InputError, match=r"--max-tokens 8 is too small for this bundle.*--max-tokens >= 9"):
        check_options(manifest, AnnotateOptions(max_tokens=8))
    with pytest.raises(InputError, match=r"--max-tokens 32 must exceed --window-overlap 40 \+ 1"):
        check_options(manifest, AnnotateOptions(max_tokens=32, window_overlap=40))
    with pytest.raises(InputError, match=r"--window-overlap 5 is too small"):
        check_options(manifest, AnnotateOptions(window_overlap=5))
    texts = [TEXTS[-1] * 2]
    small = Annotator.from_bundle(tiny_bundle, max_tokens=32).annotate(texts)
    assert small == Annotator.from_bundle(tiny_bundle, max_tokens=32, window_overlap=7).annotate(texts)


def test_progress_moves_within_a_chunk(tiny_bundle):
    """One long document in one chunk: progress comes batch by batch, in rows and tokens that add up."""
    annotator = Annotator.from_bundle(tiny_bundle, max_tokens=48, window_overlap=27, batch_tokens=100)
    calls = []
    annotator.on_progress = lambda rows, tokens: calls.append((rows, tokens))
    chunk = annotator.process(Chunk(texts=[TEXTS[-1] * 3]))
    assert len(calls) > 3, calls
    assert sum(r for r, _ in calls) == pytest.approx(1.0) and all(0 < r < 1 for r, _ in calls)
    assert sum(t for _, t in calls) == chunk.stats.tokens
    calls.clear()
    chunk = annotator.process(Chunk(texts=[None, ""]))
    assert sum(r for r, _ in calls) == 2 and sum(t for _, t in calls) == chunk.stats.tokens
