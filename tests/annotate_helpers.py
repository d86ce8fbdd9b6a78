"""Shared by the annotation tests: the texts, a corpus writer, the CLI runner, mention checks, an interrupted run."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

TEXTS = ["John lives in New York City.", None, "", "   ", "Marie Curie won the Nobel Prize in 1903.",
         "Emoji 🙂 and tabs\tand\nnewlines near Barack Obama.", "北京是中华人民共和国的首都。",
         "The Amazon river flows through Brazil, Peru and Colombia. " * 4]  # fits one window


def corpus(tmp_path, texts=TEXTS, name="corpus.parquet", text_type=pa.string(), row_group_size=3):
    table = pa.table({"id": pa.array(range(len(texts)), pa.int64()), "text": pa.array(texts, text_type)})
    path = tmp_path / name
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "tommer.runtime.cli.annotate", *map(str, args)],
                          capture_output=True, text=True, **kw)


def check_mentions(texts, per_doc):
    for text, mentions in zip(texts, per_doc):
        keys = [(m["start"], m["end"]) if isinstance(m, dict) else (m.start, m.end) for m in mentions]
        assert keys == sorted(keys) and len(set(keys)) == len(keys)
        for m in mentions:
            m = m if isinstance(m, dict) else m.__dict__
            assert text[m["start"]:m["end"]] == m["text"] and m["text"] == m["text"].strip() != ""
            assert 0.5 < m["score"] <= 1.0


def kill_corpus(folder, sizes=(700, 500, 900), seed=0):
    """A folder of several files of random short texts (fast to annotate, many chunks)."""
    rng = np.random.default_rng(seed)
    words = ["Paris", "London", "the", "river", "Obama", "visited", "Marie", "Curie", "and", "in", "1903", "Nobel"]
    folder.mkdir()
    for k, n in enumerate(sizes):
        texts = [" ".join(rng.choice(words, size=rng.integers(3, 40))) for _ in range(n)]
        corpus(folder, texts=texts, name=f"f{k}.parquet", row_group_size=170)
    return folder


class _Stop(Exception):
    pass


def interrupted_run(annotator, src, out, chunk_rows=3):
    """Annotate ``src`` and stop after the first chunk, leaving parts and progress behind."""
    def stop(chunk):
        raise _Stop

    with pytest.raises(_Stop):
        annotator.annotate_parquet(src, out, chunk_rows=chunk_rows, on_chunk=stop)
    assert list(out.parent.glob(f".{out.name}.parts/part-*.parquet"))
