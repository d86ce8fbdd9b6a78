"""Messages that point the right way, and no silent choice: missing inputs, formats tommer does not read (with
a conversion that works), a bundle file for --model, BIO gold row counts, --sample above the corpus,
--chunk-rows 0, and a redirected log that gets a first line at once."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
from annotate_helpers import TEXTS, cli, corpus


def _run_suggested(message: str, cwd) -> None:
    """Run the ``python -c "..."`` one-liner a message suggests, in ``cwd``."""
    found = re.search(r'python -c "(.*?)"((?: [^\s,]+)*)', message)
    assert found, message
    args = shlex.split(found.group(2)) if found.group(2) else []
    done = subprocess.run([sys.executable, "-c", found.group(1), *args], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_missing_input_is_said_not_to_exist_whatever_its_name(tiny_bundle, tmp_path):
    for name in ("x.jsonl", "x.parquet", "folder/"):
        out = cli(tmp_path / name, "--model", tiny_bundle, "-q")
        assert out.returncode == 2 and f"{tmp_path / name}: does not exist" in out.stderr, out.stderr
        assert "no Parquet file found" not in out.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    out = cli(empty, "--model", tiny_bundle, "-q")
    assert out.returncode == 2 and "no Parquet (.parquet) or JSON Lines" in out.stderr
    assert "in this folder" in out.stderr
    out = cli(str(tmp_path / "nothing*.jsonl"), "--model", tiny_bundle, "-q")
    assert out.returncode == 2 and "no file matches this pattern" in out.stderr


def test_csv_and_text_inputs_name_the_formats_read_and_a_conversion_that_works(tiny_bundle, tmp_path):
    (tmp_path / "docs.csv").write_text("id,text\n0,John lives in Paris\n1,Marie Curie\n")
    (tmp_path / "notes.txt").write_text("John lives in Paris\nMarie Curie won\n")
    for name, rows in (("docs.csv", 2), ("notes.txt", 2)):
        out = cli(tmp_path / name, "--model", tiny_bundle, "-q")
        assert out.returncode == 2, out.stdout
        assert "Parquet magic bytes" not in out.stderr
        assert "it reads Parquet (.parquet) or JSON Lines (.jsonl, .ndjson, .json" in out.stderr, out.stderr
        _run_suggested(out.stderr, tmp_path)
        converted = tmp_path / name.replace(name.rsplit(".", 1)[1], "parquet")
        assert pq.read_table(converted).num_rows == rows
        assert cli(converted, "--model", tiny_bundle, "-q").returncode == 0
    unnamed = tmp_path / "part-0"  # Parquet without the suffix is still read
    pq.write_table(pa.table({"text": TEXTS}), unnamed)
    out = cli(unnamed, "--model", tiny_bundle, "--output", tmp_path / "u.parquet", "-q")
    assert out.returncode == 0, out.stderr


def test_model_may_name_a_file_of_the_bundle(tiny_bundle, tmp_path):
    src = corpus(tmp_path)
    out = cli(src, "--model", tiny_bundle / "model.onnx", "-q")
    assert out.returncode == 0, out.stderr
    stray = tmp_path / "model.onnx"
    stray.write_bytes(b"")
    out = cli(src, "--model", stray, "--overwrite", "-q")
    assert out.returncode == 2 and f"--model {stray} is a file: --model takes the bundle folder" in out.stderr
    assert "does not exist" not in out.stderr


def _eval(*args):
    return subprocess.run([sys.executable, "-m", "tommer.runtime.cli.quality", "eval", *map(str, args)],
                          capture_output=True, text=True)


def test_bio_gold_row_count_advice_is_the_same_with_and_without_id_column(tiny_bundle, tmp_path):
    """BIO sentences are matched by position only: a row-count mismatch never says 'pass --id-column', and
    the advice (annotate the BIO file's own sentences) works as written."""
    bio = tmp_path / "gold.conll"
    bio.write_text("John B-PER\nlives O\nin O\nParis B-LOC\n\nMarie B-PER\nCurie I-PER\nwon O\n\nThe O\nEU B-ORG\n")
    other = corpus(tmp_path, texts=["something else"] * 5, name="other.parquet")
    assert cli(other, "--model", tiny_bundle, "-q").returncode == 0
    pred = tmp_path / "other.mentions.parquet"
    plain, with_id = _eval(pred, "--gold", bio), _eval(pred, "--gold", bio, "--id-column", "id")
    assert plain.returncode == 2 and with_id.returncode == 2
    assert "pass --id-column" not in plain.stderr and "drop --id-column" in with_id.stderr
    for out in (plain, with_id):
        assert f"the predictions must be one row per sentence of {bio}, in order" in out.stderr, out.stderr
    _run_suggested(plain.stderr, tmp_path)
    assert pq.read_table(tmp_path / "sentences.parquet").column("text").to_pylist()[0] == "John lives in Paris"
    assert cli(tmp_path / "sentences.parquet", "--model", tiny_bundle, "-q").returncode == 0
    scored = _eval(tmp_path / "sentences.mentions.parquet", "--gold", bio)
    assert scored.returncode == 0, scored.stderr


def test_sample_or_limit_above_the_corpus_says_every_row_was_annotated(tiny_bundle, tmp_path):
    src = corpus(tmp_path)
    big = cli(src, "--model", tiny_bundle, "--sample", "1000", "-q")
    assert big.returncode == 0, big.stderr
    assert f"note: --sample 1,000 asked for more rows than the inputs hold ({len(TEXTS)}): every row was annotated" \
        in big.stdout
    small = cli(src, "--model", tiny_bundle, "--sample", "3", "--overwrite", "-q")
    assert small.returncode == 0 and "note:" not in small.stdout
    limit = cli(src, "--model", tiny_bundle, "--limit", "50", "--overwrite", "-q")
    assert "note: --limit 50 asked for more rows than the inputs hold" in limit.stdout


def test_chunk_rows_zero_is_an_error(tiny_bundle, tmp_path):
    out = cli(corpus(tmp_path), "--model", tiny_bundle, "--chunk-rows", "0", "-q")
    assert out.returncode == 2 and "--chunk-rows must be >= 1, found 0" in out.stderr
    assert not (tmp_path / "corpus.mentions.parquet").exists()


def test_a_redirected_log_gets_a_progress_line_at_once(tiny_bundle, tmp_path):
    """stderr to a file: a line when the run starts and one when the rows to do are known, long before the
    first --progress-every (30 s) period ends."""
    log = tmp_path / "log.txt"
    with open(log, "w") as fh:
        done = subprocess.run([sys.executable, "-m", "tommer.runtime.cli.annotate", str(corpus(tmp_path)),
                               "--model", str(tiny_bundle)], stderr=fh, stdout=subprocess.PIPE, text=True)
    assert done.returncode == 0
    lines = log.read_text().splitlines()
    assert lines[0] == "progress: loading the bundle and checking the inputs", lines
    assert any(line.startswith(f"progress: 0/{len(TEXTS)} rows (0.0%), 0 tokens") for line in lines), lines
