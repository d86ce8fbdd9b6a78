"""The local engine, file in and file out: rows, order, columns, text types, bad input, bundle checks."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from annotate_helpers import TEXTS, check_mentions, cli, corpus

from tommer.runtime.annotator import Annotator
from tommer.runtime.bundle import read_manifest
from tommer.runtime.errors import BundleError, InputError


def test_parquet_roundtrip_keeps_rows_order_and_columns(tiny_bundle, tmp_path):
    src = corpus(tmp_path)
    out = cli(src, "--model", tiny_bundle, "--chunk-rows", "3", "--batch-tokens", "128", "--max-tokens", "64",
              "--window-overlap", "12")
    assert out.returncode == 0, out.stderr
    assert "8 rows" in out.stdout and "documents windowed" in out.stdout and "tokens/s" in out.stdout
    table = pq.read_table(tmp_path / "corpus.mentions.parquet")
    assert table.column_names == ["id", "text", "mentions", "n_tokens"]
    assert table.column("id").to_pylist() == list(range(len(TEXTS)))
    assert table.column("text").to_pylist() == TEXTS
    rows = table.to_pylist()
    check_mentions(TEXTS, [r["mentions"] for r in rows])
    assert rows[1]["mentions"] == [] and rows[1]["n_tokens"] == 0  # null text kept
    assert rows[2]["mentions"] == [] and rows[2]["n_tokens"] == 0  # empty text kept
    assert rows[0]["n_tokens"] > 0
    meta = json.loads(table.schema.metadata[b"tommer"])
    assert meta["threshold"] == 0.5 and meta["decoding"] == "threshold"
    assert meta["bundle_id"] == read_manifest(tiny_bundle).bundle_id and meta["tommer_version"]
    annotator = Annotator.from_bundle(tiny_bundle, max_tokens=64, window_overlap=12)
    direct = annotator.annotate(TEXTS)
    assert [[(m["start"], m["end"]) for m in r["mentions"]] for r in rows] == [[(m.start, m.end) for m in d] for d in direct]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary file left"


@pytest.mark.parametrize("text_type", [pa.large_string(), pa.string_view(), pa.dictionary(pa.int32(), pa.string())])
def test_string_types(tiny_bundle, tmp_path, text_type):
    src = corpus(tmp_path, text_type=text_type)
    annotator = Annotator.from_bundle(tiny_bundle)
    annotator.annotate_parquet(src, tmp_path / "out.parquet", columns=["id"])
    got = pq.read_table(tmp_path / "out.parquet")
    assert got.column_names == ["id", "mentions", "n_tokens"]
    expected = annotator.annotate_table(pa.table({"text": pa.array(TEXTS)}))
    assert got.column("mentions").to_pylist() == expected.column("mentions").to_pylist()


def test_text_column_rules(tiny_bundle, tmp_path):
    annotator = Annotator.from_bundle(tiny_bundle)
    body = tmp_path / "body.parquet"
    pq.write_table(pa.table({"id": [1, 2], "body": ["Paris is big.", None]}), body)
    annotator.annotate_parquet(body, tmp_path / "a.parquet")  # the only string column
    assert pq.read_table(tmp_path / "a.parquet").num_rows == 2
    two = tmp_path / "two.parquet"
    pq.write_table(pa.table({"a": ["x"], "b": ["y"], "n": [3]}), two)
    with pytest.raises(InputError, match=r"two.parquet: no column 'text' and 2 string columns \(a, b\)"):
        annotator.annotate_parquet(two, tmp_path / "b.parquet")
    with pytest.raises(InputError, match=r"two.parquet: no column 'body'; columns: a, b, n"):
        annotator.annotate_parquet(two, tmp_path / "b.parquet", text_column="body")
    with pytest.raises(InputError, match=r"two.parquet: column 'n' has type int64, expected a string column"):
        annotator.annotate_parquet(two, tmp_path / "b.parquet", text_column="n")
    assert not (tmp_path / "b.parquet").exists()


def test_bad_inputs_write_nothing(tiny_bundle, tmp_path):
    good = corpus(tmp_path / "in" if (tmp_path / "in").mkdir() is None else tmp_path, name="a.parquet")
    (tmp_path / "in" / "b.parquet").write_bytes(b"this is not parquet")
    out = cli(tmp_path / "in", "--model", tiny_bundle, "--output", tmp_path / "out")
    assert out.returncode == 2 and "b.parquet: not a readable Parquet file" in out.stderr
    assert not (tmp_path / "out").exists(), "nothing written, not even the good file"
    assert good.exists()
    missing = cli(tmp_path / "nowhere.parquet", "--model", tiny_bundle)
    assert missing.returncode == 2 and "nowhere.parquet: does not exist" in missing.stderr


def test_existing_output_and_bundle_checks(tiny_bundle, tmp_path):
    src = corpus(tmp_path)
    assert cli(src, "--model", tiny_bundle).returncode == 0
    again = cli(src, "--model", tiny_bundle)
    assert again.returncode == 2 and "already exists: pass --overwrite" in again.stderr
    assert cli(src, "--model", tiny_bundle, "--overwrite").returncode == 0
    nobundle = cli(src, "--model", tmp_path, "--overwrite")
    assert nobundle.returncode == 2 and "is not a tommer bundle" in nobundle.stderr
    on_cpu = pq.read_table(src.with_name("corpus.mentions.parquet")).to_pylist()
    cuda = cli(src, "--model", tiny_bundle, "--overwrite", "--provider", "cuda")
    if "CUDAExecutionProvider" not in __import__("onnxruntime").get_available_providers():
        assert cuda.returncode == 2 and "provider 'cuda'" in cuda.stderr and "not available" in cuda.stderr
    else:  # a GPU machine: the same spans as the CPU, scores within fp32 GEMM rounding
        assert cuda.returncode == 0, cuda.stderr
        on_gpu = pq.read_table(src.with_name("corpus.mentions.parquet")).to_pylist()
        assert [[(m["start"], m["end"]) for m in r["mentions"]] for r in on_gpu] == \
               [[(m["start"], m["end"]) for m in r["mentions"]] for r in on_cpu]
        assert all(abs(a["score"] - b["score"]) < 1e-4 for r, q in zip(on_gpu, on_cpu)
                   for a, b in zip(r["mentions"], q["mentions"]))


def test_tampered_bundle_refused(tiny_bundle, tmp_path):
    import shutil

    copy = shutil.copytree(tiny_bundle, tmp_path / "b")
    with open(copy / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BundleError, match="model.onnx: sha256 does not match"):
        Annotator.from_bundle(copy)


def test_folder_and_glob_inputs(tiny_bundle, tmp_path):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    corpus(tmp_path / "in", name="a.parquet")
    corpus(tmp_path / "in" / "sub", texts=TEXTS[:3], name="b.parquet")
    out = cli(tmp_path / "in", "--model", tiny_bundle, "--output", tmp_path / "out", "--columns", "id")
    assert out.returncode == 0, out.stderr
    assert pq.read_table(tmp_path / "out" / "a.parquet").num_rows == len(TEXTS)
    assert pq.read_table(tmp_path / "out" / "sub" / "b.parquet").num_rows == 3
    out = cli(str(tmp_path / "in" / "**" / "*.parquet"), "--model", tiny_bundle, "--output", tmp_path / "g")
    assert out.returncode == 0, out.stderr
    written = sorted(p.relative_to(tmp_path / "g").as_posix() for p in (tmp_path / "g").rglob("*.parquet"))
    assert written == ["a.parquet", "sub/b.parquet"]
    one_file = cli(str(tmp_path / "in" / "**" / "*.parquet"), "--model", tiny_bundle, "--output", tmp_path / "g2.parquet")
    assert one_file.returncode == 2 and "--output" in one_file.stderr
    assert "names one Parquet file, but there are 2 input" in one_file.stderr
    assert not (tmp_path / "g2.parquet").exists()


def test_keep_candidates(tiny_bundle, tmp_path):
    annotator = Annotator.from_bundle(tiny_bundle, keep_candidates=0.2)
    table = annotator.annotate_table(pa.table({"text": TEXTS}))
    for mentions, candidates in zip(table.column("mentions").to_pylist(), table.column("candidates").to_pylist()):
        assert {(m["start"], m["end"]) for m in mentions} <= {(c["start"], c["end"]) for c in candidates}
        assert all(c["score"] > 0.2 for c in candidates)
    assert sum(len(c) for c in table.column("candidates").to_pylist()) > sum(len(m) for m in table.column("mentions").to_pylist())


def test_read_chunks_from_any_row_equals_slicing(tmp_path):
    """Chunks read from row ``skip`` on are the table's rows from ``skip`` on, whatever the row groups."""
    from tommer.runtime.io.sources import open_source, read_chunks

    table = pa.table({"id": range(500), "text": [f"t{i}" for i in range(500)]})
    for group_rows in (170, 40, 7, 1000):
        path = tmp_path / f"g{group_rows}.parquet"
        pq.write_table(table, path, row_group_size=group_rows)
        for chunk_rows in (40, 33):
            for skip in range(0, 501, chunk_rows):
                chunks = list(read_chunks(open_source(path), ["id", "text"], chunk_rows, skip))
                assert all(c.num_rows == chunk_rows for c in chunks[:-1])
                got = pa.concat_tables(chunks).column("id").to_pylist() if chunks else []
                assert got == list(range(skip, 500)), (group_rows, chunk_rows, skip)


def test_output_inside_the_input_folder_is_never_read_back(tiny_bundle, tmp_path):
    """Hidden/underscore files and the output location are not inputs; a folder of one file works like the file."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    corpus(folder, name="a.parquet")
    corpus(folder, name="b.parquet")
    (folder / "_SUCCESS").write_text("")
    (folder / "_tmp").mkdir()
    corpus(folder / "_tmp", name="c.parquet")
    out = folder / "mentions"
    first = cli(folder, "--model", tiny_bundle, "--output", out)
    assert first.returncode == 0, first.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a.parquet", "b.parquet"]
    again = cli(folder, "--model", tiny_bundle, "--output", out, "--resume")  # parts and outputs are not inputs
    assert again.returncode == 0 and "(2 already done)" in again.stdout, again.stderr + again.stdout
    single = tmp_path / "single"
    single.mkdir()
    corpus(single, name="only.parquet")
    one = cli(single, "--model", tiny_bundle)  # no --output: like the one file
    assert one.returncode == 0, one.stderr
    assert (single / "only.mentions.parquet").is_file()
