"""CPU streams, paired: the same bundle run Parquet to Parquet with 1 and with more streams.

    python benchmarks/experiments/streams.py BUNDLE [BUNDLE ...] [--streams 1,2] [--rounds 4] [--docs 2000]

One process, one annotator per stream count (loaded once), runs alternating within each
round so that drift hits all alike; every run annotates the same synthetic corpus (the
generator of ``tommer-bench``) with ``--threads 0`` (every core, split among the streams).
Reports tokens/s (median, min-max), the paired ratio to the first stream count, and
whether the outputs are identical (they must be: streams change only who runs a batch).
Writes ``benchmarks/results/streams.{json,md}``.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

from tommer.benchmarks.lib.corpus import write_corpus
from tommer.benchmarks.lib.machine import with_onnxruntime
from tommer.benchmarks.lib.metrics import alternating_rounds, paired_ratios
from tommer.benchmarks.lib.report import RESULTS, write_report
from tommer.benchmarks.lib.runs import whole_process_rate
from tommer.runtime.annotator import Annotator
from tommer.runtime.options import usable_cores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundles", nargs="+")
    parser.add_argument("--streams", default="1,2", help="stream counts to compare, first is the baseline (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds (default: %(default)s)")
    parser.add_argument("--docs", type=int, default=2000, help="synthetic documents (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default: benchmarks/results)")
    args = parser.parse_args()
    counts = [int(s) for s in args.streams.split(",")]
    work = Path(tempfile.mkdtemp(prefix="tommer-streams-"))
    src = write_corpus(work / "corpus.parquet", args.docs, seed=7)
    rows = []
    for bundle in args.bundles:
        annotators = {n: Annotator.from_bundle(bundle, provider="cpu", streams=n) for n in counts}
        rates = alternating_rounds({n: functools.partial(whole_process_rate, annotators[n], src, work / f"out-{n}.parquet")
                                    for n in counts}, args.rounds)
        outputs = {n: pq.read_table(work / f"out-{n}.parquet") for n in counts}
        base = counts[0]
        for n in counts:
            threads = annotators[n].session.get_session_options().intra_op_num_threads or usable_cores()
            rows.append({"bundle": bundle, "kind": annotators[n].manifest.quantization or annotators[n].manifest.dtype,
                         "streams": n, "threads_per_stream": threads,
                         "tokens_per_second": rates[n], "median": statistics.median(rates[n]),
                         "paired_ratio_median": paired_ratios(rates[n], rates[base])["median"],
                         "identical_output": outputs[n].equals(outputs[base])})
            print(f"{bundle} streams {n}: {rows[-1]['median']:,.0f} tokens/s, x{rows[-1]['paired_ratio_median']:.3f} "
                  f"(paired), identical output: {rows[-1]['identical_output']}", flush=True)
    command = ("python benchmarks/experiments/streams.py " + " ".join(args.bundles)
               + f" --streams {args.streams} --rounds {args.rounds} --docs {args.docs}")
    machine = with_onnxruntime()
    lines = [f"Command: `{command}`", "", f"Machine: {machine}", "",
             "| bundle | streams x threads | tokens/s median [min-max] | x first (paired) | identical output |",
             "| --- | --- | --- | --- | --- |"]
    for row in rows:
        t = row["tokens_per_second"]
        lines.append(f"| {row['kind']} | {row['streams']} x {row['threads_per_stream']} | {row['median']:,.0f} "
                     f"[{min(t):,.0f}-{max(t):,.0f}] | {row['paired_ratio_median']:.2f}x | {row['identical_output']} |")
    write_report(args.out, "streams", {"command": command, "machine": machine, "rows": rows}, "\n".join(lines))


if __name__ == "__main__":
    main()
