"""The per-document reference implementation of annotation, kept as the oracle of the vectorized path.

One text at a time: encode, cut into windows, run each window alone, stitch the owner
windows' rows, decode the band with ``decoding.decode``, map to characters with
``mentions.char_mentions`` (a Python loop per span) and build the column from
``Mention`` objects. This is the implementation tommer used before the chunk-wide,
vectorized one; results must be identical, byte for byte.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from tommer.runtime.core.decoding import decode, decode_threshold
from tommer.runtime.core.mentions import char_mentions, mentions_array
from tommer.runtime.core.windows import stitch, window_starts
from tommer.runtime.execution.session import run_band


def oracle_columns(session, tokenizer, texts, *, max_tokens, overlap, threshold=0.5, decoding="threshold",
                   keep_candidates=None) -> tuple[pa.Array, pa.Array | None]:
    mentions, candidates = [], []
    for text in texts:
        if text is None:
            mentions.append([])
            candidates.append([])
            continue
        (enc,) = tokenizer.encode_batch([text])
        content = enc.ids[1:]
        starts = window_starts(len(content), max_tokens, overlap)
        if len(starts) == 1:
            windows = [enc.ids]
        else:
            windows = [np.concatenate([[tokenizer.bos_token_id], content[s: s + max_tokens - 1]]) for s in starts]
        bands = [run_band(session, w[None, :].astype(np.int64), np.ones((1, len(w)), np.int64))[0] for w in windows]
        band = stitch(bands, len(content), starts, max_tokens)
        mentions.append(char_mentions(text, enc.offsets, *decode(band, threshold, decoding)))
        if keep_candidates is not None:
            candidates.append(char_mentions(text, enc.offsets, *decode_threshold(band, keep_candidates)))
    return mentions_array(mentions), (mentions_array(candidates) if keep_candidates is not None else None)


class TableSession:
    """A stand-in for an onnxruntime session: ``band[b, i, o] = table[(ids[b, i] + 7 * i) % rows, o]``.

    The band depends on the position in the window, so a document's windows give different
    rows and the owner rule matters; padded rows come out as garbage on purpose (the
    annotator must never read them).
    """

    def __init__(self, table: np.ndarray):
        self.table = np.asarray(table, dtype=np.float32)

    def run(self, _names, feeds, _run_options=None):  # onnxruntime's signature
        ids = feeds["input_ids"]
        pos = np.arange(ids.shape[1])[None, :]
        return [self.table[(ids + 7 * pos) % len(self.table)]]
