"""Flushing denormals to zero on the CPU, paired: operators alone, then the whole process.

    python benchmarks/experiments/denormals.py BUNDLE [BUNDLE ...] [--rounds 4] [--docs 2000]

1. Operators, one intra-op thread on the calling thread, with and without FTZ/DAZ
   (``runtime/execution/denormals.py``): onnxruntime's ``Attention`` (causal, 8 query and 2 key/value
   heads of 64, the demo backbone's) at a few window shapes, and ``Softmax`` over rows
   with and without a causal mask.
2. Whole process, Parquet to Parquet (``annotate_files``), one annotator per bundle with
   its default streams; rounds alternate "flushed" and "not flushed" (the stream threads'
   modes, ``denormals.flushed`` replaced by a no-op). Reports tokens/s, the paired ratio,
   and whether the two outputs are identical.

Writes ``benchmarks/results/denormals.{json,md}``.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
from onnx import TensorProto, helper

from tommer.benchmarks.lib.corpus import write_corpus
from tommer.benchmarks.lib.machine import with_onnxruntime
from tommer.benchmarks.lib.metrics import alternating_rounds
from tommer.benchmarks.lib.report import RESULTS, write_report
from tommer.benchmarks.lib.runs import whole_process_rate
from tommer.runtime.annotator import Annotator
from tommer.runtime.execution import denormals
from tommer.runtime.execution import session as session_module


def _model(nodes, inputs) -> bytes:
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)], ir_version=10).SerializeToString()


def _time(fn, repeats: int = 20) -> float:
    for _ in range(3):
        fn()
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        runs.append((time.perf_counter() - start) / repeats)
    return statistics.median(runs)


def operators() -> list[dict]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # the graph runs on the calling thread, as with one thread per stream
    rng = np.random.default_rng(0)
    rows = []
    attention = ort.InferenceSession(_model(
        [helper.make_node("Attention", ["q", "k", "v"], ["y"], is_causal=1, q_num_heads=8, kv_num_heads=2)],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["B", "S", d]) for n, d in (("q", 512), ("k", 128), ("v", 128))]),
        options, providers=["CPUExecutionProvider"])
    for b, s in ((16, 32), (8, 64), (4, 128), (1, 512)):
        feed = {n: rng.standard_normal((b, s, d), dtype=np.float32) for n, d in (("q", 512), ("k", 128), ("v", 128))}
        times = {}
        for flushed in (False, True):
            with denormals.flushed() if flushed else contextlib.nullcontext():
                times[flushed] = _time(lambda feed=feed: attention.run(None, feed))
        rows.append({"operator": f"Attention (causal) {b} x {s}", "plain_us": times[False] * 1e6,
                     "flushed_us": times[True] * 1e6, "speedup": times[False] / times[True]})
    softmax = ort.InferenceSession(_model(
        [helper.make_node("Softmax", ["x"], ["y"], axis=-1)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["a", "b"])]), options, providers=["CPUExecutionProvider"])
    x = rng.standard_normal((4096, 512), dtype=np.float32)
    causal = np.triu(np.full((512, 512), np.finfo(np.float32).min, np.float32), 1)[np.arange(4096) % 512]
    for name, data in (("Softmax 4096 x 512, unmasked", x), ("Softmax 4096 x 512, causal mask", x + causal)):
        times = {}
        for flushed in (False, True):
            with denormals.flushed() if flushed else contextlib.nullcontext():
                times[flushed] = _time(lambda data=data: softmax.run(None, {"x": data}))
        rows.append({"operator": name, "plain_us": times[False] * 1e6, "flushed_us": times[True] * 1e6,
                     "speedup": times[False] / times[True]})
    return rows


def _spans(table: pa.Table) -> list[list[tuple[int, int]]]:
    return [[(m["start"], m["end"]) for m in row] for row in table.column("mentions").to_pylist()]


def whole(bundles: list[str], rounds: int, docs: int) -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix="tommer-denormals-"))
    src = write_corpus(work / "corpus.parquet", docs, seed=7)
    real = session_module.denormals.flushed
    rows = []
    for bundle in bundles:
        annotator = Annotator.from_bundle(bundle, provider="cpu")

        def arm(flushed: bool, annotator=annotator):
            def run() -> float:  # the stream threads' modes: flushed, or left as they are
                session_module.denormals.flushed = real if flushed else contextlib.nullcontext
                try:
                    return whole_process_rate(annotator, src, work / f"out-{flushed}.parquet")
                finally:
                    session_module.denormals.flushed = real
            return run

        rates = alternating_rounds({True: arm(True), False: arm(False)}, rounds)
        outputs = {flushed: pq.read_table(work / f"out-{flushed}.parquet") for flushed in (True, False)}
        ratios = [a / b for a, b in zip(rates[True], rates[False])]
        row = {"bundle": bundle, "kind": annotator.manifest.quantization or annotator.manifest.dtype,
               "streams": len(annotator.runners), "plain": rates[False], "flushed": rates[True],
               "plain_median": statistics.median(rates[False]), "flushed_median": statistics.median(rates[True]),
               "paired_ratio_median": statistics.median(ratios), "paired_ratios": ratios,
               "identical_output": outputs[True].equals(outputs[False]),
               "same_spans": _spans(outputs[True]) == _spans(outputs[False])}
        rows.append(row)
        print(f"{bundle}: {row['plain_median']:,.0f} -> {row['flushed_median']:,.0f} tokens/s, "
              f"x{row['paired_ratio_median']:.3f} paired, identical output: {row['identical_output']}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundles", nargs="*")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of the whole-process A/B (default: %(default)s)")
    parser.add_argument("--docs", type=int, default=2000, help="synthetic documents (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default: benchmarks/results)")
    args = parser.parse_args()
    if not denormals.supported():
        raise SystemExit("this platform's floating-point modes cannot be set (runtime/execution/denormals.py): nothing to compare")
    ops = operators()
    for row in ops:
        print(f"{row['operator']}: {row['plain_us']:,.0f} -> {row['flushed_us']:,.0f} us (x{row['speedup']:.2f})", flush=True)
    rows = whole(args.bundles, args.rounds, args.docs)
    command = "python benchmarks/experiments/denormals.py " + " ".join(args.bundles) + f" --rounds {args.rounds} --docs {args.docs}"
    machine = with_onnxruntime()
    lines = [f"Command: `{command}`", "", f"Machine: {machine}", "",
             "Operators, one thread (the calling thread):", "",
             "| operator | not flushed (us) | flushed (us) | speedup |", "| --- | --- | --- | --- |"]
    lines += [f"| {r['operator']} | {r['plain_us']:,.0f} | {r['flushed_us']:,.0f} | {r['speedup']:.2f}x |" for r in ops]
    if rows:
        lines += ["", "Whole process, Parquet to Parquet, paired rounds:", "",
                  "| bundle | streams | not flushed, tokens/s median [min-max] | flushed | x (paired) | identical output |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for r in rows:
            lines.append(f"| {r['kind']} | {r['streams']} | {r['plain_median']:,.0f} [{min(r['plain']):,.0f}-{max(r['plain']):,.0f}] "
                         f"| {r['flushed_median']:,.0f} [{min(r['flushed']):,.0f}-{max(r['flushed']):,.0f}] "
                         f"| {r['paired_ratio_median']:.3f}x | {r['identical_output']} (spans {r['same_spans']}) |")
    write_report(args.out, "denormals", {"command": command, "machine": machine, "operators": ops,
                                         "whole_process": rows}, "\n".join(lines))


if __name__ == "__main__":
    main()
