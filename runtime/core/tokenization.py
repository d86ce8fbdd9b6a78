"""Tokenize texts exactly as the exported graph was validated.

Texts are encoded without special tokens by the bundle's ``tokenizer.json``
(the Rust tokenizer, parallel over a batch) and the bundle's BOS id is put in
front, with the empty character range (0, 0). Offsets are Python string indices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from ..bundle import Manifest
from ..errors import BundleError


@dataclass(frozen=True)
class Encoding:
    """One text: token ids with BOS first, and (n, 2) character offsets (BOS: (0, 0))."""

    ids: np.ndarray  # (n,) int64
    offsets: np.ndarray  # (n, 2) int64

    def __len__(self) -> int:
        return int(self.ids.shape[0])


@dataclass
class TokenBatch:
    """A chunk's encodings, flattened: no Python object per token.

    Document ``d`` is ``ids[start[d] : start[d] + lengths[d]]`` (BOS first) with its
    character ``offsets`` (document-local, BOS ``(0, 0)``); a ``None`` text has length 0.
    """

    ids: np.ndarray  # (tokens,) int64
    offsets: np.ndarray  # (tokens, 2) int64
    lengths: np.ndarray  # (docs,) int64, BOS included; 0 for a None text
    start: np.ndarray  # (docs,) int64

    @property
    def n_tokens(self) -> np.ndarray:
        """Tokens per document, BOS excluded (0 for a None text)."""
        return np.maximum(self.lengths - 1, 0)


class BundleTokenizer:
    """The tokenizer of a bundle, with its BOS rule."""

    def __init__(self, path: str | Path, bos_token_id: int, pad_token_id: int, after_ids: tuple[int, ...] = ()):
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust tokenizer raises a plain Exception
            raise BundleError(f"{path}: cannot read the tokenizer ({exc})") from exc
        self._tok.no_padding()
        self._tok.no_truncation()
        self.bos_token_id = int(bos_token_id)
        self.pad_token_id = int(pad_token_id)
        # closing template tokens ([SEP], </s>): not in the flat encodings (BOS + text, what windows cut),
        # appended to every window fed to the graph (``Annotator._gather``, ``close``)
        self.after_ids = tuple(int(i) for i in after_ids)

    @classmethod
    def from_bundle(cls, folder: str | Path, manifest: Manifest) -> BundleTokenizer:
        info = manifest.tokenizer
        return cls(Path(folder) / info.file, info.bos_token_id, info.pad_token_id, info.after_ids)

    def close(self, encoding: Encoding) -> Encoding:
        """``encoding`` (BOS + text) with the closing template tokens appended, offsets (0, 0): what the graph
        reads."""
        if not self.after_ids:
            return encoding
        after = np.asarray(self.after_ids, dtype=np.int64)
        return Encoding(np.concatenate([encoding.ids, after]),
                        np.concatenate([encoding.offsets, np.zeros((len(after), 2), dtype=np.int64)]))

    def encode_batch(self, texts: list[str]) -> list[Encoding]:
        """Encode texts (parallel in Rust), one ``Encoding`` each; never truncates."""
        flat = self.encode_flat(texts)
        return [Encoding(flat.ids[s : s + n], flat.offsets[s : s + n])
                for s, n in zip(flat.start.tolist(), flat.lengths.tolist())]

    def encode_flat(self, texts: Sequence[str | None]) -> TokenBatch:
        """Encode a chunk (parallel in Rust) into flat arrays; ``None`` texts get no token."""
        present = [i for i, t in enumerate(texts) if t is not None]
        encodings = self._tok.encode_batch([texts[i] for i in present], add_special_tokens=False) if present else []
        lengths = np.zeros(len(texts), dtype=np.int64)
        lengths[present] = np.fromiter((len(e.ids) + 1 for e in encodings), dtype=np.int64, count=len(encodings))
        start = np.zeros(len(texts), dtype=np.int64)
        np.cumsum(lengths[:-1], out=start[1:])
        total = int(lengths.sum())
        bos = (self.bos_token_id,)
        ids = np.fromiter(chain.from_iterable(chain(bos, e.ids) for e in encodings), dtype=np.int64, count=total)
        zero = ((0, 0),)
        flat = chain.from_iterable(chain.from_iterable(chain(zero, e.offsets) for e in encodings))
        offsets = np.fromiter(flat, dtype=np.int64, count=2 * total).reshape(total, 2)
        return TokenBatch(ids, offsets, lengths, start)


def pad_batch(sequences: list[np.ndarray], pad_token_id: int, length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad id sequences into ``(input_ids, attention_mask)``, both (batch, length) int64."""
    length = max(len(s) for s in sequences) if length is None else length
    ids = np.full((len(sequences), length), pad_token_id, dtype=np.int64)
    mask = np.zeros((len(sequences), length), dtype=np.int64)
    for b, seq in enumerate(sequences):
        ids[b, : len(seq)] = seq
        mask[b, : len(seq)] = 1
    return ids, mask
