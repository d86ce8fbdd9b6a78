"""tommer-show as a user meets it: dotted text columns, empty selections, the hover built from data,
no gap at mention boundaries, --sample N as in tommer-annotate, the page beside its input."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tommer.runtime.core.mentions import MENTION_TYPE
from tommer.runtime.quality.show import STYLE, render_page


def show(*args, **kw):
    return subprocess.run([sys.executable, "-c", "from tommer.runtime.cli.quality import show_main; show_main()",
                           *map(str, args)], capture_output=True, text=True, **kw)


def mentions_of(text, spans):
    return [{"start": s, "end": e, "text": text[s:e], "score": p} for s, e, p in spans]


def nested_output(path: Path, texts, spans, record: dict | None = None) -> Path:
    """An output as tommer-annotate writes it for a JSON Lines corpus whose text is meta.body."""
    table = pa.table({"id": list(range(len(texts))),
                      "meta": pa.array([{"body": t, "lang": "en"} for t in texts]),
                      "mentions": pa.array([mentions_of(t, s) for t, s in zip(texts, spans)], pa.list_(MENTION_TYPE))})
    if record is not None:
        table = table.replace_schema_metadata({b"tommer": json.dumps(record).encode()})
    pq.write_table(table, path)
    return path


TEXTS = ["Paris is big.", "Mary met Bob in New York.", "Nothing here."]
SPANS = [[(0, 5, 0.9)], [(0, 4, 0.8), (9, 12, 0.7), (16, 24, 0.95), (16, 19, 0.6)], []]


def test_a_dotted_text_column_reaches_into_the_struct(tmp_path):
    pred = nested_output(tmp_path / "p.parquet", TEXTS, SPANS)
    out = show(pred, "--text-column", "meta.body", "-o", tmp_path / "s.html")
    assert out.returncode == 0, out.stderr
    page = (tmp_path / "s.html").read_text()
    assert page.count('class="doc"') == 3 and "Mary met Bob in New York." in re.sub(r"<[^>]+>", "", page)
    assert "'meta.body'" in out.stdout, "the summary names the text column"


def test_the_recorded_text_column_is_the_default(tmp_path):
    pred = nested_output(tmp_path / "p.parquet", TEXTS, SPANS, {"text_column": "meta.body"})
    out = show(pred, "-o", tmp_path / "s.html")
    assert out.returncode == 0, out.stderr
    assert "Mary met Bob in New York." in re.sub(r"<[^>]+>", "", (tmp_path / "s.html").read_text())


def test_a_missing_text_column_says_what_happened(tmp_path):
    pred = nested_output(tmp_path / "p.parquet", TEXTS, SPANS)
    out = show(pred, "--text-column", "meta.title", "-o", tmp_path / "s.html")
    assert out.returncode == 2
    assert "no column 'meta.title'" in out.stderr and "id, meta, mentions" in out.stderr
    assert "without dropping" not in out.stderr, "the text was not dropped: no advice saying it was"
    dropped = tmp_path / "d.parquet"
    pq.write_table(pq.read_table(pred).drop_columns(["meta"]).replace_schema_metadata(
        {b"tommer": json.dumps({"text_column": "meta.body"}).encode()}), dropped)
    out = show(dropped, "-o", tmp_path / "s.html")
    assert out.returncode == 2 and "did not keep it" in out.stderr and "'meta'" in out.stderr, out.stderr


def test_annotated_json_lines_with_a_nested_text_then_shown(tiny_bundle, tmp_path):
    """The README's case end to end: tommer-annotate --text-column meta.body on JSON Lines, then tommer-show."""
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": i, "meta": {"body": t}}) + "\n" for i, t in enumerate(TEXTS)))
    ann = subprocess.run([sys.executable, "-c", "from tommer.runtime.cli.annotate import main; main()", str(corpus),
                          "-m", str(tiny_bundle), "-o", str(tmp_path / "c.parquet"), "--text-column", "meta.body",
                          "--threshold", "0.0", "--provider", "cpu", "-q"], capture_output=True, text=True)
    assert ann.returncode == 0, ann.stderr
    out = show(tmp_path / "c.parquet", "--text-column", "meta.body")
    assert out.returncode == 0, out.stderr
    page = (tmp_path / "c.html").read_text()
    assert page.count('class="doc"') == 3 and "Mary met Bob in New York." in re.sub(r"<[^>]+>", "", page)
    assert show(tmp_path / "c.parquet", "-o", tmp_path / "d.html").returncode == 0, "recorded column by default"


def test_min_mentions_leaving_nothing_is_an_error_with_the_counts(tmp_path):
    pred = nested_output(tmp_path / "p.parquet", TEXTS, SPANS)
    out = show(pred, "--text-column", "meta.body", "--min-mentions", "5000", "-o", tmp_path / "s.html")
    assert out.returncode == 2, out.stdout
    assert "no document has at least 5000 mentions" in out.stderr
    assert "3 documents have 0 to 4 mentions" in out.stderr and "1 with none" in out.stderr, out.stderr
    assert not (tmp_path / "s.html").exists(), "no empty page"


def test_no_gap_at_mention_boundaries():
    rule = re.search(r"(?m)^mark\{([^}]*)\}", STYLE).group(1)
    assert not re.search(r"padding:(?!0(?:[;}]|$))", rule) and not re.search(r"margin:(?!0(?:[;}]|$))", rule), rule
    # a boundary inside a word: the pieces touch (nothing between them)
    page = render_page("t", [(0, "Parisians", mentions_of("Parisians", [(0, 5, 0.9), (0, 9, 0.8)]))])
    assert re.search(r">Paris</mark><mark [^>]*>ians</mark>", page)


def dense(n_docs=16, words=250):
    """Documents with every 1- to 4-word span a mention: threshold decoding's nesting, at its worst."""
    rows = []
    for d in range(n_docs):
        text = " ".join(f"Word{d}x{i}" for i in range(words))
        starts = [m.start() for m in re.finditer(r"\S+", text)]
        ends = [m.end() for m in re.finditer(r"\S+", text)]
        spans = [(starts[i], ends[j], 0.5 + (i % 7) / 20) for i in range(words) for j in range(i, min(i + 4, words))]
        rows.append((d, text, mentions_of(text, spans)))
    return rows


def test_the_hover_is_data_once_per_document_and_the_page_grows_with_the_mentions():
    rows = dense()
    page = render_page("t", rows)
    n_mentions = sum(len(m) for _, _, m in rows)
    assert "title=" not in page.split("<script>")[0], "no per-piece title lists"
    data = re.findall(r'<script type="application/json" class="mentions">(.*?)</script>', page)
    assert len(data) == len(rows) and sum(len(json.loads(d)) for d in data) == n_mentions
    assert json.loads(data[0])[0] == [0, len("Word0x0"), 0.5], "offsets and score; the text is cut from the document"
    # the old page: 3.9 MB here (each piece titled with up to 10 covering mentions, and the list in HTML);
    # now 0.8 MB: about 50 bytes a mention (its offsets and score, and the offsets of the pieces)
    assert len(page.encode()) < 60 * n_mentions, len(page.encode())
    assert "<li>" not in page, "the list of mentions is built from the same data"


def test_mention_text_cannot_break_out_of_its_script():
    text = "a </script><script>alert(1)</script> b"
    page = render_page("t", [(0, text, mentions_of(text, [(2, 11, 0.9)]))])
    assert page.count("<script>alert") == 0 and "&lt;/script&gt;&lt;script&gt;alert(1)" in re.sub(r"<[^>]+>", "", page)
    assert re.search(r'class="mentions">\[\[2,11,0\.9\]\]</script>', page)


@pytest.fixture
def twenty(tmp_path):
    texts = [f"Doc {i} in Paris." for i in range(20)]
    return nested_output(tmp_path / "twenty.parquet", texts, [[(len(t) - 6, len(t) - 1, 0.9)] for t in texts])


def test_sample_takes_a_number_and_a_seed_as_in_tommer_annotate(twenty, tmp_path):
    rows = lambda p: [int(x) for x in re.findall(r'data-row="(\d+)"', p.read_text())]  # noqa: E731
    out = show(twenty, "--text-column", "meta.body", "--sample", "5", "--seed", "3", "-o", tmp_path / "a.html")
    assert out.returncode == 0, out.stderr
    first = rows(tmp_path / "a.html")
    assert len(first) == 5 and first == sorted(first) and first != [0, 1, 2, 3, 4]
    assert show(twenty, "--text-column", "meta.body", "--sample", "5", "--seed", "3",
                "-o", tmp_path / "b.html").returncode == 0
    assert rows(tmp_path / "b.html") == first, "same seed, same documents"
    assert show(twenty, "--text-column", "meta.body", "--sample", "5", "--seed", "4",
                "-o", tmp_path / "c.html").returncode == 0
    assert rows(tmp_path / "c.html") != first
    many = show(twenty, "--text-column", "meta.body", "--sample", "50", "-o", tmp_path / "d.html")
    assert many.returncode == 0 and len(rows(tmp_path / "d.html")) == 20 and "only 20" in many.stderr
    both = show(twenty, "--text-column", "meta.body", "--sample", "5", "--rows", "3", "-o", tmp_path / "e.html")
    assert both.returncode == 2 and "pass one of them" in both.stderr


def test_the_page_goes_beside_its_input(twenty, tmp_path):
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    out = show(twenty, "--text-column", "meta.body", cwd=elsewhere)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "twenty.html").is_file() and not list(elsewhere.iterdir())
    assert str(tmp_path / "twenty.html") in out.stdout


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is installed by .ci/run")
def test_hover_titles_and_lists_are_built_by_the_browser(tmp_path):
    """Chromium runs the page's script: each piece's title lists its covering mentions, lists are filled."""
    text = "New York City \U0001F642 <b>is</b> big."  # an emoji: 2 UTF-16 units, 1 code point as Python counts
    spans = [(0, 13, 0.9), (0, 8, 0.8), (19, 21, 0.55)]
    (tmp_path / "s.html").write_text(render_page("t", [(0, text, mentions_of(text, spans)), (1, "none", [])]))
    raw = (tmp_path / "s.html").read_text()
    assert ' title="' not in raw and "<li>" not in raw, "titles and lists come from the script"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(["chromium", *flags, "--dump-dom", f"file://{tmp_path / 's.html'}#titles"],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    marks = re.findall(r"<mark ([^>]*)>(.*?)</mark>", dom.stdout)
    titles = {piece: re.search(r'title="([^"]*)"', attrs).group(1) for attrs, piece in marks}
    assert titles == {"New York": "New York City (0.90); New York (0.80)", " City": "New York City (0.90)",
                      "is": "is (0.55)"}, titles
    items = re.findall(r"<li>(.*?)</li>", dom.stdout)
    assert items == ["New York City <small>[0:13] 0.90</small>", "New York <small>[0:8] 0.80</small>",
                     "is <small>[19:21] 0.55</small>"], items
    assert "<b>is</b>" not in dom.stdout, "the text stays escaped"
