"""The one corpus generator of every benchmark: seeded texts (or token counts) of log-normal lengths.

Two mixes of text, each with its own length distribution (both overridable):

* ``plain`` (``tommer-bench``, the CPU A/B scripts, the demo tokenizers): English-like words
  and names; word counts log-normal, median 40 words (about 45 tokens), tail to ~700 tokens.
* ``feed`` (the host feed benchmark and the GPU session): realistic text for a byte-level BPE:
  Zipf-distributed pseudo-words, names with accents and CJK, numbers, punctuation, a little
  emoji; word counts log-normal, median 45 words (about 60 tokens), tail to ~2,000 tokens.

``texts`` makes them in memory; ``write_corpus`` writes a Parquet corpus (``id``, ``text``),
atomically, in slices of ``batch`` documents for large corpora (bounded memory: each slice has
its own seed, derived from the corpus's and the slice's first row); ``token_lengths`` gives only
the token counts of the GPU issue's corpus, for the batch planners (no tokenizer, no text).
The same parameters give the same texts, run after run and machine after machine.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

NAMES = ["Paris", "London", "Marie Curie", "Barack Obama", "the United Nations", "Tokyo", "Amazon", "Berlin",
         "the European Central Bank", "Ada Lovelace", "New York City", "Brazil", "NASA", "Angela Merkel",
         "the Nobel Prize", "Frankfurt", "Lionel Messi", "the British Museum", "Kyoto", "Apple Inc."]
WORDS = ["the", "a", "of", "in", "and", "to", "was", "for", "on", "with", "said", "that", "report", "city",
         "company", "river", "year", "visited", "announced", "new", "market", "people", "government", "after",
         "during", "between", "minister", "team", "season", "research", "museum", "rates", "week", "its"]
# the feed mix
SYLLABLES = ["ka", "lo", "mi", "ne", "tra", "vel", "son", "dor", "ri", "an", "ber", "gu", "is", "ta", "por", "el",
             "ma", "qui", "zen", "ho", "ur", "sta", "fen", "ly", "cor", "dis", "wa", "pe", "ox", "ni", "bro", "ae"]
FEED_NAMES = ["Paris", "Marie Curie", "Barack Obama", "the United Nations", "Tokyo", "Amazon", "São Paulo",
              "Zürich", "Ada Lovelace", "New York City", "Nagoya 名古屋", "Angela Merkel", "François Hollande",
              "the Nobel Prize", "Kraków", "Lionel Messi", "the British Museum", "Apple Inc.", "Ñuñoa", "Reykjavík"]
PUNCT = [",", ",", ".", ";", ":", " -", " (", ")", "!", "?", "'s", " \u201c", "\u201d"]
EMOJI = ["🙂", "🚀", "👍🏽", "🇫🇷", "e\u0301"]
TOKENS_PER_FEED_DOC = 90  # about how many tokens a feed document holds on average (its long tail included)


def _plain_text(rng: np.random.Generator, n: int) -> str:
    words = rng.choice(WORDS, size=n).tolist()
    for pos in rng.choice(n, size=max(1, n // 8), replace=False):
        words[pos] = NAMES[rng.integers(len(NAMES))]
    sentence = " ".join(words)
    return sentence[0].upper() + sentence[1:] + "."


_LEXICON: list[str] = []


def _feed_lexicon() -> tuple[list[str], np.ndarray]:
    """20,000 pseudo-words of 1-4 syllables (fixed seed) and their Zipf weights."""
    if not _LEXICON:
        vocab_rng = np.random.default_rng(12345)
        _LEXICON.extend("".join(vocab_rng.choice(SYLLABLES, size=k)) for k in vocab_rng.integers(1, 5, size=20000))
    zipf = 1.0 / np.arange(1, len(_LEXICON) + 1) ** 1.05
    return _LEXICON, zipf / zipf.sum()


def _feed_text(rng: np.random.Generator, n: int) -> str:
    lex, zipf = _feed_lexicon()
    words = [lex[i] for i in rng.choice(len(lex), size=n, p=zipf)]
    marks = rng.random(n)
    for k in np.flatnonzero(marks < 0.08).tolist():
        words[k] = FEED_NAMES[rng.integers(len(FEED_NAMES))]
    for k in np.flatnonzero((marks > 0.08) & (marks < 0.11)).tolist():
        words[k] = str(int(rng.integers(1, 100000)))
    for k in np.flatnonzero(marks > 0.995).tolist():
        words[k] = EMOJI[rng.integers(len(EMOJI))]
    out = []
    for k, w in enumerate(words):
        out.append(w)
        if rng.random() < 0.09:
            out.append(PUNCT[rng.integers(len(PUNCT))])
        if k + 1 < n:
            out.append("\n\n" if rng.random() < 0.01 else " ")
    text = "".join(out)
    return text[:1].upper() + text[1:] + "."


@dataclass(frozen=True)
class Mix:
    """A kind of text and its word-count distribution: log-normal, clipped to [min_words, max_words]."""

    median_words: float
    sigma: float
    min_words: int
    max_words: int
    text: Callable[[np.random.Generator, int], str]


MIXES = {"plain": Mix(40.0, 0.85, 3, 620, _plain_text), "feed": Mix(45.0, 1.0, 1, 1500, _feed_text)}


def texts(n_docs: int, seed: int = 0, mix: str = "plain", median_words: float | None = None,
          sigma: float | None = None, max_words: int | None = None) -> list[str]:
    """``n_docs`` seeded texts of ``mix`` (``plain`` or ``feed``); the length parameters default to the mix's."""
    m = MIXES[mix]
    rng = np.random.default_rng(seed)
    median = m.median_words if median_words is None else median_words
    words = np.clip(rng.lognormal(np.log(median), m.sigma if sigma is None else sigma, n_docs).astype(int),
                    m.min_words, m.max_words if max_words is None else max_words)
    return [m.text(rng, n) for n in words.tolist()]


def token_lengths(n_docs: int, seed: int = 0, median: float = 60.0, sigma: float = 1.0, cap: int = 2000) -> np.ndarray:
    """Token counts (BOS included) of a log-normal corpus: median ``median``, tail to ``cap`` (the GPU issue's
    corpus), for what needs only the lengths (the batch planners)."""
    rng = np.random.default_rng(seed)
    return np.clip(np.round(rng.lognormal(np.log(median), sigma, n_docs)), 2, cap).astype(np.int64) + 1


def docs_for_tokens(tokens: int, minimum: int = 100) -> int:
    """About how many ``feed`` documents hold ``tokens`` tokens (at least ``minimum``)."""
    return max(minimum, int(tokens / TOKENS_PER_FEED_DOC))


def tokenizer_texts() -> list[str]:
    """What the random backbones' tokenizers are trained on: ``plain`` texts and every word and name, so
    that a word of the ``plain`` corpus is about one token, as with a real tokenizer on real text."""
    return texts(2000, seed=123) + [" ".join(WORDS + NAMES)] * 50


def long_text(shift: int) -> str:
    """The exporter's long validation text with its sentences rotated by ``shift``: another long window of
    the same kind (thousands of tokens), for what measures along the positions of a window."""
    from tommer.exporter.texts import LONG_VALIDATION_TEXT

    parts = LONG_VALIDATION_TEXT.split(". ")
    k = (shift * 17) % len(parts)
    return ". ".join(parts[k:] + parts[:k])


def write_corpus(path: Path, docs: int | Sequence[str], seed: int = 0, mix: str = "plain", batch: int | None = None,
                 row_group_size: int = 4096, reuse: bool = False) -> Path:
    """Write a Parquet corpus (``id``, ``text``) at ``path``, atomically (a temporary name, then renamed).

    ``docs`` is the texts themselves, or a number of documents to generate (``texts(docs, seed, mix)``; with
    ``batch``, in slices of ``batch`` documents, slice ``first`` seeded ``seed * 1000003 + first``, so that
    memory stays bounded whatever the size). With ``reuse``, a corpus already at ``path`` is kept.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if reuse and path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    schema = pa.schema([("id", pa.int64()), ("text", pa.string())])
    if isinstance(docs, int):
        step = batch or max(docs, 1)
        slices = ((first, lambda first=first: texts(min(step, docs - first),
                                                   seed * 1000003 + first if batch else seed, mix))
                  for first in range(0, docs, step))
    else:
        given = list(docs)
        slices = iter([(0, lambda: given)])
    with pq.ParquetWriter(tmp, schema) as writer:
        for first, make in slices:
            part = make()
            writer.write_table(pa.table({"id": pa.array(range(first, first + len(part)), pa.int64()),
                                         "text": pa.array(part, pa.string())}, schema=schema),
                               row_group_size=row_group_size)
    os.replace(tmp, path)
    return path


def feed_corpus(path: Path, tokens: int, seed: int = 0, minimum_docs: int = 100) -> Path:
    """The host feed benchmark's corpus (and the GPU session's): about ``tokens`` tokens of the ``feed``
    mix at ``path``, written in slices of 20,000 documents (bounded memory); reused when already there."""
    return write_corpus(path, docs_for_tokens(tokens, minimum_docs), seed=seed, mix="feed", batch=20000,
                        row_group_size=8192, reuse=True)
