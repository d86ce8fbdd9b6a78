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

from tommer.runtime.annotator import Annotator
from tommer.runtime.bundle import read_manifest
from tommer.runtime.core.chunk import Chunk
from tommer.runtime.core.decoding import decode
from tommer.runtime.core.mentions import char_mentions
from tommer.runtime.core.tokenization import BundleTokenizer, pad_batch
from tommer.runtime.errors import BundleError, InputError
from tommer.runtime.execution.session import create_session, run_band

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


def kill_corpus(folder, sizes=(700, 500, 900), seed=0):
    """A folder of several files of random short texts (fast to annotate, many chunks)."""
    rng = np.random.default_rng(seed)
    words = ["Paris", "London", "the", "river", "Obama", "visited", "Marie", "Curie", "and", "in", "1903", "Nobel"]
    folder.mkdir()
    for k, n in enumerate(sizes):
        texts = [" ".join(rng.choice(words, size=rng.integers(3, 40))) for _ in range(n)]
        corpus(folder, texts=texts, name=f"f{k}.parquet", row_group_size=170)
    return folder


@pytest.mark.slow
def test_repeated_kill_9_then_resume_is_exactly_once(tiny_bundle, tmp_path):
    """kill -9 at random moments, again and again, over a folder of files; --resume equals one clean run."""
    import random

    src = kill_corpus(tmp_path / "in")
    args = ["--model", tiny_bundle, "--chunk-rows", "40", "--columns", "id", "--host-threads", "2"]
    assert cli(src, *args, "--output", tmp_path / "whole").returncode == 0
    target = tmp_path / "resumed"
    command = [sys.executable, "-m", "tommer.runtime.cli.annotate", str(src), *map(str, args), "--output", str(target), "--resume"]
    chunks = {f"f{k}.parquet": -(-n // 40) for k, n in enumerate((700, 500, 900))}

    def progress() -> int:  # chunks finished over all files: whole outputs and parts
        whole = sum(chunks[p.name] for p in target.glob("*.parquet")) if target.exists() else 0
        return whole + (len(list(target.glob(".*.parts/part-*.parquet"))) if target.exists() else 0)

    rng, killed, seen = random.Random(13), 0, []
    targets = [0] + sorted(rng.sample(range(2, sum(chunks.values()) - 1), 6))  # 0: killed while starting
    for goal in targets:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while proc.poll() is None and progress() < goal and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.15) if goal else 0.5)  # anywhere: reading, inferring, writing, joining
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            killed += 1
        proc.wait()
        seen.append(progress())
    assert killed >= 5, f"only {killed} of {len(targets)} runs were killed mid-way (progress {seen})"
    assert len(set(seen)) >= 4, f"the kills did not land at different points: {seen}"
    leftover = list(target.glob(".*.parts")) if target.exists() else []
    if leftover:  # an interrupted run is refused unless resumed, and resumed only with the same options
        again = cli(src, *args, "--output", target)
        assert again.returncode == 2 and "interrupted run left finished parts: pass --resume" in again.stderr
        other = cli(src, *args, "--output", target, "--resume", "--threshold", "0.7")
        assert other.returncode == 2 and "the interrupted run used --threshold 0.5 (now 0.7)" in other.stderr
    resumed = cli(src, *args, "--output", target, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    for name in ("f0.parquet", "f1.parquet", "f2.parquet"):
        got, expected = pq.read_table(target / name), pq.read_table(tmp_path / "whole" / name)
        assert got.num_rows == expected.num_rows
        assert got.to_pylist() == expected.to_pylist(), f"{name} differs from the uninterrupted run"
        assert got.schema.metadata == expected.schema.metadata
    assert not [p for p in target.iterdir() if p.name.startswith(".")], "no parts or temporary files left"
    skipped = cli(src, *args, "--output", target, "--resume")
    assert skipped.returncode == 0 and "3 already done" in skipped.stdout


@pytest.mark.slow
def test_resume_after_a_kill_between_output_rename_and_cleanup(tiny_bundle, tmp_path):
    """The output is renamed into place before its parts folder is removed: a kill in between is harmless."""
    src = corpus(tmp_path)
    out = tmp_path / "out.parquet"
    assert cli(src, "--model", tiny_bundle, "--output", out, "--chunk-rows", "3").returncode == 0
    expected = pq.read_table(out)
    parts = tmp_path / ".out.parquet.parts"
    parts.mkdir()
    pq.write_table(expected.slice(0, 3), parts / "part-000000.parquet")  # what the kill left
    resumed = cli(src, "--model", tiny_bundle, "--output", out, "--chunk-rows", "3", "--resume")
    assert resumed.returncode == 0 and "1 already done" in resumed.stdout, resumed.stderr
    assert not parts.exists() and pq.read_table(out).equals(expected)


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


def test_resume_redoes_a_part_that_is_not_whole(tmp_path):
    """A part that cannot be read, or has more rows than a chunk, is redone with every later part."""
    from tommer.runtime.engines.local import PartStore

    table = pa.table({"id": range(8)})
    store = PartStore(tmp_path / "out.parquet", {"chunk_rows": 3})
    store.folder.mkdir()
    pq.write_table(table.slice(0, 3), store.folder / "part-000000.parquet")
    (store.folder / "part-000001.parquet").write_bytes(b"not parquet")
    pq.write_table(table.slice(6, 2), store.folder / "part-000002.parquet")
    assert store.finished_parts() == 1
    pq.write_table(table.slice(3, 4), store.folder / "part-000001.parquet")
    assert store.finished_parts() == 1, "a part with more rows than a chunk is not whole"
    pq.write_table(table.slice(3, 3), store.folder / "part-000001.parquet")
    assert store.finished_parts() == 3


class _Stop(Exception):
    pass


def interrupted_run(annotator, src, out, chunk_rows=3):
    """Annotate ``src`` and stop after the first chunk, leaving parts and progress behind."""
    def stop(chunk):
        raise _Stop

    with pytest.raises(_Stop):
        annotator.annotate_parquet(src, out, chunk_rows=chunk_rows, on_chunk=stop)
    assert list(out.parent.glob(f".{out.name}.parts/part-*.parquet"))


def test_resume_refuses_a_changed_input_naming_it(tiny_bundle, tmp_path):
    """Size or footer hash changed since the parts (or the output) were written: refused; a touch alone is not
    a change (only the modification time moved): the resume goes on."""
    annotator = Annotator.from_bundle(tiny_bundle)
    src, out = corpus(tmp_path), tmp_path / "out.parquet"
    interrupted_run(annotator, src, out)
    corpus(tmp_path, texts=[t.upper() if t else t for t in TEXTS])  # same rows, other texts
    with pytest.raises(InputError, match=r"corpus.parquet: the input changed since the interrupted run started "
                                         r"\(.*footer_sha256.*\).*--overwrite"):
        annotator.annotate_parquet(src, out, chunk_rows=3, resume=True)
    assert not out.exists(), "nothing written when refused"
    with pytest.raises(InputError, match=r"the interrupted run used --chunk-rows 3 \(now 4\): pass the same values"):
        annotator.annotate_parquet(src, out, chunk_rows=4, resume=True)
    annotator.annotate_parquet(src, out, chunk_rows=3, overwrite=True)
    before = pq.read_table(out)
    os.utime(src, ns=(time.time_ns(), time.time_ns() + 10**9))  # touched: only the time changed
    summary = annotator.annotate_parquet(src, out, chunk_rows=3, resume=True)  # the same file: kept
    assert (summary.files, summary.skipped_files) == (0, 1)
    assert pq.read_table(out).equals(before)
    interrupted_run(annotator, src, tmp_path / "again.parquet")
    os.utime(src, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))  # touched between interrupt and resume
    annotator.annotate_parquet(src, tmp_path / "again.parquet", chunk_rows=3, resume=True)
    assert pq.read_table(tmp_path / "again.parquet").equals(before)


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


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_cleanly_keeps_parts_and_says_how_to_resume(tiny_bundle, tmp_path, signum):
    """Ctrl-C (SIGINT) and SIGTERM: threads stopped in order, parts kept, exit 130/143, resume finishes."""
    rng = np.random.default_rng(1)
    words = ["Paris", "London", "the", "river", "Obama", "visited", "in", "1903"]
    src = corpus(tmp_path, texts=[" ".join(rng.choice(words, size=150)) for _ in range(40)], row_group_size=16)
    out = tmp_path / "out.parquet"
    args = [src, "--model", tiny_bundle, "--output", out, "--chunk-rows", "2", "-q"]
    proc = subprocess.Popen([sys.executable, "-m", "tommer.runtime.cli.annotate", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    parts = tmp_path / ".out.parquet.parts"
    deadline = time.time() + 60
    while time.time() < deadline and not list(parts.glob("part-*.parquet")):
        time.sleep(0.02)
    proc.send_signal(signum)
    sent = time.perf_counter()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err
    assert time.perf_counter() - sent < 10, "stopping waited for more than the work in hand"
    assert "terminate called" not in err and "Traceback" not in err, err
    assert f"interrupted by {signal.Signals(signum).name}: stopped cleanly" in err
    kept = len(list(parts.glob("part-*.parquet")))
    assert 1 <= kept < 20 and f"{kept} finished part(s) of 2 rows kept" in err, err
    assert "--resume" in err.splitlines()[-1] and not out.exists()
    resumed = cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"{40 - 2 * kept} rows (+{2 * kept} rows finished before the resume)" in resumed.stdout
    assert pq.read_table(out).column("id").to_pylist() == list(range(40))


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


def test_help_lists_every_option_with_default():
    out = cli("--help")
    assert out.returncode == 0
    for option in ("--model", "--output", "--text-column", "--columns", "--decoding", "--threshold",
                   "--keep-candidates", "--max-tokens", "--window-overlap", "--batch-tokens", "--chunk-rows",
                   "--provider", "--threads", "--host-threads", "--resume", "--overwrite", "--quiet",
                   "--progress-every"):
        assert option in out.stdout, option
    assert "default: 0.5" in out.stdout and "default: 512 on cpu" in out.stdout and "default: 128" in out.stdout


def test_progress_bar_on_a_terminal(tiny_bundle, tmp_path):
    """Under a pseudo-terminal the bar shows rows of the total and tokens/s; the summary follows."""
    import pty

    src = corpus(tmp_path)
    pid, fd = pty.fork()
    if pid == 0:  # child: run the CLI on the terminal
        os.execv(sys.executable, [sys.executable, "-m", "tommer.runtime.cli.annotate", str(src), "--model", str(tiny_bundle),
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


def test_plain_progress_lines_when_not_on_a_terminal(tiny_bundle, tmp_path):
    """Logs and schedulers get periodic plain lines: rows of the total, tokens, tokens/s, ETA."""
    import re

    out = cli(corpus(tmp_path), "--model", tiny_bundle, "--chunk-rows", "2", "--progress-every", "0")
    assert out.returncode == 0, out.stderr
    lines = [m.groups() for m in re.finditer(r"progress: (\d+)/(\d+) rows \(.*?\), ([\d,]+) tokens, [\d,]+ tokens/s, "
                                             r"elapsed \d:\d\d:\d\d, ETA (\d:\d\d:\d\d|\?)", out.stderr)]
    assert len(lines) >= 4, out.stderr
    rows = [int(r) for r, _, _, _ in lines]
    assert rows == sorted(rows) and rows[-1] == len(TEXTS) and {int(t) for _, t, _, _ in lines} == {len(TEXTS)}
    quiet = cli(corpus(tmp_path), "--model", tiny_bundle, "--overwrite", "-q", "--progress-every", "0")
    assert quiet.returncode == 0 and "progress:" not in quiet.stderr


def test_engine_ray_without_ray_installed(tiny_bundle, tmp_path):
    code = ("import sys; sys.modules['ray'] = None; from tommer.runtime.cli.annotate import main; "
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
