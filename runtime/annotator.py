"""``Annotator``: texts in, mentions out, through a bundle's one ONNX graph."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from .batching import plan_batches
from .bundle import MODEL_NAME, Manifest, read_manifest
from .decoding import STRATEGIES, decode, decode_threshold
from .errors import InputError
from .mentions import Mention, char_mentions
from .session import create_session, pick_provider, run_band
from .tokenization import BundleTokenizer, Encoding, pad_batch
from .windows import check_window_options, stitch, window_starts

MENTION_TYPE = pa.struct([("start", pa.int32()), ("end", pa.int32()), ("text", pa.string()), ("score", pa.float32())])
STAGES = ("read", "tokenize", "infer", "decode", "write")
# Token budget of a batch, padding included. On CPUs small batches keep activations in
# cache: on the 2-core benchmark machine 512 tokens ran at 7,601 tokens/s, 16,384 at 4,451
# (benchmarks/results). GPUs need large batches to fill the device (not measured here).
DEFAULT_BATCH_TOKENS = {"cpu": 512, "cuda": 65536, "tensorrt": 65536}


@dataclass(frozen=True)
class AnnotateOptions:
    """How to annotate (every CLI option that changes the output lives here)."""

    decoding: str = "threshold"
    threshold: float = 0.5
    max_tokens: int | None = None  # tokens per window, BOS included; default from the bundle
    window_overlap: int = 128
    batch_tokens: int | None = None  # default per provider: DEFAULT_BATCH_TOKENS
    keep_candidates: float | None = None
    provider: str = "auto"
    threads: int = 0

    def output_fingerprint(self) -> dict[str, Any]:
        """What decides the output rows (resuming with other values would mix two runs)."""
        return {"decoding": self.decoding, "threshold": self.threshold, "max_tokens": self.max_tokens,
                "window_overlap": self.window_overlap, "keep_candidates": self.keep_candidates}


@dataclass
class Stats:
    """Counters and per-stage seconds (stage seconds overlap when pipelined)."""

    rows: int = 0
    documents_windowed: int = 0
    tokens: int = 0  # real tokens fed to the graph, BOS included
    padded_tokens: int = 0  # tokens fed including padding
    mentions: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    def add(self, other: "Stats") -> None:
        for name in ("rows", "documents_windowed", "tokens", "padded_tokens", "mentions"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for stage, s in other.seconds.items():
            self.seconds[stage] = self.seconds.get(stage, 0.0) + s

    @property
    def padding_fraction(self) -> float:
        return 1.0 - self.tokens / self.padded_tokens if self.padded_tokens else 0.0


@dataclass
class Chunk:
    """A pool of rows moving through the stages."""

    texts: list[str | None]
    encodings: list[Encoding | None] = field(default_factory=list)
    bands: list[np.ndarray | None] = field(default_factory=list)
    mentions: list[list[Mention]] = field(default_factory=list)
    candidates: list[list[Mention]] | None = None
    stats: Stats = field(default_factory=Stats)
    payload: Any = None  # what the caller carries along (e.g. the input rows)


def check_options(manifest: Manifest, options: AnnotateOptions) -> AnnotateOptions:
    """Validate ``options`` against a bundle without loading its graph; ``max_tokens`` resolved.

    Raises:
        InputError: naming the option and what it must be.
    """
    if options.decoding not in STRATEGIES:
        raise InputError(f"--decoding {options.decoding!r}: expected one of {', '.join(STRATEGIES)}")
    if not 0.0 <= options.threshold < 1.0:
        raise InputError(f"--threshold {options.threshold}: expected a probability in [0, 1)")
    max_tokens = options.max_tokens or manifest.tokenizer.max_tokens
    if max_tokens > manifest.backbone.max_positions:
        raise InputError(f"--max-tokens {max_tokens} exceeds the backbone's {manifest.backbone.max_positions} positions")
    check_window_options(max_tokens, options.window_overlap, manifest.band_width)
    return dataclasses.replace(options, max_tokens=max_tokens)


class Annotator:
    """Annotate texts with a bundle made by ``tommer-export``.

    One call for one text (``annotate_text``), one for a batch (``annotate``), one for
    an Arrow table (``annotate_table``) and one for Parquet files (``annotate_parquet``).
    """

    def __init__(self, folder: str | Path, options: AnnotateOptions = AnnotateOptions()):
        self.folder = Path(folder)
        self.manifest: Manifest = read_manifest(self.folder)
        options = check_options(self.manifest, options)
        self.provider = pick_provider(options.provider)
        batch_tokens = options.batch_tokens or DEFAULT_BATCH_TOKENS[self.provider]
        if batch_tokens < 1:
            raise InputError(f"--batch-tokens must be >= 1, found {batch_tokens}")
        self.options = dataclasses.replace(options, batch_tokens=batch_tokens)
        self.tokenizer = BundleTokenizer.from_bundle(self.folder, self.manifest)
        self.session = create_session(self.folder / MODEL_NAME, self.provider, options.threads)

    @classmethod
    def from_bundle(cls, folder: str | Path, **options: Any) -> "Annotator":
        return cls(folder, AnnotateOptions(**options))

    # -- stages ---------------------------------------------------------------------
    def tokenize(self, chunk: Chunk) -> Chunk:
        start = time.perf_counter()
        present = [i for i, t in enumerate(chunk.texts) if t is not None]
        encoded = self.tokenizer.encode_batch([chunk.texts[i] for i in present]) if present else []
        chunk.encodings = [None] * len(chunk.texts)
        for i, enc in zip(present, encoded):
            chunk.encodings[i] = enc
        chunk.stats.seconds["tokenize"] += time.perf_counter() - start
        return chunk

    def infer(self, chunk: Chunk) -> Chunk:
        """Run the graph over every window of every document, in length-sorted batches."""
        start = time.perf_counter()
        max_tokens, bos = self.options.max_tokens, self.tokenizer.bos_token_id
        windows: list[np.ndarray] = []
        plan: list[tuple[int, list[int], int]] = []  # (doc, window starts, first window index)
        for doc, enc in enumerate(chunk.encodings):
            if enc is None:
                continue
            content = enc.ids[1:]
            starts = window_starts(len(content), max_tokens, self.options.window_overlap)
            plan.append((doc, starts, len(windows)))
            if len(starts) == 1:
                windows.append(enc.ids)
            else:
                chunk.stats.documents_windowed += 1
                windows.extend(np.concatenate([[bos], content[s : s + max_tokens - 1]]) for s in starts)
        lengths = np.fromiter((len(w) for w in windows), dtype=np.int64, count=len(windows))
        bands: list[np.ndarray] = [np.empty(0)] * len(windows)
        for batch in plan_batches(lengths, self.options.batch_tokens):
            ids, mask = pad_batch([windows[i] for i in batch], self.tokenizer.pad_token_id)
            out = run_band(self.session, ids, mask)
            chunk.stats.padded_tokens += ids.size
            for row, i in enumerate(batch.tolist()):
                bands[i] = out[row, : lengths[i]]
        chunk.stats.tokens += int(lengths.sum())
        chunk.bands = [None] * len(chunk.texts)
        for doc, starts, first in plan:
            n_content = len(chunk.encodings[doc]) - 1
            chunk.bands[doc] = stitch(bands[first : first + len(starts)], n_content, starts, max_tokens)
        chunk.stats.seconds["infer"] += time.perf_counter() - start
        return chunk

    def decode(self, chunk: Chunk) -> Chunk:
        start = time.perf_counter()
        opts = self.options
        chunk.mentions, keep = [], opts.keep_candidates
        chunk.candidates = [] if keep is not None else None
        for text, enc, band in zip(chunk.texts, chunk.encodings, chunk.bands):
            if enc is None:
                chunk.mentions.append([])
                if chunk.candidates is not None:
                    chunk.candidates.append([])
                continue
            found = char_mentions(text, enc.offsets, *decode(band, opts.threshold, opts.decoding))
            chunk.mentions.append(found)
            if chunk.candidates is not None:
                chunk.candidates.append(char_mentions(text, enc.offsets, *decode_threshold(band, keep)))
        chunk.stats.mentions += sum(len(m) for m in chunk.mentions)
        chunk.stats.rows += len(chunk.texts)
        chunk.bands = []  # free the bands early
        chunk.stats.seconds["decode"] += time.perf_counter() - start
        return chunk

    def process(self, chunk: Chunk) -> Chunk:
        return self.decode(self.infer(self.tokenize(chunk)))

    # -- public API -----------------------------------------------------------------
    def annotate(self, texts: Sequence[str | None]) -> list[list[Mention]]:
        """Mentions of each text (``None`` gives no mention)."""
        return self.process(Chunk(texts=list(texts))).mentions

    def annotate_text(self, text: str) -> list[Mention]:
        return self.annotate([text])[0]

    def annotate_table(self, table: pa.Table, text_column: str | None = "text") -> pa.Table:
        """``table`` with ``mentions`` and ``n_tokens`` (and ``candidates``) appended."""
        from .parquet_io import resolve_text_column, texts_of

        column = resolve_text_column(table.schema, text_column, "<table>")
        chunk = self.process(Chunk(texts=texts_of(table.column(column), "<table>", column)))
        return append_results(table, chunk)

    def annotate_parquet(self, src: str | Path, dst: str | Path | None = None, **kwargs: Any):
        """Annotate Parquet file(s) to Parquet; see ``tommer.runtime.parquet_io.annotate_files``."""
        from .parquet_io import annotate_files

        return annotate_files(self, str(src), None if dst is None else str(dst), **kwargs)


def mentions_array(per_doc: list[list[Mention]]) -> pa.Array:
    """list<struct<start, end, text, score>> from per-document mentions, built from flat buffers."""
    offsets = np.zeros(len(per_doc) + 1, dtype=np.int32)
    np.cumsum([len(m) for m in per_doc], out=offsets[1:])
    flat = [m for doc in per_doc for m in doc]
    values = pa.StructArray.from_arrays(
        [pa.array([m.start for m in flat], pa.int32()), pa.array([m.end for m in flat], pa.int32()),
         pa.array([m.text for m in flat], pa.string()), pa.array([m.score for m in flat], pa.float32())],
        fields=list(MENTION_TYPE),
    )
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values, type=pa.list_(MENTION_TYPE))


def append_results(table: pa.Table, chunk: Chunk) -> pa.Table:
    """Append the result columns of a processed chunk to its rows."""
    n_tokens = [0 if e is None else len(e) - 1 for e in chunk.encodings]
    table = table.append_column("mentions", mentions_array(chunk.mentions))
    table = table.append_column("n_tokens", pa.array(n_tokens, pa.int32()))
    if chunk.candidates is not None:
        table = table.append_column("candidates", mentions_array(chunk.candidates))
    return table
