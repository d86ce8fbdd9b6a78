"""CoNLL-style BIO files as texts and gold character spans.

One token per line (the tag in the last column, the token in the first), a blank line
between sentences, ``-DOCSTART-`` lines ignored. Each sentence becomes one text: its
tokens joined by single spaces. ``B-X`` opens a mention, ``I-X`` continues one of the
same type (or opens one after ``O`` or another type), ``O`` closes it.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError

Spans = list[tuple[int, int]]
SUFFIXES = (".conll", ".bio", ".iob", ".txt")  # gold files read as BIO by tommer-eval


def rows_advice(path: str | Path) -> str:
    """How to get predictions that line up with a BIO file's sentences (they are matched by position only)."""
    return (f"the predictions must be one row per sentence of {path}, in order: annotate its sentences, e.g. "
            "python -c \"import sys, pyarrow as pa, pyarrow.parquet as pq; from tommer.runtime.quality.bio import "
            "read_bio; pq.write_table(pa.table({'text': read_bio(sys.argv[1])[0]}), sys.argv[2])\" "
            f"{path} sentences.parquet, then tommer-annotate sentences.parquet")


def _close(spans: Spans, open_at: int | None, end: int) -> None:
    if open_at is not None:
        spans.append((open_at, end))


def sentence_spans(tokens: list[str], tags: list[str], where: str) -> tuple[str, Spans]:
    """The text of one sentence and its mention spans (character offsets, end exclusive)."""
    text_parts: list[str] = []
    spans: list[tuple[int, int]] = []
    pos = 0
    open_at: int | None = None
    open_type, last_end = None, 0
    for token, tag in zip(tokens, tags):
        start = pos
        end = start + len(token)
        kind, _, label = tag.partition("-")
        if tag == "O":
            _close(spans, open_at, last_end)
            open_at = None
        elif kind == "B" or (kind == "I" and (open_at is None or label != open_type)):
            _close(spans, open_at, last_end)
            open_at, open_type = start, label
        elif kind != "I":
            raise InputError(f"{where}: tag {tag!r} is not B-X, I-X or O")
        text_parts.append(token)
        last_end, pos = end, end + 1
    _close(spans, open_at, last_end)
    return " ".join(text_parts), spans


def read_bio(path: str | Path) -> tuple[list[str], list[Spans]]:
    """Texts and gold spans of every sentence of a BIO file."""
    texts, golds = [], []
    tokens: list[str] = []
    tags: list[str] = []

    def flush(line_no: int) -> None:
        if tokens:
            text, spans = sentence_spans(tokens, tags, f"{path}:{line_no}")
            texts.append(text)
            golds.append(spans)
            tokens.clear()
            tags.clear()

    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the BIO file ({exc})") from exc
    for no, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            flush(no)
            continue
        if fields[0] == "-DOCSTART-":
            flush(no)
            continue
        if len(fields) < 2:
            raise InputError(f"{path}:{no}: expected 'token ... TAG', found {line!r}")
        tag = fields[-1]
        if tag != "O" and (tag[:2] not in ("B-", "I-") or len(tag) < 3):
            raise InputError(f"{path}:{no}: tag {tag!r} is not B-X, I-X or O")
        tokens.append(fields[0])
        tags.append(tag)
    flush(len(lines) + 1)
    return texts, golds
