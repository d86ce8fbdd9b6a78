"""Which int8 form to export: onnxruntime's CPU int8 kernels against fp32, one linear layer.

    python benchmarks/experiments/int8_kernels.py [--out benchmarks/results]

For each shape of the demo model's linear layers (hidden 512, MLP 2048) it times, on
the CPU provider and in one process, a ``MatMul`` by a constant weight in four forms:

* ``fp32``: the plain MatMul;
* ``nbits``: ``MatMulNBits`` (8 bits, blocks of 32, accuracy level 4: activations int8
  per block of each row), as onnxruntime's ``MatMulNBitsQuantizer`` writes it;
* ``dynamic``: ``quantize_dynamic`` (per-channel int8 weights, one activation scale per
  tensor, fused by onnxruntime into ``DynamicQuantizeMatMul``);
* ``row``: what ``tommer-export --quantize int8`` writes (``exporter/rewrites/int8.py:
  quantize_int8``): one activation scale per row, ``MatMulIntegerToFloat``.

and reports GFLOP/s, the error against fp32, and batch invariance: the largest change
of the first rows' result when they run alone instead of with the rest of the batch.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

SHAPES = ((8192, 512, 2048), (8192, 2048, 512))  # (tokens, K, N): q/gate/up-like, down-like


def _matmul_model(weight: np.ndarray):
    import onnx_ir as ir

    x = ir.Value(name="x", type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape(["m", weight.shape[0]]))
    w = ir.Value(name="w", const_value=ir.tensor(weight, name="w"))
    node = ir.node("MatMul", inputs=[x, w])
    node.outputs[0].name = "y"
    node.outputs[0].dtype, node.outputs[0].shape = ir.DataType.FLOAT, ir.Shape(["m", weight.shape[1]])
    graph = ir.Graph(inputs=[x], outputs=[node.outputs[0]], nodes=[node], initializers=[w],
                     opset_imports={"": 21}, name="linear")
    return ir.Model(graph, ir_version=10)


def build_variants(weight: np.ndarray, folder: Path) -> dict[str, Path]:
    import onnx
    import onnx_ir as ir
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    from tommer.exporter.rewrites import quantize_int8
    from tommer.exporter.spec import ExportSpec

    paths = {name: folder / f"{name}.onnx" for name in ("fp32", "nbits", "dynamic", "row")}
    ir.save(_matmul_model(weight), paths["fp32"])
    nbits = MatMulNBitsQuantizer(onnx.load(paths["fp32"]), bits=8, block_size=32, is_symmetric=True,
                                 accuracy_level=4)
    nbits.process()
    nbits.model.save_model_to_file(str(paths["nbits"]))
    quantize_dynamic(paths["fp32"], paths["dynamic"], weight_type=QuantType.QInt8, per_channel=True)
    row = _matmul_model(weight)
    quantize_int8(row, ExportSpec())
    ir.save(row, paths["row"])
    return paths


def measure(path: Path, x: np.ndarray, repeats: int, threads: int) -> tuple[np.ndarray, float, float]:
    from tommer.runtime.execution.session import create_session

    session = create_session(path, "cpu", threads)  # tommer's session options (x64quantprecision where needed)
    y = session.run(None, {"x": x})[0]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, {"x": x})
        times.append(time.perf_counter() - start)
    alone = session.run(None, {"x": np.ascontiguousarray(x[:64])})[0]
    return y, statistics.median(times), float(np.abs(alone - y[:64]).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="folder for int8_kernels.{json,md}")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per form (median)")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime threads; 0: all cores")
    args = parser.parse_args()
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    rows = []
    for m, k, n in SHAPES:
        weight = (rng.standard_normal((k, n)) * 0.05).astype(np.float32)
        # rows of very different magnitudes, as tokens are: a shared scale serves them badly
        x = (rng.standard_normal((m, k)) * rng.uniform(0.1, 10.0, (m, 1))).astype(np.float32)
        with tempfile.TemporaryDirectory() as tmp:
            paths = build_variants(weight, Path(tmp))
            exact = None
            for name, path in paths.items():
                y, seconds, drift = measure(path, x, args.repeats, args.threads)
                exact = y if exact is None else exact
                rel = float(np.abs(y - exact).max() / np.abs(exact).max())
                rows.append({"tokens": m, "k": k, "n": n, "form": name, "seconds": seconds,
                             "gflops": 2 * m * k * n / seconds / 1e9, "max_rel_error": rel,
                             "batch_invariance_max_abs_diff": drift})
    for row in rows:
        base = next(r for r in rows if r["k"] == row["k"] and r["n"] == row["n"] and r["form"] == "fp32")
        row["x_fp32"] = base["seconds"] / row["seconds"]
    from tommer.benchmarks.lib.machine import cpu_model
    from tommer.benchmarks.lib.report import write_report
    from tommer.runtime.execution.session import VNNI_FLAGS, cpu_flags, int8_needs_exact_mode

    try:
        flags = cpu_flags()
    except OSError:
        flags = []
    int8_flags = [f for f in VNNI_FLAGS if f in flags] or ["none"]
    machine = (f"{cpu_model()}, {os.cpu_count()} cores, integer dot-product flags: {', '.join(int8_flags)}"
               f"{'; exact uint8 x uint8 mode on' if int8_needs_exact_mode() else ''}")
    lines = ["Command: `python benchmarks/experiments/int8_kernels.py`", "", f"onnxruntime {ort.__version__}; {machine}", "",
             "| tokens x K x N | form | GFLOP/s | x fp32 | max rel. error | batch invariance (max abs diff) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['tokens']} x {r['k']} x {r['n']} | {r['form']} | {r['gflops']:.0f} | {r['x_fp32']:.2f}x | "
                     f"{r['max_rel_error']:.2g} | {r['batch_invariance_max_abs_diff']:.2g} |")
    write_report(args.out, "int8_kernels", {"onnxruntime": ort.__version__, "machine": machine, "rows": rows},
                 "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
