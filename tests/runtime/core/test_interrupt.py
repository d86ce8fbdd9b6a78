"""An interrupt loses at most the batches in flight: the finished batches of an unwritten chunk are kept
beside the parts (``part-*.partial.npz``), and a resume runs only the other windows, with an output equal
to an uninterrupted run, row by row."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
from annotate_helpers import TEXTS, cli, corpus

from tommer.runtime.annotator import Annotator
from tommer.runtime.core.chunk import Chunk
from tommer.runtime.core.partial import Partial
from tommer.runtime.errors import Cancelled

WORDS = ["Paris", "London", "the", "river", "Obama", "visited", "Marie", "Curie", "and", "in", "1903", "Nobel"]


def texts(n: int, seed: int = 0, longest: int = 60) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(3, longest))) for _ in range(n)]


def cancel_after(annotator: Annotator, batches: int) -> list[int]:
    """Make ``annotator`` cancel itself once ``batches`` batches have run; returns the tokens of each batch run."""
    ran: list[int] = []

    def progress(rows: float, tokens: int) -> None:
        if tokens:
            ran.append(tokens)
        if len(ran) == batches:
            annotator.cancel()

    annotator.on_progress = progress
    return ran


def counting(annotator: Annotator) -> list[int]:
    ran: list[int] = []
    annotator.on_progress = lambda rows, tokens: ran.append(tokens) if tokens else None
    return ran


@pytest.mark.parametrize("streams,buckets", [(1, False), (2, False), (1, True)])
def test_infer_given_the_windows_done_runs_only_the_others(tiny_bundle, streams, buckets):
    """The core: a cancelled infer hands back the windows done; a second infer of the same chunk runs the
    rest only, and decodes to the mentions of one uninterrupted infer (shape buckets too: the GPU path)."""
    docs = texts(60) + [TEXTS[-1] * 3]  # a windowed document too
    options = dict(batch_tokens=96, max_tokens=48, window_overlap=27, streams=streams, threads=streams,
                   buckets=buckets)
    whole = Annotator.from_bundle(tiny_bundle, **options)
    all_batches = counting(whole)
    expected = whole.process(Chunk(texts=docs)).mentions.to_pylist()
    assert len(all_batches) > 10

    annotator = Annotator.from_bundle(tiny_bundle, **options)
    cancel_after(annotator, 4)
    chunk = annotator.tokenize(Chunk(texts=docs))
    with pytest.raises(Cancelled):
        annotator.infer(chunk)
    kept = chunk.partial
    assert kept is not None and 4 <= len(kept.windows) < kept.total and not kept.complete
    assert 0 < kept.rows_done < len(docs)
    annotator.reset_cancel()
    rest = counting(annotator)
    again = annotator.tokenize(Chunk(texts=docs, partial=Partial.from_arrays(kept.to_arrays())))
    got = annotator.decode(annotator.infer(again)).mentions.to_pylist()
    assert got == expected, "a resumed chunk decodes to the uninterrupted mentions"
    assert sum(rest) + sum(all_batches[:4]) <= sum(all_batches), "the windows done were not run again"
    assert sum(rest) < sum(all_batches) and again.partial.complete
    assert again.stats.tokens == sum(rest), "tokens count what the graph ran in this call"

    other = annotator.tokenize(Chunk(texts=docs[1:], partial=kept))  # another chunk: the kept windows do not apply
    ran = counting(annotator)
    annotator.infer(other)
    assert sum(ran) == other.stats.tokens and other.partial.complete


def chunk_ends(annotator: Annotator) -> list[int]:
    """Record, for each chunk ``annotator.infer`` finishes, how many batches have run by then (needs
    ``counting`` installed first)."""
    ends: list[int] = []
    infer, progress = annotator.infer, annotator.on_progress
    seen = [0]

    def count(rows, tokens):
        seen[0] += bool(tokens)
        progress(rows, tokens)

    def recorded(chunk):
        inferred = infer(chunk)
        ends.append(seen[0])
        return inferred

    annotator.on_progress, annotator.infer = count, recorded
    return ends


def _parts(out):
    folder = out.with_name(f".{out.name}.parts")
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize("streams", [1, 2])
def test_a_cancelled_file_run_keeps_its_finished_batches_and_resume_equals_one_run(tiny_bundle, tmp_path, streams):
    """Cancelled in the middle of a chunk: the chunk's finished batches are kept as a partial file; --resume
    runs only the rest and the output equals an uninterrupted run, row by row, with the same metadata."""
    src = corpus(tmp_path, texts=texts(90, seed=1), row_group_size=17)
    options = dict(batch_tokens=128, streams=streams, threads=streams)
    run = dict(chunk_rows=40, columns=["id"], host_threads=1)
    whole = Annotator.from_bundle(tiny_bundle, **options)
    per_batch = counting(whole)
    ends = chunk_ends(whole)
    whole.annotate_parquet(src, tmp_path / "whole.parquet", **run)
    expected = pq.read_table(tmp_path / "whole.parquet")
    assert len(ends) == 3 and ends[1] - ends[0] >= 4, ends

    out = tmp_path / "out.parquet"
    annotator = Annotator.from_bundle(tiny_bundle, **options)
    first_run = cancel_after(annotator, (ends[0] + ends[1]) // 2)  # in the middle of the second chunk
    with pytest.raises(Cancelled):
        annotator.annotate_parquet(src, out, **run)
    names = _parts(out)
    assert "part-000001.partial.npz" in names and not out.exists(), names
    assert "progress.json" in names

    annotator.reset_cancel()
    resumed = counting(annotator)
    summary = annotator.annotate_parquet(src, out, resume=True, **run)
    got = pq.read_table(out)
    assert got.to_pylist() == expected.to_pylist(), "the resumed output differs from an uninterrupted run"
    assert got.schema.metadata == expected.schema.metadata
    assert not out.with_name(f".{out.name}.parts").exists(), "parts and partial files are removed at the end"
    lost = sum(first_run) + sum(resumed) - sum(per_batch)  # tokens run twice
    assert lost <= streams * max(per_batch), f"more than the batches in flight were redone ({lost} tokens)"
    assert summary.stats.tokens == sum(resumed)


def test_a_touched_input_keeps_the_partial_batches(tiny_bundle, tmp_path):
    """A mere touch (modification time only) between the interrupt and the resume: the kept batches are used."""
    src = corpus(tmp_path, texts=texts(50, seed=2), row_group_size=50)
    whole = Annotator.from_bundle(tiny_bundle, batch_tokens=128)
    per_batch = counting(whole)
    whole.annotate_parquet(src, tmp_path / "whole.parquet", chunk_rows=1000)
    out = tmp_path / "out.parquet"
    annotator = Annotator.from_bundle(tiny_bundle, batch_tokens=128)
    cancel_after(annotator, 5)
    with pytest.raises(Cancelled):
        annotator.annotate_parquet(src, out, chunk_rows=1000)
    assert _parts(out) == ["part-000000.partial.npz", "progress.json"]
    os.utime(src, ns=(time.time_ns(), time.time_ns() + 10**9))
    annotator.reset_cancel()
    resumed = counting(annotator)
    annotator.annotate_parquet(src, out, chunk_rows=1000, resume=True)
    assert pq.read_table(out).to_pylist() == pq.read_table(tmp_path / "whole.parquet").to_pylist()
    assert sum(resumed) <= sum(per_batch) - sum(per_batch[:5]) + max(per_batch)


def test_an_unreadable_or_foreign_partial_file_redoes_the_chunk(tiny_bundle, tmp_path):
    """A partial file that cannot be read, or was made for other rows, is ignored: the chunk runs whole."""
    src = corpus(tmp_path, texts=texts(30, seed=3), row_group_size=30)
    whole = Annotator.from_bundle(tiny_bundle, batch_tokens=128)
    whole.annotate_parquet(src, tmp_path / "whole.parquet", chunk_rows=1000)
    out = tmp_path / "out.parquet"
    annotator = Annotator.from_bundle(tiny_bundle, batch_tokens=128)
    cancel_after(annotator, 3)
    with pytest.raises(Cancelled):
        annotator.annotate_parquet(src, out, chunk_rows=1000)
    kept = out.with_name(f".{out.name}.parts") / "part-000000.partial.npz"
    kept.write_bytes(b"not an npz file")
    annotator.reset_cancel()
    annotator.on_progress = None
    annotator.annotate_parquet(src, out, chunk_rows=1000, resume=True)
    assert pq.read_table(out).to_pylist() == pq.read_table(tmp_path / "whole.parquet").to_pylist()


@pytest.mark.slow
def test_ctrl_c_in_a_long_chunk_keeps_its_batches_says_so_and_resume_equals(tiny_bundle, tmp_path):
    """The CLI: SIGINT during the one chunk of a file; the message names the kept batches; --resume finishes
    with an output equal to an uninterrupted run and runs fewer tokens than the whole file."""
    src = corpus(tmp_path, texts=texts(400, seed=4, longest=120), row_group_size=400)
    args = [src, "--model", tiny_bundle, "--batch-tokens", "64", "--streams", "1", "--threads", "1"]
    whole = cli(*args, "--output", tmp_path / "whole.parquet", "-q")
    assert whole.returncode == 0, whole.stderr
    tokens = int(re.search(r"([\d,]+) tokens, ", whole.stdout).group(1).replace(",", ""))
    out = tmp_path / "out.parquet"
    proc = subprocess.Popen([sys.executable, "-m", "tommer.runtime.cli.annotate", *map(str, args), "--output",
                             str(out), "--progress-every", "0"], stderr=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    lines = 0
    for line in proc.stderr:  # a progress line per batch: stop after a few dozen batches
        lines += line.startswith("progress: ") and "rows (" in line
        if lines >= 30:
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    assert "0 finished part(s)" in err and "the finished batches:" in err and "part-000000.partial.npz" in err, err
    assert re.search(r"every window of [\d,]+ of 400 rows", err), err
    resumed = cli(*args, "--output", out, "--resume", "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert pq.read_table(out).to_pylist() == pq.read_table(tmp_path / "whole.parquet").to_pylist()
    again = int(re.search(r"([\d,]+) tokens, ", resumed.stdout).group(1).replace(",", ""))
    assert again < tokens, "the resume ran the kept batches again"


def test_a_resume_under_other_batch_options_runs_the_windows_left_in_new_batches(tiny_bundle):
    """--batch-tokens is no output option: a resume may change it. Batches then mix done and open windows;
    only the open ones run, and the spans are those of one run (scores within batch invariance)."""
    from tommer.runtime.core.mentions import mention_lists

    docs = texts(60, seed=5)
    whole = Annotator.from_bundle(tiny_bundle, batch_tokens=96)
    full = whole.process(Chunk(texts=docs))
    expected = mention_lists(full.mentions)
    first = Annotator.from_bundle(tiny_bundle, batch_tokens=96, streams=1)
    first_ran = cancel_after(first, 5)
    chunk = first.tokenize(Chunk(texts=docs))
    with pytest.raises(Cancelled):
        first.infer(chunk)
    other = Annotator.from_bundle(tiny_bundle, batch_tokens=250, streams=1)
    ran = counting(other)
    again = other.process(other.tokenize(Chunk(texts=docs, partial=chunk.partial)))
    assert sum(ran) == again.stats.tokens == full.stats.tokens - sum(first_ran), "each window runs once"
    got = mention_lists(again.mentions)
    assert [[(m.start, m.end, m.text) for m in d] for d in got] == \
        [[(m.start, m.end, m.text) for m in d] for d in expected]
    assert max(abs(a.score - b.score) for d, e in zip(got, expected) for a, b in zip(d, e)) < 1e-5
