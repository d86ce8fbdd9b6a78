"""A seeded synthetic corpus with a realistic length mix (log-normal: many short texts, a long tail)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

NAMES = ["Paris", "London", "Marie Curie", "Barack Obama", "the United Nations", "Tokyo", "Amazon", "Berlin",
         "the European Central Bank", "Ada Lovelace", "New York City", "Brazil", "NASA", "Angela Merkel",
         "the Nobel Prize", "Frankfurt", "Lionel Messi", "the British Museum", "Kyoto", "Apple Inc."]
WORDS = ["the", "a", "of", "in", "and", "to", "was", "for", "on", "with", "said", "that", "report", "city",
         "company", "river", "year", "visited", "announced", "new", "market", "people", "government", "after",
         "during", "between", "minister", "team", "season", "research", "museum", "rates", "week", "its"]


def synthetic_texts(n_docs: int, seed: int = 0, median_words: float = 40.0, sigma: float = 0.85,
                    max_words: int = 620) -> list[str]:
    """Texts whose word counts are log-normal (median 40 words, about 45 tokens; tail to ~700 tokens)."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(median_words), sigma, n_docs).astype(int), 3, max_words)
    texts = []
    for n in lengths:
        words = rng.choice(WORDS, size=n).tolist()
        for pos in rng.choice(n, size=max(1, n // 8), replace=False):
            words[pos] = NAMES[rng.integers(len(NAMES))]
        sentence = " ".join(words)
        texts.append(sentence[0].upper() + sentence[1:] + ".")
    return texts


def write_corpus(path: Path, texts: list[str], row_group_size: int = 4096) -> Path:
    table = pa.table({"id": pa.array(range(len(texts)), pa.int64()), "text": pa.array(texts, pa.string())})
    pq.write_table(table, path, row_group_size=row_group_size)
    return path
