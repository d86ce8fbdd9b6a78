"""Every annotation option and every default, in one place, resolved once.

``AnnotateOptions`` says how texts become mentions (the options that shape the output, and
how the graph is run); ``RunOptions`` says how files are walked (chunks, host threads,
resume). Both are plain data. ``check_options`` resolves an ``AnnotateOptions`` against a
bundle's manifest without loading a model (``tommer-annotate`` checks every input before
it starts; the Ray engine checks on the driver); ``for_provider`` finishes it once the
provider that loaded is known. ``FLAGS`` holds the command line's spelling of each option,
so that every error names the flag a user types.

This module is a base layer of the runtime: it imports only ``bundle`` and ``errors``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from .bundle import Manifest
from .errors import InputError

STRATEGIES = ("threshold", "greedy", "flat", "nested")  # --decoding
DEFAULT_THRESHOLD = 0.5
# Token budget of a batch, padding included. On CPUs small batches keep activations in
# cache (benchmarks/results: 512 tokens ran faster than 16,384 on the 2-core benchmark
# machine). GPUs need large batches to fill the device.
DEFAULT_BATCH_TOKENS = {"cpu": 512, "cuda": 65536, "tensorrt": 65536}
# Rows per chunk (the pool batches are cut from, and the resume granularity): GPU budgets
# need a large pool (benchmarks/results/buckets.md).
DEFAULT_CHUNK_ROWS = {"cpu": 2048, "cuda": 16384, "tensorrt": 16384}
DEFAULT_RAY_ROWS_PER_BATCH = 2048
DEFAULT_WINDOW_OVERLAP = 128  # tokens shared by consecutive windows, at most a quarter of the window
# Automatic CPU streams (batches run at once, each on its own thread) stop here: more streams
# hold more activations at once for little gain (only measured up to 2 cores).
MAX_AUTO_CPU_STREAMS = 8
MAX_HOST_THREADS = 8
CORES_PER_HOST_THREAD = 4

# The command line's spelling of each option, for messages.
FLAGS = {"decoding": "--decoding", "threshold": "--threshold", "max_tokens": "--max-tokens",
         "window_overlap": "--window-overlap", "keep_candidates": "--keep-candidates", "chunk_rows": "--chunk-rows",
         "columns": "--columns", "text_column": "--text-column", "bundle": "--model (bundle id)",
         "selection": "--limit/--sample/--seed", "batch_tokens": "--batch-tokens", "host_threads": "--host-threads"}


def flag_value(value: Any) -> str:
    """An option's value as a user would pass it (``(not given)`` for None)."""
    if value is None:
        return "(not given)"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items()) or "(every row)"
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_host_threads() -> int:
    """Threads of each host stage (tokenize, decode, write): one per 4 cores this process may use, 1 to 8."""
    return max(1, min(MAX_HOST_THREADS, usable_cores() // CORES_PER_HOST_THREAD))


def default_overlap(max_tokens: int, band_width: int) -> int:
    """128 tokens, or a quarter of the window when that is smaller, never below ``band_width + 1``."""
    return max(band_width + 1, min(DEFAULT_WINDOW_OVERLAP, (max_tokens - 1) // 4))


def check_window_options(max_tokens: int, overlap: int, band_width: int, closing: int = 0) -> None:
    """``closing``: template tokens after every window (encoders' [SEP], </s>), which take room too."""
    content = max_tokens - 1 - closing  # a window's text tokens
    if content <= band_width + 1:
        raise InputError(f"--max-tokens {max_tokens} is too small for this bundle: windows must hold more than "
                         f"the band width + 1 ({band_width + 1}) tokens after BOS"
                         f"{f' and before the {closing} closing token(s)' if closing else ''}, so --max-tokens >= "
                         f"{band_width + 3 + closing}")
    if overlap < band_width + 1:
        raise InputError(f"--window-overlap {overlap} is too small: it must be at least the band width + 1 "
                         f"({band_width + 1}) so that every span fits in a window with its next token")
    if content <= overlap:
        raise InputError(f"--max-tokens {max_tokens} must exceed --window-overlap {overlap} + {1 + closing}")


@dataclass(frozen=True)
class AnnotateOptions:
    """How to annotate (every option that changes the output lives here, and how the graph runs)."""

    decoding: str = "threshold"
    threshold: float = DEFAULT_THRESHOLD
    max_tokens: int | None = None  # tokens per window, BOS included; default from the bundle
    window_overlap: int | None = None  # default: default_overlap(max_tokens, band width)
    batch_tokens: int | None = None  # default per provider: DEFAULT_BATCH_TOKENS
    keep_candidates: float | None = None
    provider: str = "auto"
    threads: int = 0  # CPU threads that run the graph, in all; 0: every usable core
    streams: int = 0  # batches run at once (one session); 0: one per CPU thread (at most 8), 1 on GPUs
    buckets: bool | None = None  # shape buckets; None: on for GPU providers, off on the CPU
    io_binding: bool = True
    cuda_graphs: bool = False
    cache_dir: str | None = None  # TensorRT engine and timing caches; None: providers.default_cache_dir()

    def output_fingerprint(self) -> dict[str, Any]:
        """What decides the output rows (resuming with other values would mix two runs)."""
        return {"decoding": self.decoding, "threshold": self.threshold, "max_tokens": self.max_tokens,
                "window_overlap": self.window_overlap, "keep_candidates": self.keep_candidates}


def check_options(manifest: Manifest, options: AnnotateOptions) -> AnnotateOptions:
    """Validate ``options`` against a bundle without loading its graph; ``max_tokens`` and
    ``window_overlap`` resolved (from the bundle and ``default_overlap``).

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
    if options.batch_tokens is not None and options.batch_tokens < 1:
        raise InputError(f"--batch-tokens must be >= 1, found {options.batch_tokens}")
    if options.streams < 0 or options.threads < 0:
        raise InputError(f"--threads and --streams must be >= 0, found {options.threads} and {options.streams}")
    overlap = options.window_overlap
    if overlap is None:
        overlap = default_overlap(max_tokens, manifest.band_width)
    check_window_options(max_tokens, overlap, manifest.band_width, len(manifest.tokenizer.after_ids))
    return dataclasses.replace(options, max_tokens=max_tokens, window_overlap=overlap)


def stream_threads(provider: str, threads: int, streams: int) -> tuple[int, int]:
    """``(streams, intra-op threads)`` for a session on ``provider``; 0 means automatic for both.

    On the CPU, ``threads`` (0: every usable core) are split among ``streams`` batches that
    run at once on one session (0: one per thread, at most ``MAX_AUTO_CPU_STREAMS``). One
    thread per batch avoids onnxruntime's per-operator thread hand-offs, which dominate the
    small operators of a 512-token batch (``benchmarks/results/streams.md``). GPU providers
    run one stream (the device is shared), ``threads`` as asked.
    """
    if provider != "cpu":
        return streams or 1, threads
    total = threads or usable_cores()
    streams = streams or max(1, min(total, MAX_AUTO_CPU_STREAMS))
    return streams, (threads if streams == 1 else max(1, total // streams))


GPU_PROVIDERS = ("cuda", "tensorrt")


def for_provider(options: AnnotateOptions, provider: str) -> AnnotateOptions:
    """``options`` (already checked) with what depends on the provider that loaded resolved:
    batch budget, shape buckets and streams.

    Raises:
        InputError: for combinations the provider cannot run (CUDA graphs on the CPU, ...).
    """
    gpu = provider in GPU_PROVIDERS
    if options.cuda_graphs and not gpu:
        raise InputError(f"--cuda-graphs needs a GPU provider (cuda or tensorrt); the session runs on {provider}")
    streams, _ = stream_threads(provider, options.threads, options.streams)
    if options.cuda_graphs and streams > 1:
        raise InputError(f"--cuda-graphs needs one stream (a captured graph replays fixed buffers); found --streams {streams}")
    use_buckets = gpu if options.buckets is None else options.buckets
    if options.cuda_graphs and not use_buckets:
        raise InputError("--cuda-graphs needs shape buckets (a fixed set of shapes to capture): drop --no-buckets")
    return dataclasses.replace(options, batch_tokens=options.batch_tokens or DEFAULT_BATCH_TOKENS[provider],
                               buckets=use_buckets, streams=streams)


@dataclass(frozen=True)
class RunOptions:
    """How the engines walk files: chunking, host threads, what to do with existing outputs."""

    text_column: str | None = None  # None: 'text', else the only string column (the summary names it)
    columns: list[str] | None = None  # input columns kept in the output; None: all
    chunk_rows: int | None = None  # None: DEFAULT_CHUNK_ROWS of the provider (rows per Ray actor call with ray)
    host_threads: int = 0  # 0: default_host_threads()
    overwrite: bool = False
    resume: bool = False

    def check(self) -> None:
        if self.host_threads < 0:
            raise InputError(f"--host-threads must be >= 0, found {self.host_threads}")
        if self.overwrite and self.resume:
            raise InputError("--overwrite and --resume exclude each other")
        if self.chunk_rows is not None and self.chunk_rows < 1:
            raise InputError(f"--chunk-rows must be >= 1, found {self.chunk_rows}")

    def for_provider(self, provider: str) -> RunOptions:
        """Checked, with the chunk size and host threads resolved for ``provider``."""
        self.check()
        return dataclasses.replace(
            self, chunk_rows=DEFAULT_CHUNK_ROWS[provider] if self.chunk_rows is None else self.chunk_rows,
            host_threads=self.host_threads or default_host_threads())
