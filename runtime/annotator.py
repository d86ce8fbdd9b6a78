"""``Annotator``: texts in, mentions out, through a bundle's one ONNX graph."""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa

from .batching import plan_batches
from .bundle import MODEL_NAME, Manifest, read_manifest
from .decoding import SELECTORS, STRATEGIES
from .errors import Cancelled, InputError
from .mentions import MENTION_TYPE, Mention, mention_lists, mentions_array  # noqa: F401 - re-exported
from .providers import graph_kind
from .session import open_session, run_band
from .spans import ChunkText, Hits, band_hits, mentions_column
from .tokenization import BundleTokenizer, TokenBatch
from .windows import check_window_options, default_overlap, plan_windows

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
    window_overlap: int | None = None  # default: windows.default_overlap(max_tokens, band width)
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
    """A pool of rows moving through the stages; every per-token and per-span field is a flat array."""

    texts: list[str | None]
    tokens: TokenBatch | None = None
    hits: Hits | None = None  # spans above min(threshold, candidate floor), from the bands
    mentions: pa.Array | None = None  # list<struct<start, end, text, score>>, one row per text
    candidates: pa.Array | None = None
    stats: Stats = field(default_factory=Stats)
    payload: Any = None  # what the caller carries along (e.g. the input rows)


def check_options(manifest: Manifest, options: AnnotateOptions) -> AnnotateOptions:
    """Validate ``options`` against a bundle without loading its graph; ``max_tokens`` resolved.

    ``window_overlap`` is resolved too (``windows.default_overlap`` when not given).

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
    if options.keep_candidates is not None and not 0.0 <= options.keep_candidates < 1.0:
        raise InputError(f"--keep-candidates {options.keep_candidates}: expected a probability in [0, 1)")
    overlap = options.window_overlap
    if overlap is None:
        overlap = default_overlap(max_tokens, manifest.band_width)
    check_window_options(max_tokens, overlap, manifest.band_width)
    return dataclasses.replace(options, max_tokens=max_tokens, window_overlap=overlap)


class Annotator:
    """Annotate texts with a bundle made by ``tommer-export``.

    One call for one text (``annotate_text``), one for a batch (``annotate``), one for
    an Arrow table (``annotate_table``) and one for Parquet files (``annotate_parquet``).
    """

    def __init__(self, folder: str | Path, options: AnnotateOptions = AnnotateOptions()):
        self.folder = Path(folder)
        self.manifest: Manifest = read_manifest(self.folder)
        options = check_options(self.manifest, options)
        if options.batch_tokens is not None and options.batch_tokens < 1:
            raise InputError(f"--batch-tokens must be >= 1, found {options.batch_tokens}")
        self.tokenizer = BundleTokenizer.from_bundle(self.folder, self.manifest)
        kind = graph_kind(self.manifest.dtype, self.manifest.quantization)
        self.session, self.provider = open_session(self.folder / MODEL_NAME, options.provider, options.threads, kind=kind)
        batch_tokens = options.batch_tokens or DEFAULT_BATCH_TOKENS[self.provider]
        self.options = dataclasses.replace(options, batch_tokens=batch_tokens)
        # Called from the inference thread after each batch with (rows, tokens) done: rows are the
        # chunk's rows times the batch's share of the chunk's tokens, so progress moves within a chunk.
        self.on_progress: Callable[[float, int], None] | None = None
        self.reset_cancel()

    def cancel(self) -> None:
        """Stop ``infer`` from another thread: the graph run in flight is terminated, no batch starts."""
        self._cancelled.set()
        self._run_options.terminate = True

    def reset_cancel(self) -> None:
        """Make the annotator usable again after ``cancel`` (once nothing runs)."""
        import onnxruntime as ort

        self._cancelled = threading.Event()
        self._run_options = ort.RunOptions()

    def _run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if self._cancelled.is_set():
            raise Cancelled("annotation cancelled")
        try:
            return run_band(self.session, ids, mask, self._run_options)
        except Exception as exc:  # onnxruntime's own error type for a terminated run
            if self._cancelled.is_set():
                raise Cancelled("annotation cancelled while the graph ran") from exc
            raise

    @classmethod
    def from_bundle(cls, folder: str | Path, **options: Any) -> "Annotator":
        return cls(folder, AnnotateOptions(**options))

    # -- stages ---------------------------------------------------------------------
    def tokenize(self, chunk: Chunk) -> Chunk:
        start = time.perf_counter()
        chunk.tokens = self.tokenizer.encode_flat(chunk.texts)
        chunk.stats.seconds["tokenize"] += time.perf_counter() - start
        return chunk

    def infer(self, chunk: Chunk) -> Chunk:
        """Run the graph over every window of every document, in length-sorted batches.

        Only the candidate spans leave this stage (``chunk.hits``): each batch's band is
        thresholded as soon as it comes out of the graph and then freed.
        """
        start = time.perf_counter()
        opts, tokens = self.options, chunk.tokens
        floor = opts.threshold if opts.keep_candidates is None else min(opts.threshold, opts.keep_candidates)
        win = plan_windows(tokens.lengths, opts.max_tokens, opts.window_overlap)
        chunk.stats.documents_windowed += int(np.count_nonzero(np.bincount(win["doc"], minlength=1) > 1))
        first = tokens.start[win["doc"]] + win["start"]  # flat position of each window's first row
        found, total = [], int(win["length"].sum())
        for batch in plan_batches(win["length"], opts.batch_tokens):
            ids, mask = self._gather(tokens.ids, first[batch], win["length"][batch])
            band = self._run(ids, mask)
            chunk.stats.padded_tokens += ids.size
            found.append(band_hits(band, floor, win["doc"][batch], win["start"][batch], win["own_lo"][batch],
                                   win["own_hi"][batch]))
            if self.on_progress is not None:
                done = int(win["length"][batch].sum())
                self.on_progress(len(chunk.texts) * done / total, done)
        if self.on_progress is not None and total == 0:  # only empty texts
            self.on_progress(len(chunk.texts), 0)
        chunk.stats.tokens += int(win["length"].sum())
        chunk.hits = Hits.concat(found)
        chunk.stats.seconds["infer"] += time.perf_counter() - start
        return chunk

    def _gather(self, flat_ids: np.ndarray, first: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Right-padded ``(input_ids, attention_mask)`` of windows, BOS in column 0 of each."""
        width = int(lengths.max())
        cols = np.arange(width, dtype=np.int64)
        mask = cols[None, :] < lengths[:, None]
        ids = np.where(mask, flat_ids[np.minimum(first[:, None] + cols[None, :], len(flat_ids) - 1)],
                       self.tokenizer.pad_token_id)
        ids[:, 0] = self.tokenizer.bos_token_id
        return ids, mask.astype(np.int64)

    def decode(self, chunk: Chunk) -> Chunk:
        """Candidates to mention columns, for the whole chunk at once."""
        start = time.perf_counter()
        opts, tokens = self.options, chunk.tokens
        chars = ChunkText(chunk.texts)
        hits = chunk.hits
        chosen = hits.above(opts.threshold) if opts.keep_candidates is not None else hits
        if opts.decoding != "threshold":
            chosen = _select_per_document(chosen.sorted(), SELECTORS[opts.decoding])
        chunk.mentions = mentions_column(chosen, chars, tokens.start, tokens.offsets)
        if opts.keep_candidates is not None:
            chunk.candidates = mentions_column(hits.above(opts.keep_candidates), chars, tokens.start, tokens.offsets)
        chunk.stats.mentions += len(chunk.mentions.values)
        chunk.stats.rows += len(chunk.texts)
        chunk.hits = None  # free the spans early
        chunk.stats.seconds["decode"] += time.perf_counter() - start
        return chunk

    def process(self, chunk: Chunk) -> Chunk:
        return self.decode(self.infer(self.tokenize(chunk)))

    # -- public API -----------------------------------------------------------------
    def annotate(self, texts: Sequence[str | None]) -> list[list[Mention]]:
        """Mentions of each text (``None`` gives no mention)."""
        if isinstance(texts, str):
            raise InputError("annotate() takes a sequence of texts; for one string use annotate_text()")
        return mention_lists(self.process(Chunk(texts=list(texts))).mentions)

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


def _select_per_document(hits: Hits, select) -> Hits:
    """Apply a per-document selection (greedy, flat, nested) to spans sorted by document."""
    bounds = np.flatnonzero(np.diff(hits.doc)) + 1
    keep = []
    for lo, hi in zip(np.concatenate([[0], bounds]).tolist(), np.concatenate([bounds, [len(hits)]]).tolist()):
        if hi > lo:
            kept = select((hits.start[lo:hi], hits.end[lo:hi], hits.score[lo:hi]), return_index=True)
            keep.append(lo + kept)
    return hits.take(np.concatenate(keep) if keep else np.zeros(0, np.int64))


def append_results(table: pa.Table, chunk: Chunk) -> pa.Table:
    """Append the result columns of a processed chunk to its rows."""
    table = table.append_column("mentions", chunk.mentions)
    table = table.append_column("n_tokens", pa.array(chunk.tokens.n_tokens.astype(np.int32)))
    if chunk.candidates is not None:
        table = table.append_column("candidates", chunk.candidates)
    return table
