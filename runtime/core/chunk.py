"""What moves through the stages: a ``Chunk`` of rows and its ``Stats``.

Shared by the annotator (which fills a chunk's tokens, hits and mentions) and the readers
and writers around it, so that neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

    from .partial import Partial
    from .spans import Hits
    from .tokenization import TokenBatch

STAGES = ("read", "tokenize", "infer", "decode", "write")


@dataclass
class Stats:
    """Counters and per-stage seconds (stage seconds overlap when pipelined)."""

    rows: int = 0
    documents_windowed: int = 0
    tokens: int = 0  # real tokens fed to the graph, BOS included
    padded_tokens: int = 0  # tokens fed including padding
    mentions: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    def add(self, other: Stats) -> None:
        for name in ("rows", "documents_windowed", "tokens", "padded_tokens", "mentions"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for stage, s in other.seconds.items():
            self.seconds[stage] = self.seconds.get(stage, 0.0) + s

    @property
    def padding_fraction(self) -> float:
        return 1.0 - self.tokens / self.padded_tokens if self.padded_tokens else 0.0


@dataclass
class Chunk:
    """A pool of rows entering the stages: its texts, and what the caller carries along.

    Each stage returns the next record, with the fields it adds never ``None``:
    ``Chunk`` -> ``tokenize`` -> ``Tokenized`` (+ tokens) -> ``infer`` -> ``Inferred`` (+ hits)
    -> ``decode`` -> ``Annotated`` (+ mentions, candidates). Every per-token and per-span field
    is a flat array.
    """

    texts: list[str | None]
    stats: Stats = field(default_factory=Stats)
    payload: Any = None  # what the caller carries along (e.g. the chunk's index and input rows), never changed
    # windows already done (a resume: ``infer`` runs only the others); after ``infer``, and when it
    # fails or is cancelled, every window done so far with its hits (see ``partial.py``)
    partial: Partial | None = None

    def carried(self) -> dict[str, Any]:
        """The fields every later record carries on."""
        return {"texts": self.texts, "stats": self.stats, "payload": self.payload, "partial": self.partial}


@dataclass(kw_only=True)
class Tokenized(Chunk):
    tokens: TokenBatch


@dataclass(kw_only=True)
class Inferred(Tokenized):
    hits: Hits  # spans above min(threshold, candidate floor), from the bands


@dataclass(kw_only=True)
class Annotated(Tokenized):
    mentions: pa.Array  # list<struct<start, end, text, score>>, one row per text
    candidates: pa.Array | None = None  # the same, above the --keep-candidates floor
