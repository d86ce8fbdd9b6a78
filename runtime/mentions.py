"""From token spans to character mentions (spec section 5)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
