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

from tommer.runtime.core.mentions import MENTION_TYPE
from tommer.runtime.errors import InputError
from tommer.runtime.quality.bio import read_bio, sentence_spans
from tommer.runtime.quality.evaluate import agreement, score, sweep
from tommer.runtime.quality.show import render_page


def spans_col(docs):
    return pa.array([[{"start": s, "end": e, "text": "", "score": p} for s, e, p in doc] for doc in docs],
                    pa.list_(MENTION_TYPE))


def write(path, texts, docs, extra=None, column="mentions", floor=None):
    """A hand-made output; ``floor``: the --keep-candidates floor recorded as tommer-annotate does."""
    cols = {"id": list(range(len(texts))), "text": texts, column: spans_col(docs), **(extra or {})}
    table = pa.table(cols)
    if floor is not None:
        table = table.replace_schema_metadata({b"tommer": json.dumps({"keep_candidates": floor}).encode()})
    pq.write_table(table, path)
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
    code = f"from tommer.runtime.cli.quality import {tool}_main; {tool}_main()"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True)


def module(*args):
    return subprocess.run([sys.executable, "-m", "tommer.runtime.cli.quality", *map(str, args)],
                          capture_output=True, text=True)


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
                 extra={"candidates": spans_col([[(0, 10, 0.9), (19, 27, 0.3)], [(0, 5, 0.8), (6, 12, 0.6)]])}, floor=0.2)
    bio = tmp_path / "g.conll"
    bio.write_text("John B-PER\nSmith I-PER\nvisited O\nNew B-LOC\nYork I-LOC\n\nParis B-LOC\nBerlin B-LOC\nand O\nEU B-ORG\n")
    out = cli("eval", pred, "--gold", bio, "--sweep", "--json", tmp_path / "r.json", "--plot", tmp_path / "pr.png")
    assert out.returncode == 0, out.stderr
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["precision"] == 1.0 and r["recall"] == 3 / 5
    assert r["sweep_floor"] == 0.2 and r["sweep"][0]["threshold"] == 0.2, "thresholds start at the recorded floor"
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
    out = cli("eval", nocand, "--gold", bio, "--sweep")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "no 'candidates' column (it was written without --keep-candidates)" in out.stderr
    assert "re-run tommer-annotate with --keep-candidates FLOOR" in out.stderr


def test_sweep_without_a_recorded_floor_starts_at_the_lowest_candidate(tmp_path):
    """Candidates written by the Python API or Ray carry no floor: the sweep never reads figures from a floor of 0."""
    texts = ["John Smith visited New York", "Paris Berlin and EU"]
    cands = spans_col([[(0, 10, 0.9), (19, 27, 0.33)], [(0, 5, 0.8)]])
    pred = write(tmp_path / "p.parquet", texts, [[(0, 10, 0.9)], [(0, 5, 0.8)]], extra={"candidates": cands})
    bio = tmp_path / "g.conll"
    bio.write_text("John B-PER\nSmith I-PER\nvisited O\nNew B-LOC\nYork I-LOC\n\nParis B-LOC\nBerlin B-LOC\nand O\nEU B-ORG\n")
    out = cli("eval", pred, "--gold", bio, "--sweep", "--json", tmp_path / "r.json", "--plot", tmp_path / "pr.png")
    assert out.returncode == 0, out.stderr
    assert "does not record its --keep-candidates floor" in out.stderr and "0.330" in out.stderr
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["sweep_floor"] == pytest.approx(0.33)
    assert min(row["threshold"] for row in r["sweep"]) == 0.35, "no threshold below the lowest candidate"
    empty = write(tmp_path / "e.parquet", texts, [[], []], extra={"candidates": spans_col([[], []])})
    out = cli("eval", empty, "--gold", bio, "--sweep")
    assert out.returncode == 2 and "nothing to sweep" in out.stderr and "--keep-candidates FLOOR" in out.stderr


HOSTILE = '<script>alert("x")</script> & <b>Paris</b>'


def test_show_escapes_and_marks(tmp_path):
    page = render_page("t", [(0, HOSTILE, [{"start": 33, "end": 38, "text": "Paris", "score": 0.9}])])
    assert '<script>alert' not in page and "&lt;script&gt;" in page and "<b>" not in page
    assert '<mark class="d1" data-depth="1" data-a="33" data-b="38">Paris</mark>' in page
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
    from conftest import REPO

    from tommer.runtime.annotator import Annotator

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
    import re  # the page's script titles every piece from the document's data (#titles: all at load)
    titled = subprocess.run(["chromium", *flags, "--dump-dom", f"file://{tmp_path / 's.html'}#titles"],
                            capture_output=True, text=True, timeout=120)
    marks = re.findall(r"<mark [^>]*>", titled.stdout)
    assert marks and all(re.search(r'title="[^"]+ \(\d\.\d\d\)', m) for m in marks), marks[:3]
    shot = subprocess.run(["chromium", *flags, "--window-size=1200,1600", f"--screenshot={tmp_path / 'shot.png'}",
                           f"file://{tmp_path / 's.html'}"], capture_output=True, text=True, timeout=120)
    assert shot.returncode == 0 and (tmp_path / "shot.png").stat().st_size > 10_000
    if os.environ.get("TOMMER_SCREENSHOT_DIR"):  # to look at it
        shutil.copy(tmp_path / "shot.png", os.environ["TOMMER_SCREENSHOT_DIR"])


def test_python_dash_m_dispatches_eval_and_show(tmp_path):
    texts = ["Paris is big.", "London " * 400]
    pred = write(tmp_path / "p.parquet", texts, [[(0, 5, 0.9)], [(0, 6, 0.7)]])
    shown = module("show", pred, "--output", tmp_path / "s.html", "--rows", "1")
    assert shown.returncode == 0, shown.stderr
    assert "wrote" in shown.stdout and (tmp_path / "s.html").read_text().count('class="doc"') == 1
    for args in (("eval", pred), (pred,)):  # "eval" may be named or left out
        out = module(*args, "--against", pred, "--json", tmp_path / "a.json")
        assert out.returncode == 0, out.stderr
        assert json.loads((tmp_path / "a.json").read_text())["exact_match_rate"] == 1.0
    assert "Usage: python -m tommer.runtime.cli.quality show" in module("show", "--help").stdout


def test_missing_or_wrong_id_column_is_a_clear_error(tmp_path):
    texts = ["John lives in Paris", "Marie Curie"]
    pred = write(tmp_path / "p.parquet", texts, [[(0, 4, 0.9)], []])
    gold = write(tmp_path / "g.parquet", texts, [[(0, 4, 1.0)], []], column="gold")
    runs = {
        "eval --against": cli("eval", pred, "--against", pred, "--id-column", "doc_id"),
        "eval --gold": cli("eval", pred, "--gold", gold, "--gold-column", "gold", "--id-column", "doc_id"),
        "show": cli("show", pred, "--id-column", "doc_id", "--output", tmp_path / "s.html"),
    }
    for what, out in runs.items():
        assert out.returncode == 2 and "Traceback" not in out.stderr, what
        assert f"{pred}: no column 'doc_id' (--id-column); its columns: id, text, mentions" in out.stderr, what
    assert not (tmp_path / "s.html").exists()
    nogold_id = pq.read_table(gold).drop_columns(["id"])
    pq.write_table(nogold_id, tmp_path / "g2.parquet")
    out = cli("eval", pred, "--gold", tmp_path / "g2.parquet", "--gold-column", "gold", "--id-column", "id")
    assert out.returncode == 2 and "g2.parquet: no column 'id' (--id-column); its columns: text, gold" in out.stderr
    bio = tmp_path / "g.conll"
    bio.write_text("John B-PER\nlives O\nin O\nParis B-LOC\n\nMarie B-PER\nCurie I-PER\n")
    out = cli("eval", pred, "--gold", bio, "--id-column", "id")
    assert out.returncode == 2 and "a BIO file has no ids" in out.stderr


def test_duplicate_ids_are_an_error_naming_the_id_and_rows(tmp_path):
    texts = ["a", "b", "c", "d"]
    pred = pa.table({"id": ["x", "y", "z", "y"], "text": texts, "mentions": spans_col([[], [], [], []])})
    pq.write_table(pred, tmp_path / "p.parquet")
    unique = write(tmp_path / "u.parquet", texts, [[], [], [], []])
    out = cli("eval", tmp_path / "p.parquet", "--against", unique, "--id-column", "id")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "id 'y' of column 'id' is on more than one row (rows 1, 3)" in out.stderr and "p.parquet" in out.stderr
    out = cli("eval", unique, "--against", tmp_path / "p.parquet", "--id-column", "id")  # in the second file too
    assert out.returncode == 2 and "is on more than one row" in out.stderr


def test_rows_are_matched_by_id_in_linear_time(tmp_path, monkeypatch):
    """Spans are parsed once per file (not once per row) and rows found through a dict of ids."""
    from tommer.runtime.cli import quality as quality_cli

    n = 3000
    rng = list(range(n))
    order = rng[::7] + [i for i in rng if i % 7]  # shuffled, deterministic
    texts = [f"doc {i}" for i in rng]
    pred = pa.table({"id": rng, "text": texts, "mentions": spans_col([[(0, 3, 0.9)] if i % 2 else [] for i in rng])})
    gold = pa.table({"id": order, "text": [texts[i] for i in order],
                     "gold": spans_col([[(0, 3, 1.0)] if i % 3 else [] for i in order])})
    pq.write_table(pred, tmp_path / "p.parquet")
    pq.write_table(gold, tmp_path / "g.parquet")
    parsed = []
    real = quality_cli._spans
    monkeypatch.setattr(quality_cli, "_spans", lambda rows, *a: parsed.append(len(rows)) or real(rows, *a))
    r = quality_cli._gold(str(tmp_path / "p.parquet"), str(tmp_path / "g.parquet"), "id", "text", "gold", False, None)
    assert parsed == [n, n], "each file's spans are parsed once"
    odd, third = {i for i in rng if i % 2}, {i for i in rng if i % 3}
    assert r["predicted"] == len(odd) and r["gold"] == len(third)
    assert r["precision"] == pytest.approx(len(odd & third) / len(odd)), "rows paired by id, not by position"


def test_show_honours_fold_chars(tmp_path):
    pred = write(tmp_path / "p.parquet", ["Paris " * 30], [[(0, 5, 0.9)]])
    assert cli("show", pred, "--output", tmp_path / "a.html").returncode == 0
    assert "unfold)</summary>" not in (tmp_path / "a.html").read_text()
    assert cli("show", pred, "--output", tmp_path / "b.html", "--fold-chars", "100").returncode == 0
    assert "(180 characters, unfold)</summary>" in (tmp_path / "b.html").read_text()


def test_one_span_agreement_implementation():
    """The exporter's validation, tommer-eval --against and the bench share runtime.evaluate.span_agreement."""
    import ast

    import numpy as np
    from conftest import REPO

    from tommer.exporter import validate
    from tommer.runtime.quality.evaluate import span_agreement

    definitions = []
    for folder in ("runtime", "exporter", "benchmarks"):
        for path in (REPO / folder).rglob("*.py"):
            tree = ast.parse(path.read_text())
            definitions += [f"{path.relative_to(REPO)}:{node.name}" for node in ast.walk(tree)
                            if isinstance(node, ast.FunctionDef) and node.name in ("dice", "span_agreement")]
    assert sorted(definitions) == ["runtime/quality/evaluate.py:dice", "runtime/quality/evaluate.py:span_agreement"]
    # the exporter decodes bands, then counts with the same function
    band = np.zeros((4, 3), np.float32)
    band[2, 0] = band[3, 1] = 0.9  # spans (2, 2) and (2, 3)
    other = band.copy()
    other[3, 1] = 0.1
    found = validate.agreement([band, band], [band, other], 0.5)
    expected = span_agreement([{(2, 2), (2, 3)}] * 2, [{(2, 2), (2, 3)}, {(2, 2)}])
    assert found == {**expected.figures(), "reference_spans": 4, "spans": 3}
    assert found["exact_match_rate"] == 0.5 and found["dice"] == pytest.approx(2 * 3 / 7)
