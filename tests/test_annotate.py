"""The annotator: parity with the graph, Parquet in and out, bad input, resume after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tommer.runtime.annotator import Annotator, Chunk
from tommer.runtime.bundle import read_manifest
from tommer.runtime.decoding import decode
from tommer.runtime.errors import BundleError, InputError
from tommer.runtime.mentions import char_mentions
from tommer.runtime.session import create_session, run_band
from tommer.runtime.tokenization import BundleTokenizer, pad_batch

TEXTS = ["John lives in New York City.", None, "", "   ", "Marie Curie won the Nobel Prize in 1903.",
         "Emoji 🙂 and tabs\tand\nnewlines near Barack Obama.", "北京是中华人民共和国的首都。",
         "The Amazon river flows through Brazil, Peru and Colombia. " * 4]  # fits one window


def corpus(tmp_path, texts=TEXTS, name="corpus.parquet", text_type=pa.string(), row_group_size=3):
    table = pa.table({"id": pa.array(range(len(texts)), pa.int64()), "text": pa.array(texts, text_type)})
    path = tmp_path / name
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "tommer.runtime.cli", *map(str, args)],
                          capture_output=True, text=True, **kw)


def check_mentions(texts, per_doc):
    for text, mentions in zip(texts, per_doc):
        keys = [(m["start"], m["end"]) if isinstance(m, dict) else (m.start, m.end) for m in mentions]
        assert keys == sorted(keys) and len(set(keys)) == len(keys)
        for m in mentions:
            m = m if isinstance(m, dict) else m.__dict__
            assert text[m["start"]:m["end"]] == m["text"] and m["text"] == m["text"].strip() != ""
            assert 0.5 < m["score"] <= 1.0


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
    assert missing.returncode == 2 and "no Parquet file found" in missing.stderr


def test_existing_output_and_bundle_checks(tiny_bundle, tmp_path):
    src = corpus(tmp_path)
    assert cli(src, "--model", tiny_bundle).returncode == 0
    again = cli(src, "--model", tiny_bundle)
    assert again.returncode == 2 and "already exists: pass --overwrite" in again.stderr
    assert cli(src, "--model", tiny_bundle, "--overwrite").returncode == 0
    nobundle = cli(src, "--model", tmp_path, "--overwrite")
    assert nobundle.returncode == 2 and "is not a tommer bundle" in nobundle.stderr
    cuda = cli(src, "--model", tiny_bundle, "--overwrite", "--provider", "cuda")
    if "CUDAExecutionProvider" not in __import__("onnxruntime").get_available_providers():
        assert cuda.returncode == 2 and "provider 'cuda'" in cuda.stderr and "not available" in cuda.stderr


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
    assert sorted(p.relative_to(tmp_path / "g").as_posix() for p in (tmp_path / "g").rglob("*.parquet")) == ["a.parquet", "sub/b.parquet"]


def test_keep_candidates(tiny_bundle, tmp_path):
    annotator = Annotator.from_bundle(tiny_bundle, keep_candidates=0.2)
    table = annotator.annotate_table(pa.table({"text": TEXTS}))
    for mentions, candidates in zip(table.column("mentions").to_pylist(), table.column("candidates").to_pylist()):
        assert {(m["start"], m["end"]) for m in mentions} <= {(c["start"], c["end"]) for c in candidates}
        assert all(c["score"] > 0.2 for c in candidates)
    assert sum(len(c) for c in table.column("candidates").to_pylist()) > sum(len(m) for m in table.column("mentions").to_pylist())


def test_resume_after_kill_9_equals_uninterrupted_run(tiny_bundle, tmp_path):
    rng = np.random.default_rng(0)
    words = ["Paris", "London", "the", "river", "Obama", "visited", "Marie", "Curie", "and", "in", "1903", "Nobel"]
    texts = [" ".join(rng.choice(words, size=rng.integers(3, 60))) for _ in range(3000)]
    src = corpus(tmp_path, texts=texts, row_group_size=500)
    args = ["--model", tiny_bundle, "--chunk-rows", "100", "--columns", "id"]
    assert cli(src, *args, "--output", tmp_path / "whole.parquet").returncode == 0
    target = tmp_path / "resumed.parquet"
    parts = tmp_path / ".resumed.parquet.parts"
    proc = subprocess.Popen([sys.executable, "-m", "tommer.runtime.cli", str(src), *map(str, args), "--output", str(target)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(parts.glob("part-*.parquet"))) < 3:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(parts.glob("part-*.parquet")))
    assert not target.exists() and 3 <= done < 30, f"killed after {done} parts"
    again = cli(src, *args, "--output", target)
    assert again.returncode == 2 and "interrupted run left finished parts: pass --resume" in again.stderr
    other = cli(src, *args, "--output", target, "--resume", "--threshold", "0.7")
    assert other.returncode == 2 and "cannot resume, the options differ" in other.stderr
    resumed = cli(src, *args, "--output", target, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"{3000 - done * 100} rows" in resumed.stdout, "finished parts were not redone"
    assert pq.read_table(target).equals(pq.read_table(tmp_path / "whole.parquet"))
    assert not parts.exists()
    skipped = cli(src, *args, "--output", target, "--resume")
    assert skipped.returncode == 0 and "1 already done" in skipped.stdout


def test_help_lists_every_option_with_default():
    out = cli("--help")
    assert out.returncode == 0
    for option in ("--model", "--output", "--text-column", "--columns", "--decoding", "--threshold",
                   "--keep-candidates", "--max-tokens", "--window-overlap", "--batch-tokens", "--chunk-rows",
                   "--provider", "--threads", "--host-threads", "--resume", "--overwrite", "--quiet"):
        assert option in out.stdout, option
    assert "default: 0.5" in out.stdout and "default: 512 on cpu" in out.stdout and "default: 128" in out.stdout


def test_progress_bar_on_a_terminal(tiny_bundle, tmp_path):
    """Under a pseudo-terminal the bar shows rows of the total and tokens/s; the summary follows."""
    import pty

    src = corpus(tmp_path)
    pid, fd = pty.fork()
    if pid == 0:  # child: run the CLI on the terminal
        os.execv(sys.executable, [sys.executable, "-m", "tommer.runtime.cli", str(src), "--model", str(tiny_bundle),
                                  "--chunk-rows", "2"])
    output = b""
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        output += data
    _, status = os.waitpid(pid, 0)
    import re

    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output.decode(errors="replace"))  # drop colours
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert f"/{len(TEXTS)} rows" in text and "tokens/s" in text and "annotated 1 file(s)" in text


def test_engine_ray_without_ray_installed(tiny_bundle, tmp_path):
    code = ("import sys; sys.modules['ray'] = None; from tommer.runtime.cli import main; "
            f"sys.argv = ['tommer-annotate', {str(corpus(tmp_path))!r}, '--model', {str(tiny_bundle)!r}, "
            f"'--engine', 'ray', '--output', {str(tmp_path / 'o')!r}]; main()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 2 and "pip install 'tommer[ray]'" in out.stderr
    assert not (tmp_path / "o").exists()


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
