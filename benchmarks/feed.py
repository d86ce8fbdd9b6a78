"""The host feed benchmark: how fast the whole process moves tokens when the model costs nothing.

On a GPU the model is no longer the slow part: the host must read, tokenize, batch,
decode and write at the GPU's rate. This benchmark measures that host side alone:

- a **feed bundle**: a real bundle (manifest, tokenizer, ONNX graph, run by onnxruntime
  through the unchanged annotator) whose graph is a near-free ``Gather`` of a random
  per-token table times the attention mask: ``band[b, i, o] = table[ids[b, i], o]``. The
  table's cells are above the threshold with a probability that falls with the span
  length, so the mention density is controlled (about 0.5 mentions per token by default,
  reported as measured);
- a corpus with realistic text: Zipf-distributed pseudo-words (so a byte-level BPE splits
  them into subwords), names, numbers, punctuation, accents and a little emoji; log-normal
  lengths (median about 60 tokens, tail to about 2,000);
- in each round, on the same cores (``taskset``): the bundle's Rust tokenizer alone
  (``encode_batch`` over the same texts, in chunks of the same size), and the whole
  ``tommer-annotate`` process, Parquet to Parquet, in a fresh process; their ratio, the
  per-stage seconds and the peak RSS.

The bundle is ``lib/models.build_feed_bundle``, the corpus ``lib/corpus.feed_corpus`` (the ``feed``
mix), the report ``lib/report.write_report``; this module is the face that ``tommer-bench-feed``
calls and that runs its own children (``python -m tommer.benchmarks.feed KIND ARGS``).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .lib.corpus import feed_corpus
from .lib.models import build_feed_bundle
from .lib.report import write_report


# -- measured in child processes -----------------------------------------------------------
def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def tokenizer_child(bundle: str, corpus: str, chunk_rows: int) -> dict[str, Any]:
    """The raw rate: the bundle's Rust tokenizer on the corpus's texts, in chunks (Parquet read not timed)."""
    import pyarrow.parquet as pq
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(bundle) / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    tokens, seconds = 0, 0.0
    for batch in pq.ParquetFile(corpus).iter_batches(batch_size=chunk_rows, columns=["text"]):
        texts = [t for t in batch.column(0).to_pylist() if t is not None]
        start = time.perf_counter()
        encodings = tok.encode_batch(texts, add_special_tokens=False)
        tokens += sum(len(e.ids) for e in encodings)
        seconds += time.perf_counter() - start
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds, "peak_rss_mb": _peak_rss_mb()}


def annotate_child(bundle: str, corpus: str, output: str, options: dict[str, Any]) -> dict[str, Any]:
    """The whole annotation, Parquet to Parquet, as ``tommer-annotate`` runs it."""
    from tommer.runtime.annotator import Annotator
    from tommer.runtime.engines.local import annotate_files
    from tommer.runtime.options import AnnotateOptions

    begin = time.perf_counter()
    chunk_rows, host_threads = options.pop("chunk_rows"), options.pop("host_threads", 0)
    annotator = Annotator(bundle, AnnotateOptions(**options))
    summary = annotate_files(annotator, corpus, output, chunk_rows=chunk_rows, overwrite=True, host_threads=host_threads)
    s = summary.stats
    return {"tokens": s.tokens - s.rows, "rows": s.rows, "mentions": s.mentions, "seconds": summary.elapsed,
            "process_seconds": time.perf_counter() - begin, "stage_seconds": s.seconds,
            "padding": s.padding_fraction, "peak_rss_mb": _peak_rss_mb()}


def run_child(kind: str, cores: str | None, *args: Any) -> dict[str, Any]:
    """Run a measurement in a fresh process, pinned to ``cores`` (``taskset`` list) when given."""
    cmd = [sys.executable, "-m", "tommer.benchmarks.feed", kind, json.dumps(args)]
    if cores:
        cmd = ["taskset", "-c", cores] + cmd
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"feed child {kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    kind, args = sys.argv[1], json.loads(sys.argv[2])
    fn = {"tokenizer": tokenizer_child, "annotate": annotate_child}[kind]
    print(json.dumps(fn(*args)))


if __name__ == "__main__":
    main()


# -- the command ----------------------------------------------------------------------------
def _corpus(work: Path, tokens: int, seed: int) -> Path:
    return feed_corpus(work / f"feed-corpus-{tokens}-{seed}.parquet", tokens, seed)


def _median(xs: list[float]) -> float:
    return float(np.median(xs)) if xs else float("nan")


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# Host feed benchmark ({result['machine']})", "",
             f"Feed bundle (near-free `Gather` graph), corpus {result['corpus']['tokens']:,} tokens in "
             f"{result['corpus']['rows']:,} rows, threshold {result['threshold']}, "
             f"{result['mentions_per_token']:.2f} mentions per token, `--batch-tokens {result['batch_tokens']}`, "
             f"`--chunk-rows {result['chunk_rows']}`; {result['repeats']} rounds, tokenizer and annotation alternating "
             "in fresh processes; medians.", "",
             "| cores | raw tokenizer tokens/s | tommer-annotate tokens/s (Parquet to Parquet) | feed ratio | "
             "read | tokenize | infer | decode | write (stage s, overlapping) | peak RSS |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in result["scaling"]:
        st = row["stage_seconds"]
        lines.append(f"| {row['cores']} | {row['tokenizer_tokens_per_s']:,.0f} | {row['annotate_tokens_per_s']:,.0f} | "
                     f"**{row['ratio']:.2f}** (min {row['ratio_min']:.2f}) | {st['read']:.1f} | {st['tokenize']:.1f} | "
                     f"{st['infer']:.1f} | {st['decode']:.1f} | {st['write']:.1f} | {row['peak_rss_mb']:.0f} MB |")
    if result.get("memory"):
        lines += ["", "Peak RSS against corpus size (one run each, all cores):", "",
                  "| corpus tokens | rows | tokens/s | peak RSS |", "| --- | --- | --- | --- |"]
        for row in result["memory"]:
            lines.append(f"| {row['tokens']:,} | {row['rows']:,} | {row['tokens_per_s']:,.0f} | {row['peak_rss_mb']:.0f} MB |")
    return "\n".join(lines) + "\n"


def feed_main(
    work: Path, out: Path, tokens: int, memory_tokens: list[int], cores: list[str], repeats: int,
    threshold: float, batch_tokens: int, chunk_rows: int, host_threads: int, seed: int,
) -> dict[str, Any]:
    """Run the feed benchmark; returns the result written to ``out/feed.json`` and ``out/feed.md``."""
    from .lib.machine import machine_summary

    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    log = lambda msg: print(f"[feed] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    log(f"bundle and corpus in {work} (built once)")
    bundle = str(build_feed_bundle(work / "feed-bundle"))
    corpus = _corpus(work, tokens, seed)
    options = dict(threshold=threshold, batch_tokens=batch_tokens, chunk_rows=chunk_rows, host_threads=host_threads)
    output = str(work / "feed-out.parquet")
    runs: dict[str, list[tuple[dict, dict]]] = {c: [] for c in cores}
    for r in range(repeats):
        for c in cores:
            tok = run_child("tokenizer", c, bundle, str(corpus), chunk_rows)
            ann = run_child("annotate", c, bundle, str(corpus), output, dict(options))
            runs[c].append((tok, ann))
            log(f"round {r + 1}/{repeats}, cores {c}: tokenizer {tok['tokens_per_s']:,.0f} tokens/s, annotate "
                f"{ann['tokens'] / ann['seconds']:,.0f} tokens/s, ratio {ann['tokens'] / ann['seconds'] / tok['tokens_per_s']:.2f}")
    scaling = []
    for c, pairs in runs.items():
        ratios = [a["tokens"] / a["seconds"] / t["tokens_per_s"] for t, a in pairs]
        scaling.append({
            "cores": c, "n_cores": len(c.split(",")) if c else os.cpu_count(),
            "tokenizer_tokens_per_s": _median([t["tokens_per_s"] for t, _ in pairs]),
            "annotate_tokens_per_s": _median([a["tokens"] / a["seconds"] for _, a in pairs]),
            "annotate_process_tokens_per_s": _median([a["tokens"] / a["process_seconds"] for _, a in pairs]),
            "ratio": _median(ratios), "ratio_min": min(ratios), "ratios": ratios,
            "stage_seconds": {k: _median([a["stage_seconds"][k] for _, a in pairs]) for k in pairs[0][1]["stage_seconds"]},
            "peak_rss_mb": max(a["peak_rss_mb"] for _, a in pairs),
        })
    first = runs[cores[0]][0][1]
    memory = []
    for n in memory_tokens:
        path = _corpus(work, n, seed + 1)
        log(f"peak RSS at {n:,} tokens")
        ann = run_child("annotate", None, bundle, str(path), output, dict(options))
        memory.append({"tokens": ann["tokens"], "rows": ann["rows"], "tokens_per_s": ann["tokens"] / ann["seconds"],
                       "peak_rss_mb": ann["peak_rss_mb"]})
    import pyarrow.parquet as pq

    result = {
        "machine": machine_summary(),
        "corpus": {"rows": pq.ParquetFile(corpus).metadata.num_rows, "tokens": first["tokens"]},
        "threshold": threshold, "batch_tokens": batch_tokens, "chunk_rows": chunk_rows, "host_threads": host_threads,
        "repeats": repeats, "mentions_per_token": first["mentions"] / first["tokens"], "padding": first["padding"],
        "raw_tokenizer": "tokenizers.Tokenizer.encode_batch (offsets included, as the annotator needs them), "
                         "chunks of --chunk-rows texts, Parquet reading not timed",
        "annotate": "annotate_files in a fresh process: read, tokenize, infer, decode, write parts, join the output",
        "scaling": scaling, "memory": memory,
    }
    files = write_report(out, "feed", result, markdown(result))
    log(f"wrote {' and '.join(map(str, files))}")
    return result
