"""Shape buckets and IO binding: a fixed set of shapes, every window once, and the same spans as plain runs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tommer.runtime.core.batching import ShapeBuckets, plan_exact


@given(max_tokens=st.integers(17, 4096), batch_tokens=st.integers(16, 70000))
@settings(max_examples=60, deadline=None)
def test_ladder_is_geometric_and_ends_at_the_window(max_tokens, batch_tokens):
    b = ShapeBuckets.ladder(max_tokens, batch_tokens)
    lengths = np.asarray(b.lengths)
    assert lengths[-1] == max_tokens and np.all(np.diff(lengths) > 0)
    assert np.all(lengths[:-1] % 8 == 0)
    # padding of a length to its bucket stays under a quarter octave (plus the rounding to 8)
    assert np.all(lengths[1:] <= np.ceil(lengths[:-1] * 2 ** 0.25 / 8) * 8 + 8)
    assert all(1 <= b.rows_for(w) <= b.max_rows for w in b.lengths)


@given(lengths=st.lists(st.integers(1, 300), min_size=1, max_size=400), batch_tokens=st.integers(16, 5000))
@settings(max_examples=80, deadline=None)
def test_bucket_plan_covers_every_window_once_with_few_shapes(lengths, batch_tokens):
    lengths = np.asarray(lengths)
    b = ShapeBuckets.ladder(300, batch_tokens)
    plan = b.plan(lengths)
    seen = np.concatenate([p.index for p in plan])
    assert sorted(seen.tolist()) == list(range(len(lengths)))
    full = set(b.shapes())
    for p in plan:
        assert len(p.index) <= p.rows <= b.rows_for(p.width)
        assert lengths[p.index].max() <= p.width
        assert p.width == b.width_for(lengths[p.index].max()[None])[0]  # the smallest bucket that fits
        assert (p.rows, p.width) in full or (p.rows & (p.rows - 1)) == 0  # full shape, or power-of-two rows
    exact = plan_exact(lengths, batch_tokens)
    assert sorted(np.concatenate([p.index for p in exact]).tolist()) == list(range(len(lengths)))


def test_buckets_and_io_binding_give_the_plain_run_spans(tiny_bundle):
    from tommer.exporter.random_models import CORPUS
    from tommer.runtime.annotator import Annotator
    from tommer.runtime.core.chunk import Chunk

    texts = CORPUS * 7 + ["Paris " * 90, "", None]
    runs = {}
    for name, kw in {"plain": dict(io_binding=False), "io-binding": dict(),
                     "buckets": dict(buckets=True, batch_tokens=96)}.items():
        annotator = Annotator.from_bundle(tiny_bundle, provider="cpu", max_tokens=64, window_overlap=16, **kw)
        chunk = annotator.process(Chunk(texts=texts))
        runs[name] = (chunk.mentions.to_pylist(), chunk.stats)
    assert runs["plain"][0] == runs["io-binding"][0] == runs["buckets"][0]
    assert sum(len(m) for m in runs["plain"][0]) > 0
    plain, bucketed = runs["plain"][1], runs["buckets"][1]
    assert plain.tokens == bucketed.tokens and bucketed.padded_tokens > plain.padded_tokens


def test_io_binding_reuses_one_output_buffer_per_shape(tiny_bundle):
    from tommer.runtime.annotator import Annotator
    from tommer.runtime.execution.session import run_band

    annotator = Annotator.from_bundle(tiny_bundle, provider="cpu")
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 300, size=(3, 20))
    mask = np.ones_like(ids)
    mask[2, 11:] = 0
    first = annotator.runner.run(ids, mask).copy()
    again = annotator.runner.run(ids[::-1].copy(), mask[::-1].copy())
    assert len(annotator.runner._buffers) == 1
    np.testing.assert_array_equal(first, run_band(annotator.session, ids, mask))
    np.testing.assert_array_equal(again, first[::-1])
    for width in range(5, 45):  # more shapes than the cache holds: the oldest are dropped, results unchanged
        cut_ids, cut_mask = np.tile(ids, 3)[:, :width], np.ones((3, width), np.int64)
        np.testing.assert_array_equal(annotator.runner.run(cut_ids, cut_mask), run_band(annotator.session, cut_ids, cut_mask))
    assert len(annotator.runner._buffers) == annotator.runner.max_shapes
    assert list(annotator.runner._buffers)[-1] == (3, 44)  # the most recent shape is kept


def test_streams_give_the_one_stream_output_in_batch_order(tiny_bundle):
    import threading

    from tommer.exporter.random_models import CORPUS
    from tommer.runtime.annotator import Annotator
    from tommer.runtime.core.chunk import Chunk
    from tommer.runtime.execution.session import GraphRunner

    class Recording(GraphRunner):
        def run(self, ids, mask):
            threads.add(threading.current_thread().name)
            return super().run(ids, mask)

    texts = CORPUS * 9 + ["Paris " * 90, "", None]
    runs = {}
    for streams in (1, 3):
        threads: set[str] = set()
        annotator = Annotator.from_bundle(tiny_bundle, provider="cpu", max_tokens=64, window_overlap=16,
                                          batch_tokens=64, streams=streams)
        assert annotator.options.streams == streams and len(annotator.runners) == streams
        annotator.runners = [Recording(annotator.session, "cpu") for _ in range(streams)]
        progress = []
        annotator.on_progress = lambda rows, tokens, progress=progress: progress.append(tokens)
        chunk = annotator.process(Chunk(texts=texts))
        runs[streams] = (chunk.mentions.to_pylist(), chunk.stats, progress, set(threads))
    one, three = runs[1], runs[3]
    assert one[0] == three[0] and sum(len(m) for m in one[0]) > 0
    assert (one[1].tokens, one[1].padded_tokens) == (three[1].tokens, three[1].padded_tokens)
    assert one[2] == three[2] and sum(one[2]) == one[1].tokens  # progress per batch, in batch order
    assert len(one[2]) > 6  # many batches, so that streams overlap
    assert len(one[3]) == 1 and len(three[3]) >= 2 and not three[3] & one[3]


def test_a_failing_stream_stops_the_batches_not_started(tiny_bundle):
    from tommer.exporter.random_models import CORPUS
    from tommer.runtime.annotator import Annotator
    from tommer.runtime.execution.session import GraphRunner

    calls = []

    class Counting(GraphRunner):
        fail_at = None

        def run(self, ids, mask):
            calls.append(1)
            if len(calls) == self.fail_at:
                raise ValueError("stream failure")
            return super().run(ids, mask)

    annotator = Annotator.from_bundle(tiny_bundle, provider="cpu", max_tokens=64, window_overlap=16, batch_tokens=64,
                                      streams=2)
    annotator.runners = [Counting(annotator.session, "cpu") for _ in range(2)]
    texts = CORPUS * 40
    expected = annotator.annotate(texts)
    batches = len(calls)
    assert batches > 40
    calls.clear()
    Counting.fail_at = 2
    with pytest.raises(ValueError, match="stream failure"):
        annotator.annotate(texts)
    annotator._pool.shutdown(wait=True)  # waits for every batch still queued, had it not been cancelled
    annotator._pool = None
    assert 2 <= len(calls) < batches // 2  # the batches not started when it failed never ran
    calls.clear()
    Counting.fail_at = None

    def stop(rows, tokens):  # a failure in the loop that takes the results (e.g. the progress callback)
        raise KeyboardInterrupt

    annotator.on_progress = stop
    with pytest.raises(KeyboardInterrupt) as info:  # its traceback keeps the stage's frame alive (as a pipeline does)
        annotator.annotate(texts)
    annotator._pool.shutdown(wait=True)
    annotator._pool = None
    assert 1 <= len(calls) < batches // 2 and info.value is not None
    calls.clear()
    annotator.on_progress = None  # the annotator still works, with the same mentions
    assert annotator.annotate(texts) == expected and len(calls) == batches


@pytest.mark.parametrize("provider,threads,streams,cores,expected", [
    ("cpu", 0, 0, 2, (2, 1)), ("cpu", 0, 0, 32, (8, 4)), ("cpu", 4, 0, 32, (4, 1)), ("cpu", 4, 2, 32, (2, 2)),
    ("cpu", 3, 1, 32, (1, 3)), ("cpu", 0, 1, 32, (1, 0)), ("cpu", 0, 5, 2, (5, 1)),
    ("cuda", 0, 0, 32, (1, 0)), ("tensorrt", 6, 0, 32, (1, 6)),
])
def test_stream_threads_split_the_cores(monkeypatch, provider, threads, streams, cores, expected):
    from tommer.runtime import options

    monkeypatch.setattr(options, "usable_cores", lambda: cores)
    assert options.stream_threads(provider, threads, streams) == expected
