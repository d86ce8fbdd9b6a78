"""tommer-eval and tommer-show on hand-made outputs: figures by hand, BIO parsing, escaping."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tommer.runtime.annotator import MENTION_TYPE
from tommer.runtime.bio import read_bio, sentence_spans
from tommer.runtime.errors import InputError
from tommer.runtime.evaluate import agreement, score, sweep
from tommer.runtime.show import render_page


def spans_col(docs):
    return pa.array([[{"start": s, "end": e, "text": "", "score": p} for s, e, p in doc] for doc in docs],
                    pa.list_(MENTION_TYPE))


def write(path, texts, docs, extra=None, column="mentions"):
    cols = {"id": list(range(len(texts))), "text": texts, column: spans_col(docs), **(extra or {})}
    pq.write_table(pa.table(cols), path)
    return path


def test_exact_and_partial_by_hand():
    preds = [[(0, 4), (10, 15), (20, 25)], [(3, 6)]]
    golds = [[(0, 4), (11, 15)], [], ]
    r = score(preds, golds)
    # exact: 1 TP of 4 predicted, 2 gold
    assert (r["precision"], r["recall"]) == (0.25, 0.5)
    assert r["f1"] == pytest.approx(2 * 0.25 * 0.5 / 0.75)
    # partial: (0,4) and (10,15) touch gold -> 2 of 4 predicted; both gold spans touched
    assert r["micro"]["partial"]["precision"] == 0.5 and r["micro"]["partial"]["recall"] == 1.0
    # macro exact: doc 0 P=1/3 R=1/2, doc 1 P=0 (a wrong prediction) R=1 (nothing to find)
    assert r["macro"]["exact"]["precision"] == pytest.approx((1 / 3 + 0) / 2)
    assert r["macro"]["exact"]["recall"] == pytest.approx((0.5 + 1) / 2)


def test_agreement_by_hand():
    a = [[(0, 4)], [(1, 2), (3, 4)], []]
    b = [[(0, 4)], [(1, 2)], [(5, 6)]]
    r = agreement(a, b, ["x", "y", "z"])
    assert r["exact_match_rate"] == pytest.approx(1 / 3)
    assert r["dice"] == pytest.approx(2 * 2 / (3 + 3))
    assert [row["row"] for row in r["most_different"]] == ["z", "y"]
    assert r["most_different"][1]["only_first"] == [(3, 4)]


def test_sweep_by_hand():
    cands = [[(0, 4, 0.9), (5, 8, 0.4)]]
    rows = sweep(cands, [[(5, 8)]], [0.3, 0.5])
    assert rows[0]["recall"] == 1.0 and rows[0]["precision"] == 0.5
    assert rows[1]["recall"] == 0.0 and rows[1]["precision"] == 0.0


def test_bio_edge_cases(tmp_path):
    path = tmp_path / "g.conll"
    path.write_text("-DOCSTART- -X- O O\n\nJohn B-PER\nSmith I-PER\nvisited O\nNew I-LOC\nYork I-LOC\n\n\n"
                    "Paris B-LOC\nBerlin B-LOC\nand O\nEU I-ORG\n   \nlast\tB-MISC\n")
    texts, golds = read_bio(path)
    assert texts == ["John Smith visited New York", "Paris Berlin and EU", "last"]
    assert [[t[s:e] for s, e in g] for t, g in zip(texts, golds)] == [["John Smith", "New York"],
                                                                       ["Paris", "Berlin", "EU"], ["last"]]
    text, spans = sentence_spans(["a", "b", "c"], ["B-X", "I-Y", "I-Y"], "here")
    assert [text[s:e] for s, e in spans] == ["a", "b c"], "a type change opens a new mention"
    (tmp_path / "bad.conll").write_text("word X-PER\n")
    with pytest.raises(InputError, match="bad.conll:1: tag 'X-PER'"):
        read_bio(tmp_path / "bad.conll")


def cli(tool, *args):
    code = f"from tommer.runtime.quality_cli import {tool}_main; {tool}_main()"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True)


def test_eval_cli_gold_json_and_row_checks(tmp_path):
    texts = ["John lives in Paris", "Marie Curie"]
    pred = write(tmp_path / "p.parquet", texts, [[(0, 4, 0.9), (14, 19, 0.8)], [(0, 5, 0.7)]])
    gold = write(tmp_path / "g.parquet", texts, [[(0, 4, 1.0), (14, 19, 1.0)], [(0, 11, 1.0)]], column="gold")
    out = cli("eval", pred, "--gold", gold, "--gold-column", "gold", "--json", tmp_path / "r.json")
    assert out.returncode == 0, out.stderr
    r = json.loads((tmp_path / "r.json").read_text())
    assert (r["precision"], r["recall"]) == (2 / 3, 2 / 3)
    assert r["micro"]["partial"]["precision"] == 1.0 and "micro exact" in out.stdout
    other = write(tmp_path / "o.parquet", ["John lives in Rome", "Marie Curie"], [[], []], column="gold")
    bad = cli("eval", pred, "--gold", other, "--gold-column", "gold")
    assert bad.returncode == 2 and "row 0: column 'text' differs" in bad.stderr
    short = write(tmp_path / "s.parquet", texts[:1], [[]], column="gold")
    assert "cannot be matched by position" in cli("eval", pred, "--gold", short, "--gold-column", "gold").stderr


def test_eval_cli_id_matching_bio_agreement_and_sweep(tmp_path):
    texts = ["John Smith visited New York", "Paris Berlin and EU"]
    pred = write(tmp_path / "p.parquet", texts, [[(0, 10, 0.9)], [(0, 5, 0.8), (6, 12, 0.6)]],
                 extra={"candidates": spans_col([[(0, 10, 0.9), (19, 27, 0.3)], [(0, 5, 0.8), (6, 12, 0.6)]])})
    bio = tmp_path / "g.conll"
    bio.write_text("John B-PER\nSmith I-PER\nvisited O\nNew B-LOC\nYork I-LOC\n\nParis B-LOC\nBerlin B-LOC\nand O\nEU B-ORG\n")
    out = cli("eval", pred, "--gold", bio, "--sweep", "--json", tmp_path / "r.json", "--plot", tmp_path / "pr.png")
    assert out.returncode == 0, out.stderr
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["precision"] == 1.0 and r["recall"] == 3 / 5
    low = next(row for row in r["sweep"] if row["threshold"] == 0.25)
    assert low["recall"] == 4 / 5, "the 0.3 candidate (New York) counts below 0.3"
    assert (tmp_path / "pr.png").stat().st_size > 1000
    shuffled = pa.table({"id": [1, 0], "text": texts[::-1], "mentions": spans_col([[(0, 5, 0.8)], [(0, 10, 0.9)]])})
    pq.write_table(shuffled, tmp_path / "q.parquet")
    agree = cli("eval", pred, "--against", tmp_path / "q.parquet", "--id-column", "id", "--json", tmp_path / "a.json")
    assert agree.returncode == 0, agree.stderr
    a = json.loads((tmp_path / "a.json").read_text())
    assert a["exact_match_rate"] == 0.5 and a["dice"] == pytest.approx(2 * 2 / 5)
    assert "p.parquet:1" in agree.stdout
    nocand = write(tmp_path / "n.parquet", texts, [[], []])
    assert "needs a 'candidates' column" in cli("eval", nocand, "--gold", bio, "--sweep").stderr


HOSTILE = '<script>alert("x")</script> & <b>Paris</b>'


def test_show_escapes_and_marks(tmp_path):
    page = render_page("t", [(0, HOSTILE, [{"start": 33, "end": 38, "text": "Paris", "score": 0.9}])])
    assert "<script>" not in page and "&lt;script&gt;" in page and "<b>" not in page
    assert '<mark class="d1" data-depth="1" title="Paris (0.90)">Paris</mark>' in page
    nested = render_page("t", [(0, "New York City", [{"start": 0, "end": 13, "text": "New York City", "score": 0.9},
                                                     {"start": 0, "end": 8, "text": "New York", "score": 0.8}])])
    assert 'data-depth="2"' in nested and 'data-depth="1"' in nested
    assert "http" not in page.split("<body>")[0], "no network resources"


def test_show_cli_selects_rows_and_folds(tmp_path):
    texts = ["Paris is big.", "No mention here.", "London " * 400]
    pred = write(tmp_path / "p.parquet", texts, [[(0, 5, 0.9)], [], [(0, 6, 0.7)]])
    out = cli("show", pred, "--output", tmp_path / "s.html", "--min-mentions", "1")
    assert out.returncode == 0, out.stderr
    page = (tmp_path / "s.html").read_text()
    assert page.count('class="doc"') == 2 and "No mention here" not in page
    assert "characters, unfold)</summary>" in page, "the long document is folded"


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is installed by .ci/run")
def test_show_renders_in_headless_chromium(tiny_bundle, tmp_path):
    """The sample corpus annotated, shown, rendered by Chromium: marks are in the DOM and a screenshot is made."""
    from tommer.runtime.annotator import Annotator

    from conftest import REPO

    Annotator.from_bundle(tiny_bundle).annotate_parquet(REPO / "examples" / "sample.parquet", tmp_path / "out.parquet")
    rows = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert cli("show", tmp_path / "out.parquet", "--output", tmp_path / "s.html").returncode == 0
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(["chromium", *flags, "--dump-dom", f"file://{tmp_path / 's.html'}"],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    expected = sum(1 for r in rows if r["mentions"])
    assert dom.stdout.count('class="doc"') == len(rows)
    assert dom.stdout.count("<mark") >= expected > 0
    shot = subprocess.run(["chromium", *flags, "--window-size=1200,1600", f"--screenshot={tmp_path / 'shot.png'}",
                           f"file://{tmp_path / 's.html'}"], capture_output=True, text=True, timeout=120)
    assert shot.returncode == 0 and (tmp_path / "shot.png").stat().st_size > 10_000
    if os.environ.get("TOMMER_SCREENSHOT_DIR"):  # to look at it
        shutil.copy(tmp_path / "shot.png", os.environ["TOMMER_SCREENSHOT_DIR"])
