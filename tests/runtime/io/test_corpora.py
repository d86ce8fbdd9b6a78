"""Corpora as users have them: JSON Lines (compressed), URLs, datasets, DataFrames, spaCy, --limit/--sample."""

from __future__ import annotations

import bz2
import gzip
import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tommer.runtime.annotator import Annotator
from tommer.runtime.engines.local import annotate_files
from tommer.runtime.errors import InputError

TEXTS = ["John lives in New York City.", None, "", "Marie Curie won the Nobel Prize in 1903.",
         "Emoji 🙂 and tabs\tand\nnewlines near Barack Obama.", "北京是中华人民共和国的首都。",
         "The Amazon river flows through Brazil, Peru and Colombia. " * 3, "Paris 2020-01-01 and Berlin."]


@pytest.fixture(scope="module")
def annotator(tiny_bundle):
    return Annotator.from_bundle(tiny_bundle, threshold=0.3)


def records(texts=TEXTS):
    return [{"id": i, "text": t, "meta": {"body": t, "lang": "en"}, "score": i + 0.5 if i % 2 else i}
            for i, t in enumerate(texts)]


def write_jsonl(path, rows, blank_lines=True):
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    if blank_lines:
        lines.insert(2, "")  # a blank line is not a record
    data = ("\n".join(lines) + "\n").encode()
    if path.name.endswith(".gz"):
        data = gzip.compress(data)
    elif path.name.endswith(".bz2"):
        data = bz2.compress(data)
    elif path.name.endswith(".zst"):
        with pa.CompressedOutputStream(str(path), "zstd") as out:
            out.write(data)
        return path
    path.write_bytes(data)
    return path


def keys(column):
    """Row by row: (start, end, text, score) of each mention."""
    return [[(m["start"], m["end"], m["text"], m["score"]) for m in row or []] for row in column.to_pylist()]


def cli(*args):
    return subprocess.run([sys.executable, "-m", "tommer.runtime.cli.annotate", *map(str, args)], capture_output=True, text=True)


@pytest.mark.parametrize("name", ["c.jsonl", "c.ndjson", "c.json.gz", "c.jsonl.zst", "c.jsonl.bz2"])
def test_json_lines_plain_and_compressed(annotator, tmp_path, name):
    src = write_jsonl(tmp_path / name, records())
    expected = keys(annotator.annotate_table(pa.table({"text": TEXTS})).column("mentions"))
    annotate_files(annotator, str(src), None, chunk_rows=3)
    out = pq.read_table(tmp_path / "c.mentions.parquet")
    assert out.column_names == ["id", "text", "meta", "score", "mentions", "n_tokens"]
    assert out.column("id").to_pylist() == list(range(len(TEXTS))), "every row, in input order, blank line skipped"
    assert out.column("text").to_pylist() == TEXTS
    assert keys(out.column("mentions")) == expected
    assert sum(map(len, expected)) > 0, "the texts have mentions at this threshold"
    # kept columns keep their JSON types; the int/float column is a float; a date-like string stays a string
    assert out.schema.field("id").type == pa.int64() and out.schema.field("score").type == pa.float64()
    assert out.schema.field("meta").type == pa.struct([("body", pa.string()), ("lang", pa.string())])


def test_json_lines_nested_text_column_columns_and_missing_fields(annotator, tmp_path):
    rows = records()
    del rows[3]["meta"]  # no meta: a null text, the row stays
    rows[5]["meta"] = None
    src = write_jsonl(tmp_path / "n.jsonl", rows)
    annotate_files(annotator, str(src), str(tmp_path / "n.parquet"), text_column="meta.body", columns=["id"])
    out = pq.read_table(tmp_path / "n.parquet")
    assert out.column_names == ["id", "mentions", "n_tokens"]
    texts = [t if i not in (3, 5) else None for i, t in enumerate(TEXTS)]
    assert keys(out.column("mentions")) == keys(annotator.annotate_table(pa.table({"text": texts})).column("mentions"))
    assert out.column("n_tokens").to_pylist()[3] == 0 and out.column("n_tokens").to_pylist()[0] > 0
    with pytest.raises(InputError, match=r"n.jsonl: no column 'meta.bdy'; columns: id, text, meta, score"):
        annotate_files(annotator, str(src), str(tmp_path / "m.parquet"), text_column="meta.bdy")
    with pytest.raises(InputError, match=r"column 'meta.lang' has type|no column 'meta.lang'") as err:
        src2 = write_jsonl(tmp_path / "k.jsonl", [{"meta": {"lang": 1}}])
        annotate_files(annotator, str(src2), str(tmp_path / "k.parquet"), text_column="meta.lang")
    assert "expected a string column" in str(err.value)


def test_json_lines_resume_and_block_boundaries(annotator, tmp_path, monkeypatch):
    """Blocks smaller than a line, types unified across blocks, resume after an interruption."""
    from tommer.runtime.io import jsonl as jsonl_io

    monkeypatch.setattr(jsonl_io, "BLOCK_BYTES", 64)
    rows = records(TEXTS * 4)
    rows[-1]["score"] = 7.25  # a float only in the last block: the column is a float throughout
    src = write_jsonl(tmp_path / "r.jsonl.gz", rows)
    whole = tmp_path / "whole.parquet"
    annotate_files(annotator, str(src), str(whole), chunk_rows=5)
    assert pq.read_table(whole).schema.field("score").type == pa.float64()

    class Stop(Exception):
        pass

    def stop_after_two(chunk):
        if chunk.index >= 1:
            raise Stop

    target = tmp_path / "resumed.parquet"
    with pytest.raises(Stop):
        annotate_files(annotator, str(src), str(target), chunk_rows=5, on_chunk=stop_after_two)
    assert not target.exists() and (tmp_path / ".resumed.parquet.parts" / "part-000001.parquet").is_file()
    summary = annotate_files(annotator, str(src), str(target), chunk_rows=5, resume=True)
    assert summary.stats.rows < len(rows), "finished parts were not redone"
    assert pq.read_table(target).equals(pq.read_table(whole))


@pytest.mark.parametrize("content, line, what", [
    (b'{"text": "a"}\n\n{"text": "b",}\n{"text": "c"}\n', 3, "malformed JSON"),
    (b'{"text": "a"}\n["text"]\n', 2, "expected a JSON object, found list"),
    (b'{"text": "a"}\n{"text": "b"} {"text": "c"}\n', 2, "malformed JSON"),
    (b'{"text": "a", "id": 1}\n{"text": "b", "id": "x"}\n', 2, "changes type"),
])
def test_malformed_line_names_file_and_line_and_writes_nothing(annotator, tmp_path, content, line, what):
    folder = tmp_path / "in"
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", records())  # a good file first: nothing of it is written either
    (folder / "b.jsonl.gz").write_bytes(gzip.compress(content))
    with pytest.raises(InputError) as err:
        annotate_files(annotator, str(folder), str(tmp_path / "out"))
    assert f"b.jsonl.gz: line {line}: " in str(err.value) and what in str(err.value)
    assert not (tmp_path / "out").exists()


def test_malformed_line_cli(tiny_bundle, tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"text": "Paris"}\n{"text": "London"\n')
    out = cli(src, "--model", tiny_bundle)
    assert out.returncode == 2 and "bad.jsonl: line 2: malformed JSON" in out.stderr, out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"], "nothing written, not even hidden parts"


def test_limit_and_sample(annotator, tmp_path):
    from tommer.runtime.io.selection import Selection

    folder = tmp_path / "in"
    folder.mkdir()
    pq.write_table(pa.table({"id": list(range(8)), "text": TEXTS}), folder / "a.parquet", row_group_size=3)
    write_jsonl(folder / "b.jsonl", [{"id": 8 + i, "text": t} for i, t in enumerate(TEXTS)])
    (folder / "c.jsonl").write_text("not json: never read past the limit\n")
    limited = annotate_files(annotator, str(folder), str(tmp_path / "lim"), chunk_rows=3, selection=Selection(limit=10))
    assert limited.stats.rows == 10 and sorted(p.name for p in (tmp_path / "lim").iterdir()) == ["a.parquet", "b.parquet"]
    assert pq.read_table(tmp_path / "lim" / "b.parquet").column("id").to_pylist() == [8, 9]
    (folder / "c.jsonl").unlink()
    full = annotate_files(annotator, str(folder), str(tmp_path / "full"), chunk_rows=3)
    assert full.stats.rows == 16
    every = pa.concat_tables([pq.read_table(tmp_path / "full" / f"{n}.parquet", columns=["id", "mentions"])
                              for n in "ab"]).to_pylist()

    def sampled(seed, out):
        annotate_files(annotator, str(folder), str(tmp_path / out), chunk_rows=2, selection=Selection(sample=5, seed=seed))
        return pa.concat_tables([pq.read_table(p, columns=["id", "mentions"])
                                 for p in sorted((tmp_path / out).iterdir())]).to_pylist()

    one, again, other = sampled(1, "s1"), sampled(1, "s1b"), sampled(2, "s2")
    ids = [r["id"] for r in one]
    assert len(ids) == 5 and ids == sorted(ids) and one == again, "5 rows, in input order, the same for a seed"
    assert ids != [r["id"] for r in other]
    assert one == [every[i] for i in ids], "a sampled row's mentions are those of the full run"
    meta = json.loads(pq.read_schema(tmp_path / "s1" / "a.parquet").metadata[b"tommer"])
    assert meta["selection"] == {"sample": 5, "seed": 1}
    with pytest.raises(InputError, match=r"holds the rows of \{'sample': 5, 'seed': 1\}, not of every row"):
        annotate_files(annotator, str(folder), str(tmp_path / "s1"), resume=True)
    with pytest.raises(InputError, match="--limit and --sample exclude each other"):
        Selection(limit=1, sample=1)


def test_same_mentions_row_by_row_from_every_kind_of_source(annotator, tmp_path):
    """The Show of issue 14: Parquet, JSONL, JSONL.gz, a file:// URL, a datasets.Dataset and a DataFrame."""
    import datasets
    import pandas as pd

    rows = [{"id": i, "text": t} for i, t in enumerate(TEXTS)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet", row_group_size=3)
    write_jsonl(tmp_path / "j.jsonl", rows)
    write_jsonl(tmp_path / "g.jsonl.gz", rows)
    got = {}
    for name, src in [("parquet", tmp_path / "p.parquet"), ("jsonl", tmp_path / "j.jsonl"),
                      ("jsonl.gz", tmp_path / "g.jsonl.gz"), ("file://", (tmp_path / "j.jsonl").as_uri())]:
        out = tmp_path / f"out-{len(got)}.parquet"
        annotate_files(annotator, str(src), str(out), chunk_rows=3)
        table = pq.read_table(out)
        assert table.column("id").to_pylist() == list(range(len(TEXTS))), name
        got[name] = keys(table.column("mentions"))
    ds = datasets.Dataset.from_list(rows)
    mapped = ds.map(annotator.map_batch, batched=True, batch_size=3)
    assert mapped.column_names == ["id", "text", "mentions", "n_tokens"]
    got["ds.map(map_batch)"] = keys(mapped.data.column("mentions"))
    typed = annotator.annotate_dataset(ds, batch_size=3)
    assert typed.data.schema.field("mentions").type == pq.read_schema(tmp_path / "out-0.parquet").field("mentions").type
    got["annotate_dataset"] = keys(typed.data.column("mentions"))
    frame = annotator.annotate_dataframe(pd.DataFrame(rows), chunk_rows=3)
    assert list(frame.columns) == ["id", "text", "mentions", "n_tokens"] and frame["n_tokens"].iloc[1] == 0
    got["DataFrame"] = [[(m["start"], m["end"], m["text"], m["score"]) for m in row] for row in frame["mentions"]]
    reference = got.pop("parquet")
    assert sum(map(len, reference)) > 3
    for name, mentions in got.items():
        assert mentions == reference, name
    with pytest.raises(InputError, match=r"<DataFrame>: columns \['mentions', 'n_tokens'\] would be overwritten"):
        annotator.annotate_dataframe(frame)


def test_annotator_pickles_for_datasets_workers_and_cache(annotator):
    import pickle

    from datasets.fingerprint import Hasher

    copy = pickle.loads(pickle.dumps(annotator))
    assert copy is not annotator and copy.options == annotator.options
    assert copy.annotate(TEXTS) == annotator.annotate(TEXTS)
    assert Hasher.hash(annotator.map_batch) == Hasher.hash(copy.map_batch), "a stable fingerprint: datasets can cache"


def test_spacy_component_batches_and_aligns_to_spacy_tokens(tiny_bundle, annotator):
    import spacy
    from spacy import displacy

    nlp = spacy.blank("en")
    nlp.add_pipe("tommer", config={"model": str(tiny_bundle), "threshold": 0.3})  # found by its entry point
    texts = [t or "" for t in TEXTS]
    calls = []
    component = nlp.get_pipe("tommer")
    process = component.annotator.process
    component.annotator.process = lambda chunk: calls.append(len(chunk.texts)) or process(chunk)
    docs = list(nlp.pipe(texts, batch_size=3))
    assert calls == [3, 3, 2], "one graph call per batch of nlp.pipe"
    expected = annotator.annotate(texts)
    assert sum(map(len, expected)) > 3
    for doc, mentions in zip(docs, expected):
        group = doc.spans["mentions"]
        assert len(group.attrs["scores"]) == len(group)
        wanted = {}
        for m in mentions:  # every mention is widened to the spaCy tokens it touches
            span = doc.char_span(m.start, m.end, alignment_mode="expand")
            assert span.start_char <= m.start and m.end <= span.end_char
            assert span[0].idx + len(span[0]) > m.start and span[-1].idx < m.end, "no token beyond the mention"
            wanted[(span.start, span.end)] = max(wanted.get((span.start, span.end), 0.0), m.score)
        got = {(s.start, s.end): float(p) for s, p in zip(group, group.attrs["scores"])}
        assert got == pytest.approx(wanted) and all(s.label_ == "MENTION" for s in group)
    html = displacy.render(docs[0], style="span", options={"spans_key": "mentions"})
    assert "MENTION" in html
    with pytest.raises(Exception, match="needs a bundle"):
        spacy.blank("en").add_pipe("tommer")


def test_urls_on_an_fsspec_filesystem_with_globs_and_resume(annotator, tmp_path):
    """memory:// stands for an object store: inputs, globs, --output, parts and resume through fsspec."""
    import fsspec

    fs = fsspec.filesystem("memory")
    rows = records(TEXTS * 3)
    write_jsonl(tmp_path / "a.jsonl.gz", rows)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "b.parquet", row_group_size=4)
    fs.pipe("/corpus/x/a.jsonl.gz", (tmp_path / "a.jsonl.gz").read_bytes())
    fs.pipe("/corpus/x/b.parquet", (tmp_path / "b.parquet").read_bytes())
    fs.pipe("/corpus/x/_SUCCESS", b"")
    annotate_files(annotator, str(tmp_path / "a.jsonl.gz"), str(tmp_path / "local.parquet"), chunk_rows=4)
    local = pq.read_table(tmp_path / "local.parquet")

    class Stop(Exception):
        pass

    def stop(chunk):
        if chunk.index >= 1:
            raise Stop

    with pytest.raises(Stop):
        annotate_files(annotator, "memory://corpus/**/*.*", "memory://out/", chunk_rows=4, on_chunk=stop)
    assert fs.isfile("/out/.a.parquet.parts/part-000001.parquet") and not fs.exists("/out/a.parquet")
    done = annotate_files(annotator, "memory://corpus/**/*.*", "memory://out/", chunk_rows=4, resume=True)
    assert done.files == 2 and done.stats.rows < 2 * len(rows), "finished parts were not redone"
    assert sorted(fs.find("/out")) == ["/out/a.parquet", "/out/b.parquet"], "parts removed, no temporary object"
    with fs.open("/out/a.parquet", "rb") as fh:
        assert pq.read_table(fh).equals(local)
    with fs.open("/out/b.parquet", "rb") as fh:
        assert keys(pq.read_table(fh).column("mentions")) == keys(local.column("mentions"))
    with pytest.raises(InputError, match="memory://nowhere: does not exist"):
        annotate_files(annotator, "memory://nowhere", "memory://out2/")


def test_help_explains_the_new_options_with_defaults():
    out = cli("--help")
    assert out.returncode == 0
    text = " ".join(out.stdout.split())
    for needle in ("--limit", "--sample", "--seed", "default: every row", "default: 0", "JSON Lines", "hf://",
                   "a dotted name reaches a nested field"):
        assert needle in text, needle
