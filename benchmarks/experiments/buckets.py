"""Padding cost of shape buckets on the benchmark corpus (no model needed: only the batch plans).

For each look-ahead pool (``--chunk-rows``) and token budget, the windows of the corpus
are planned exactly as the annotator plans them, three ways: ``exact`` (each batch padded
to its longest window, the CPU default), ``buckets`` (``ShapeBuckets``: lengths rounded up
to the ladder, partial batches padded to power-of-two rows) and ``buckets-full-rows``
(partial batches padded to the full row count, what a single CUDA graph per bucket would
need). Reported: real tokens / padded tokens, and the number of distinct shapes.

    python -m tommer.benchmarks.experiments.buckets --docs 100000 --out benchmarks/results
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from tommer.benchmarks.lib.corpus import token_lengths
from tommer.benchmarks.lib.report import write_report
from tommer.runtime.core.batching import ShapeBuckets, plan_exact
from tommer.runtime.core.windows import plan_windows


def measure(lengths: np.ndarray, chunk_rows: int, batch_tokens: int, max_tokens: int, overlap: int) -> dict:
    real = padded_exact = padded_buckets = padded_full = 0
    shapes: dict[str, set] = {"exact": set(), "buckets": set(), "buckets-full-rows": set()}
    ladder = ShapeBuckets.ladder(max_tokens, batch_tokens)
    for lo in range(0, len(lengths), chunk_rows):
        win = plan_windows(lengths[lo:lo + chunk_rows], max_tokens, overlap)
        wl = win["length"]
        real += int(wl.sum())
        for b in plan_exact(wl, batch_tokens):
            padded_exact += b.rows * b.width
            shapes["exact"].add((b.rows, b.width))
        for b in ladder.plan(wl):
            padded_buckets += b.rows * b.width
            shapes["buckets"].add((b.rows, b.width))
            full = ladder.rows_for(b.width)
            padded_full += full * b.width
            shapes["buckets-full-rows"].add((full, b.width))
    return {"chunk_rows": chunk_rows, "batch_tokens": batch_tokens, "real_tokens": real,
            "efficiency": {"exact": real / padded_exact, "buckets": real / padded_buckets,
                           "buckets-full-rows": real / padded_full},
            "shapes": {k: len(v) for k, v in shapes.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=100_000, help="documents (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed (default: %(default)s)")
    parser.add_argument("--max-tokens", type=int, default=2048, help="window (default: %(default)s)")
    parser.add_argument("--overlap", type=int, default=128, help="window overlap (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=None, help="folder for buckets.json and buckets.md (default: print)")
    args = parser.parse_args()
    lengths = token_lengths(args.docs, args.seed)
    rows = [measure(lengths, c, b, args.max_tokens, args.overlap)
            for c in (2048, 16384) for b in (16384, 65536)]
    lines = [f"Corpus: {args.docs:,} documents, log-normal token counts (median {int(np.median(lengths))}, "
             f"max {int(lengths.max())}), {int(lengths.sum()):,} tokens; windows of {args.max_tokens}.", "",
             "| --chunk-rows | --batch-tokens | exact: real/padded | buckets | buckets, full rows "
             "| shapes exact / buckets / full rows |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        e, s = r["efficiency"], r["shapes"]
        lines.append(f"| {r['chunk_rows']:,} | {r['batch_tokens']:,} | {e['exact']:.3f} | {e['buckets']:.3f} | "
                     f"{e['buckets-full-rows']:.3f} | {s['exact']} / {s['buckets']} / {s['buckets-full-rows']} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        write_report(args.out, "buckets", {"docs": args.docs, "seed": args.seed, "rows": rows},
                     f"Command: `python -m tommer.benchmarks.experiments.buckets --docs {args.docs} "
                     f"--out benchmarks/results`\n\n{text}\n")


if __name__ == "__main__":
    main()
