"""``Annotator``: texts in, mentions out, through a bundle's one ONNX graph.

The core owns no file I/O and imports no adapter: files, ``datasets``, pandas and spaCy are
reached through ``tommer.runtime.annotator.Annotator`` (the public class, a subclass that
adds them) or through the engines and integrations directly."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..bundle import MODEL_NAME, Manifest, read_manifest
from ..errors import BundleError, Cancelled, InputError
from ..execution.providers import Settings, graph_kind, tensorrt_profiles
from ..execution.session import GraphRunner, graph_run_error, is_onnxruntime_error, open_session
from ..options import DEFAULT_BATCH_TOKENS, AnnotateOptions, check_options, for_provider, stream_threads
from .batching import ShapeBuckets, plan_exact
from .chunk import Annotated, Chunk, Inferred, Tokenized
from .columns import append_results, column_at, resolve_text_column, texts_of
from .decoding import SELECTORS
from .mentions import Mention, mention_lists
from .partial import Progress
from .spans import ChunkText, Hits, band_hits, mentions_column
from .tokenization import BundleTokenizer
from .windows import plan_windows


class Annotator:
    """Annotate texts with a bundle made by ``tommer-export``.

    One call for one text (``annotate_text``), one for a batch (``annotate``), one for an Arrow
    table (``annotate_table``); the stages (``tokenize``, ``infer``, ``decode``) for the engines.
    """

    def __init__(self, folder: str | Path, options: AnnotateOptions = AnnotateOptions()):
        self.folder = Path(folder)
        self.manifest: Manifest = read_manifest(self.folder)
        options = check_options(self.manifest, options)
        assert options.max_tokens is not None and options.window_overlap is not None  # resolved by check_options
        self.max_tokens, self.window_overlap = options.max_tokens, options.window_overlap
        self.tokenizer = BundleTokenizer.from_bundle(self.folder, self.manifest)
        kind = graph_kind(self.manifest.dtype, self.manifest.quantization)
        # TensorRT's optimization profiles come from the GPU buckets, known before the session
        gpu_buckets = ShapeBuckets.ladder(self.max_tokens, options.batch_tokens or DEFAULT_BATCH_TOKENS["tensorrt"])
        settings = Settings(cache_dir=Path(options.cache_dir) if options.cache_dir else None,
                            bundle_id=self.manifest.bundle_id, cuda_graphs=options.cuda_graphs,
                            profiles=tensorrt_profiles(gpu_buckets.shapes(), self.manifest.input_names))

        def intra(provider: str) -> int:  # the split of --threads for the provider being tried
            return stream_threads(provider, options.threads, options.streams)[1]

        self.session, self.provider = open_session(self.folder / MODEL_NAME, options.provider, intra, kind=kind,
                                                   settings=settings, tensorrt_ready=self.manifest.graph.tensorrt_ready,
                                                   exported_with=self.manifest.library_versions.get("onnxruntime"))
        self.options = for_provider(options, self.provider)
        assert self.options.batch_tokens is not None  # resolved by for_provider
        self.batch_tokens, streams = self.options.batch_tokens, self.options.streams
        self.buckets = ShapeBuckets.ladder(self.max_tokens, self.batch_tokens) if self.options.buckets else None
        self._given = options  # pickled as given: another machine resolves streams and budgets for itself
        # one runner (IO-binding buffers) per stream; a stream takes a free runner for each batch
        self.runners = [GraphRunner(self.session, self.provider, io_binding=options.io_binding,
                                    cuda_graphs=options.cuda_graphs,
                                    graph_shapes=self.buckets.shapes() if self.buckets else None,
                                    input_names=(self.manifest.input_names[0], self.manifest.input_names[1]))
                        for _ in range(streams)]
        self._pool: ThreadPoolExecutor | None = None
        # Called from the inference thread after each batch with (rows, tokens) done: rows are the
        # chunk's rows times the batch's share of the chunk's tokens, so progress moves within a chunk.
        self.on_progress: Callable[[float, int], None] | None = None
        self.reset_cancel()

    @property
    def runner(self) -> GraphRunner:
        """The first stream's runner (the only one with ``streams=1``)."""
        return self.runners[0]

    def cancel(self) -> None:
        """Stop ``infer`` from another thread: the graph runs in flight are terminated, no batch starts."""
        self._cancelled.set()
        for runner in self.runners:
            runner.terminate()

    def reset_cancel(self) -> None:
        """Make the annotator usable again after ``cancel`` (once nothing runs)."""
        self._cancelled = threading.Event()
        for runner in self.runners:
            runner.reset()

    def _run(self, runner: GraphRunner, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if self._cancelled.is_set():
            raise Cancelled("annotation cancelled")
        try:
            return runner.run(ids, mask)
        except Exception as exc:  # onnxruntime's own error type for a terminated run
            if self._cancelled.is_set():
                raise Cancelled("annotation cancelled while the graph ran") from exc
            if is_onnxruntime_error(exc) or isinstance(exc, (MemoryError, RuntimeError)):
                raise graph_run_error(exc, ids.shape, self.provider, self.options.batch_tokens) from exc
            raise

    @classmethod
    def from_bundle(cls, folder: str | Path, **options: Any) -> Annotator:
        return cls(folder, AnnotateOptions(**options))

    # -- stages ---------------------------------------------------------------------
    def tokenize(self, chunk: Chunk) -> Tokenized:
        start = time.perf_counter()
        tokens = self.tokenizer.encode_flat(chunk.texts)
        chunk.stats.seconds["tokenize"] += time.perf_counter() - start
        return Tokenized(**chunk.carried(), tokens=tokens)

    def infer(self, chunk: Tokenized) -> Inferred:
        """Run the graph over every window of every document, in length-sorted batches.

        Only the candidate spans leave this stage (``chunk.hits``): each batch's band is
        thresholded as soon as it comes out of the graph and then freed. With several
        streams, that many batches run at once (one runner each); results are taken in
        batch order, so the output does not depend on the number of streams.

        ``chunk.partial`` (a ``partial.Partial`` of this chunk, from an interrupted run): its
        windows are not run again and their hits are merged. On return, and also when a batch
        fails or the run is cancelled, ``chunk.partial`` holds every window done so far and its
        hits, for the caller to keep (the local engine saves it on an interrupt).
        """
        start = time.perf_counter()
        opts, tokens = self.options, chunk.tokens
        floor = opts.threshold if opts.keep_candidates is None else min(opts.threshold, opts.keep_candidates)
        closing = len(self.tokenizer.after_ids)  # every window gets the closing tokens too: room for them
        win = plan_windows(tokens.lengths, self.max_tokens - closing, self.window_overlap)
        chunk.stats.documents_windowed += int(np.count_nonzero(np.bincount(win["doc"], minlength=1) > 1))
        first = tokens.start[win["doc"]] + win["start"]  # flat position of each window's first row
        lengths = win["length"] + closing  # fed: BOS, the window's tokens, the closing tokens
        total = int(lengths.sum())
        progress = Progress(win, len(chunk.texts), floor, chunk.partial)
        planned = list(self.buckets.plan(lengths) if self.buckets else plan_exact(lengths, self.batch_tokens))
        batches = progress.todo(planned, lengths, exact=self.buckets is None)
        skipped = total - sum(int(lengths[b.index].sum()) for b in batches)  # tokens done before a resume
        free: queue.SimpleQueue[GraphRunner] = queue.SimpleQueue()  # runners not in use (one per stream)
        for runner in self.runners:
            free.put(runner)

        def run_batch(batch) -> tuple[int, Hits]:
            rows = batch.index
            ids, mask = self._gather(tokens.ids, first[rows], lengths[rows], batch.rows, batch.width)
            runner = free.get()
            try:  # the band lives in the runner's buffers: threshold it before handing the runner back
                band = self._run(runner, ids, mask)[: len(rows)]
                return ids.size, band_hits(band, floor, win["doc"][rows], win["start"][rows], win["own_lo"][rows],
                                           win["own_hi"][rows])
            finally:
                free.put(runner)

        futures = None
        if len(self.runners) > 1 and len(batches) > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(len(self.runners), thread_name_prefix="tommer-stream")
            futures = [self._pool.submit(run_batch, b) for b in batches]
        taken = 0
        try:
            if self.on_progress is not None and skipped:
                self.on_progress(len(chunk.texts) * skipped / total, 0)
            for batch in batches:
                padded, hits = futures[taken].result() if futures else run_batch(batch)
                taken += 1
                chunk.stats.padded_tokens += padded
                progress.add(batch.index, hits)
                if self.on_progress is not None:
                    done = int(lengths[batch.index].sum())
                    self.on_progress(len(chunk.texts) * done / total, done)
        except BaseException:
            if futures:  # keep the batches other streams finished; the pending ones are cancelled
                _finished_after_failure(batches[taken:], futures[taken:], progress)
            raise
        finally:
            chunk.partial = progress.partial()  # the caller's record holds it even when this raises
        if self.on_progress is not None and total == 0:  # only empty texts
            self.on_progress(len(chunk.texts), 0)
        chunk.stats.tokens += total - skipped
        chunk.stats.seconds["infer"] += time.perf_counter() - start
        kept = chunk.partial  # set in the finally above: every window of the chunk, with its hits
        assert kept is not None
        return Inferred(**chunk.carried(), tokens=tokens, hits=kept.hits)

    def _gather(self, flat_ids: np.ndarray, first: np.ndarray, lengths: np.ndarray, rows: int | None = None,
                width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Right-padded ``(input_ids, attention_mask)`` of windows, BOS in column 0 of each and the
        closing template tokens (``[SEP]``, ``</s>``) at the end of each (``lengths`` counts them).

        ``rows`` and ``width`` (a bucket's shape) pad further: empty rows are all padding, mask 0.
        """
        width = int(lengths.max()) if width is None else width
        if rows is not None and rows > len(lengths):
            first = np.concatenate([first, np.zeros(rows - len(lengths), dtype=first.dtype)])
            lengths = np.concatenate([lengths, np.zeros(rows - len(lengths), dtype=lengths.dtype)])
        cols = np.arange(width, dtype=np.int64)
        mask = cols[None, :] < lengths[:, None]
        ids = np.where(mask, flat_ids[np.minimum(first[:, None] + cols[None, :], len(flat_ids) - 1)],
                       self.tokenizer.pad_token_id)
        ids[:, 0] = self.tokenizer.bos_token_id
        after = self.tokenizer.after_ids
        if after:
            real = np.flatnonzero(lengths > 0)
            for k, token in enumerate(after):
                ids[real, lengths[real] - len(after) + k] = token
        return ids, mask.astype(np.int64)

    def decode(self, chunk: Inferred) -> Annotated:
        """Candidates to mention columns, for the whole chunk at once."""
        start = time.perf_counter()
        opts, tokens = self.options, chunk.tokens
        chars = ChunkText(chunk.texts)
        hits = chunk.hits
        chosen = hits.above(opts.threshold) if opts.keep_candidates is not None else hits
        if opts.decoding != "threshold":
            chosen = _select_per_document(chosen.sorted(), SELECTORS[opts.decoding])
        mentions = mentions_column(chosen, chars, tokens.start, tokens.offsets)
        candidates = None
        if opts.keep_candidates is not None:
            candidates = mentions_column(hits.above(opts.keep_candidates), chars, tokens.start, tokens.offsets)
        chunk.stats.mentions += len(mentions.values)
        chunk.stats.rows += len(chunk.texts)
        chunk.stats.seconds["decode"] += time.perf_counter() - start
        return Annotated(**chunk.carried(), tokens=tokens, mentions=mentions, candidates=candidates)

    def process(self, chunk: Chunk) -> Annotated:
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
        column = resolve_text_column(table.schema, text_column, "<table>")
        chunk = self.process(Chunk(texts=texts_of(column_at(table, column), "<table>", column)))
        return append_results(table, chunk)

    def __reduce__(self):
        """Pickled as (folder, options as given, bundle id): ``datasets`` can hash it and send it to workers.

        Options left automatic (streams, batch budget, buckets) stay automatic: a worker on
        another machine resolves them for its own cores and provider."""
        return _reload, (type(self), str(self.folder), self._given, self.manifest.bundle_id)


def _reload(cls: type[Annotator], folder: str, options: AnnotateOptions, bundle_id: str) -> Annotator:
    annotator = cls(folder, options)
    if annotator.manifest.bundle_id != bundle_id:
        raise BundleError(f"{folder}: the bundle changed since this annotator was pickled "
                          f"(bundle id {bundle_id}, now {annotator.manifest.bundle_id})")
    return annotator


def _finished_after_failure(batches: list, futures: list[Future], progress: Progress) -> None:
    """After a failed or cancelled batch: cancel the batches not started, wait for those in flight, and
    record the ones that finished (other streams may have finished batches after the failed one)."""
    for future in futures:
        future.cancel()
    wait(futures)
    for batch, future in zip(batches, futures):
        if not future.cancelled() and future.exception() is None:
            progress.add(batch.index, future.result()[1])


def _select_per_document(hits: Hits, select) -> Hits:
    """Apply a per-document selection (greedy, flat, nested) to spans sorted by document."""
    bounds = np.flatnonzero(np.diff(hits.doc)) + 1
    keep = []
    for lo, hi in zip(np.concatenate([[0], bounds]).tolist(), np.concatenate([bounds, [len(hits)]]).tolist()):
        if hi > lo:
            kept = select((hits.start[lo:hi], hits.end[lo:hi], hits.score[lo:hi]), return_index=True)
            keep.append(lo + kept)
    return hits.take(np.concatenate(keep) if keep else np.zeros(0, np.int64))

