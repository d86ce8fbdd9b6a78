"""Where the time goes inside the graph: onnxruntime's profiler, aggregated by operator type.

    python benchmarks/experiments/profile_onnx.py BUNDLE [--docs 500] [--batch-tokens 512]
"""

from __future__ import annotations

import argparse
import collections
import json

import onnxruntime as ort

from tommer.benchmarks.lib.corpus import texts
from tommer.runtime.annotator import Annotator
from tommer.runtime.core.chunk import Chunk
from tommer.runtime.execution.session import GraphRunner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle")
    parser.add_argument("--docs", type=int, default=500, help="synthetic documents (default: %(default)s)")
    parser.add_argument("--batch-tokens", type=int, default=512, help="token budget (default: %(default)s)")
    args = parser.parse_args()
    annotator = Annotator.from_bundle(args.bundle, provider="cpu", batch_tokens=args.batch_tokens)
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    annotator.session = ort.InferenceSession(str(annotator.folder / "model.onnx"), options,
                                             providers=["CPUExecutionProvider"])
    annotator.runners = [GraphRunner(annotator.session, "cpu")]  # one stream: per-operator times undisturbed
    chunk = annotator.infer(annotator.tokenize(Chunk(texts=texts(args.docs, seed=5))))
    trace = annotator.session.end_profiling()
    by_op: collections.Counter = collections.Counter()
    for event in json.load(open(trace)):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            by_op[event["args"]["op_name"]] += event["dur"]
    total = sum(by_op.values())
    print(f"{chunk.stats.tokens} tokens, padding {chunk.stats.padding_fraction:.1%}, infer {chunk.stats.seconds['infer']:.2f} s, "
          f"kernel time {total / 1e6:.2f} s")
    for op, us in by_op.most_common(15):
        print(f"{op:28s} {us / 1e6:7.3f} s  {us / total:6.1%}")


if __name__ == "__main__":
    main()
