"""From token spans to character mentions (spec section 5)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

# the ``mentions`` (and ``candidates``) column: one list of these per document
MENTION_TYPE = pa.struct([("start", pa.int32()), ("end", pa.int32()), ("text", pa.string()), ("score", pa.float32())])


@dataclass(frozen=True)
class Mention:
    """A mention: ``text == document[start:end]`` (Python string indices), ``end`` exclusive."""

    start: int
    end: int
    text: str
    score: float


def char_mentions(text: str, offsets: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                  scores: np.ndarray) -> list[Mention]:
    """Map token spans (inclusive token indices into ``offsets``) to trimmed character mentions.

    A span covers ``offsets[start][0]:offsets[end][1]``, trimmed of whitespace at both
    ends; an all-whitespace span is dropped; when several token spans give the same
    character span, the highest score is kept. Sorted by (start, end).
    """
    best: dict[tuple[int, int], float] = {}
    char_starts = offsets[starts, 0].tolist()
    char_ends = offsets[ends, 1].tolist()
    for s, e, p in zip(char_starts, char_ends, scores.tolist()):
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if s < e and best.get((s, e), -1.0) < p:
            best[(s, e)] = p
    return [Mention(s, e, text[s:e], p) for (s, e), p in sorted(best.items())]


def mentions_array(per_doc: list[list[Mention]]) -> pa.Array:
    """``list<struct<start, end, text, score>>`` from per-document ``Mention`` lists."""
    offsets = np.zeros(len(per_doc) + 1, dtype=np.int32)
    np.cumsum([len(m) for m in per_doc], out=offsets[1:])
    flat = [m for doc in per_doc for m in doc]
    values = pa.StructArray.from_arrays(
        [pa.array([m.start for m in flat], pa.int32()), pa.array([m.end for m in flat], pa.int32()),
         pa.array([m.text for m in flat], pa.string()), pa.array([m.score for m in flat], pa.float32())],
        fields=list(MENTION_TYPE),
    )
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values, type=pa.list_(MENTION_TYPE))


def mention_lists(column: pa.Array | pa.ChunkedArray) -> list[list[Mention]]:
    """Per-document ``Mention`` lists from a ``mentions`` column (for the Python API, not the hot path)."""
    return [[Mention(m["start"], m["end"], m["text"], m["score"]) for m in doc or ()] for doc in column.to_pylist()]
