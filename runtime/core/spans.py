"""Vectorized decoding of a whole chunk: band cells -> token spans -> character mentions -> Arrow.

The hot path of threshold decoding never makes a Python object per span or per mention:

1. ``band_hits`` takes the candidates of one inference batch at once (``numpy.nonzero``
   on ``band > threshold``), keeps each window's owned rows (long documents) and maps
   them to (document, start token, end token, score).
2. ``ChunkText`` holds the chunk's documents as one array of code points, with, for
   every position, the next non-space position and the end of the previous non-space
   one, so that trimming a span is two lookups; and the UTF-8 bytes with the byte
   position of each code point, so that a mention's text is a byte gather.
3. ``mentions_column`` maps token spans to trimmed character spans through the chunk's
   flattened token offsets, keeps one mention per character span (the highest score),
   sorts by (start, end) and builds ``list<struct<start, end, text, score>>`` from flat
   buffers (list offsets + struct children).

The rules are those of the spec (sections 4 and 5) and of the per-document
implementation in ``tommer.runtime.mentions.char_mentions``, which the tests use as
the oracle: results are identical, byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyarrow as pa

from ..errors import InputError
from .mentions import MENTION_TYPE

MAX_CODE_POINT = 0x110000
VIEW_BUFFER_LIMIT = 2**31  # a string view's offset is 32-bit: larger chunks gather bytes instead


@lru_cache(maxsize=1)
def whitespace_table() -> np.ndarray:
    """``table[c]`` is ``chr(c).isspace()`` for every code point (Python's own definition)."""
    import re

    every = np.arange(MAX_CODE_POINT, dtype=np.uint32).tobytes().decode("utf-32-le", "surrogatepass")
    table = np.zeros(MAX_CODE_POINT, dtype=bool)
    # the regex engine's \s and str.isspace are the same predicate (Py_UNICODE_ISSPACE); checked per hit
    table[[m.start() for m in re.finditer(r"\s", every) if every[m.start()].isspace()]] = True
    return table


@dataclass
class Hits:
    """Flat token spans of a chunk: document, start and end token (BOS-first, end inclusive), score."""

    doc: np.ndarray  # int64
    start: np.ndarray  # int64
    end: np.ndarray  # int64
    score: np.ndarray  # float32

    @classmethod
    def empty(cls) -> Hits:
        z = np.zeros(0, dtype=np.int64)
        return cls(z, z, z, np.zeros(0, dtype=np.float32))

    @classmethod
    def concat(cls, parts: list[Hits]) -> Hits:
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("doc", "start", "end", "score")))

    def __len__(self) -> int:
        return int(self.doc.shape[0])

    def take(self, keep: np.ndarray) -> Hits:
        return Hits(self.doc[keep], self.start[keep], self.end[keep], self.score[keep])

    def above(self, threshold: float) -> Hits:
        """The spans scoring strictly above ``threshold`` (same comparison as on the band)."""
        return self.take(self.score > threshold)

    def sorted(self) -> Hits:
        """Sorted by (document, start, end), the order of ``decoding.candidates`` per document."""
        return self.take(np.lexsort((self.end, self.start, self.doc)))


def band_hits(band: np.ndarray, threshold: float, window_doc: np.ndarray, row_offset: np.ndarray,
              own_lo: np.ndarray, own_hi: np.ndarray) -> Hits:
    """Candidates of one batch of windows: cells with ``band > threshold`` in owned rows.

    ``band`` is the graph's ``(batch, seq, band_width)`` output. Row ``r`` of window ``b``
    is row ``row_offset[b] + r`` of document ``window_doc[b]`` (BOS-first); the window
    owns rows ``own_lo[b] <= r < own_hi[b]``. A cell ``(r, o)`` is the span from document
    row ``row - o`` to ``row``; cells that would start before the document are dropped.
    """
    b, r, o = np.nonzero(band > threshold)
    score = band[b, r, o]
    row = row_offset[b] + r
    keep = (r >= own_lo[b]) & (r < own_hi[b]) & (o <= row)
    b, row, o, score = b[keep], row[keep], o[keep], score[keep]
    return Hits(window_doc[b].astype(np.int64), (row - o).astype(np.int64), row.astype(np.int64),
                score.astype(np.float32, copy=False))


class ChunkText:
    """A chunk's documents as flat code points (``None`` counts as empty)."""

    def __init__(self, texts: list[str | None]):
        strings = ["" if t is None else t for t in texts]
        lengths = np.fromiter(map(len, strings), dtype=np.int64, count=len(strings))
        self.base = np.zeros(len(strings) + 1, dtype=np.int64)  # code-point start of each document
        np.cumsum(lengths, out=self.base[1:])
        joined = "".join(strings)
        try:
            self.utf8 = np.frombuffer(joined.encode("utf-8"), dtype=np.uint8)
        except UnicodeEncodeError:
            row = next(i for i, t in enumerate(strings) if not _encodable(t))
            raise InputError(f"row {row}: the text is not valid Unicode (it holds a lone surrogate)") from None
        cps = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32)
        width = 1 + (cps >= 0x80).astype(np.int64) + (cps >= 0x800) + (cps >= 0x10000)
        self.byte_of = np.zeros(len(cps) + 1, dtype=np.int64)  # byte position of each code point
        np.cumsum(width, out=self.byte_of[1:])
        solid = ~whitespace_table()[cps]
        n = len(cps)
        positions = np.arange(n, dtype=np.int64)
        # next_solid[i]: first non-space position >= i (n if none); solid_end[e]: 1 + last non-space < e (0 if none)
        self.next_solid = np.append(np.minimum.accumulate(np.where(solid, positions, n)[::-1])[::-1], n)
        self.solid_end = np.zeros(n + 1, dtype=np.int64)
        if n:
            np.maximum.accumulate(np.where(solid, positions + 1, 0), out=self.solid_end[1:])

    def __len__(self) -> int:
        return len(self.base) - 1


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def mentions_column(hits: Hits, chars: ChunkText, token_start: np.ndarray, offsets: np.ndarray) -> pa.ListArray:
    """``list<struct<start, end, text, score>>``, one row per document of ``chars``.

    ``token_start[d]`` is the position of document ``d``'s BOS in the flat ``offsets``
    (``(tokens, 2)``, document-local code-point offsets, BOS ``(0, 0)``). A span covers
    ``offsets[start][0]:offsets[end][1]``, trimmed of whitespace; an all-whitespace span is
    dropped; one mention per character span, with the highest score; sorted by (start, end).
    """
    n_docs = len(chars)
    base = chars.base[hits.doc]
    s = base + offsets[token_start[hits.doc] + hits.start, 0]
    e = base + offsets[token_start[hits.doc] + hits.end, 1]
    s, e = chars.next_solid[s], chars.solid_end[e]
    keep = s < e
    doc, s, e, score = hits.doc[keep], s[keep], e[keep], hits.score[keep]
    # by (start, end) as one integer key (a start fixes the document); one mention per key, best score
    key = s * (int((e - s).max(initial=0)) + 1) + (e - s)
    order = np.argsort(key)
    key, doc, s, e = key[order], doc[order], s[order], e[order]
    first = np.ones(len(key), dtype=bool)
    first[1:] = key[1:] != key[:-1]
    starts = np.flatnonzero(first)
    score = np.maximum.reduceat(score[order], starts) if len(starts) else score[:0]
    doc, s, e = doc[starts], s[starts], e[starts]
    list_offsets = np.zeros(n_docs + 1, dtype=np.int32)
    np.cumsum(np.bincount(doc, minlength=n_docs), out=list_offsets[1:])
    start, end = s - chars.base[doc], e - chars.base[doc]
    values = pa.StructArray.from_arrays(
        [numeric_array(start, pa.int32()), numeric_array(end, pa.int32()), _gather_text(chars, s, e),
         numeric_array(score, pa.float32())],
        fields=list(MENTION_TYPE))
    return pa.ListArray.from_arrays(numeric_array(list_offsets, pa.int32()), values, type=pa.list_(MENTION_TYPE))


def numeric_array(values: np.ndarray, type: pa.DataType) -> pa.Array:
    """A numpy array as an Arrow array of ``type`` (no nulls), made from its buffer.

    ``pa.array`` would do the same, but its first call in a process imports pandas (0.3-0.6 s
    measured) to check whether it was handed a pandas object.
    """
    data = np.ascontiguousarray(values, dtype=type.to_pandas_dtype())
    return pa.Array.from_buffers(type, len(data), [None, pa.py_buffer(data)])


def _gather_text(chars: ChunkText, s: np.ndarray, e: np.ndarray) -> pa.Array:
    """The strings ``joined[s:e]`` as one Arrow string array, cut from the UTF-8 bytes.

    Built as Arrow string views (16 bytes per string: its length and either the string
    itself when it fits in 12 bytes, or its first 4 bytes and its offset in the chunk's
    UTF-8 buffer), which Arrow's cast copies into a plain string array: no per-byte index
    is made in numpy.
    """
    lo, hi = chars.byte_of[s], chars.byte_of[e]
    sizes = hi - lo
    if len(chars.utf8) >= VIEW_BUFFER_LIMIT:
        return _gather_text_bytes(chars.utf8, lo, sizes)
    padded = np.concatenate([chars.utf8, np.zeros(12, np.uint8)])
    head = np.lib.stride_tricks.sliding_window_view(padded, 12)[lo]  # (n, 12): the first 12 bytes of each string
    views = np.zeros((len(s), 16), np.uint8)
    views[:, 4:] = np.where(np.arange(12) < sizes[:, None], head, 0)  # inline strings: zeros after the end
    words = views.view(np.int32)  # (n, 4): length, prefix (4 bytes), buffer index, offset
    words[:, 0] = sizes
    long = sizes > 12
    words[long, 2] = 0
    words[long, 3] = lo[long]
    view = pa.Array.from_buffers(pa.string_view(), len(s), [None, pa.py_buffer(views), pa.py_buffer(chars.utf8)])
    return view.cast(pa.string())  # raises if one chunk's mention texts really exceed 2 GiB


def _gather_text_bytes(utf8: np.ndarray, lo: np.ndarray, sizes: np.ndarray) -> pa.Array:
    text_offsets = np.zeros(len(lo) + 1, dtype=np.int64)
    np.cumsum(sizes, out=text_offsets[1:])
    total = int(text_offsets[-1])
    index = np.repeat(lo - text_offsets[:-1], sizes) + np.arange(total, dtype=np.int64)
    large = pa.LargeStringArray.from_buffers(len(lo), pa.py_buffer(text_offsets), pa.py_buffer(utf8[index]))
    return large.cast(pa.string())  # raises if one chunk's mention texts really exceed 2 GiB
