"""--quantize int8: one linear layer rewritten by ``quantize_int8``, against numpy's fp32 product."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from tommer.benchmarks.experiments.int8_kernels import _matmul_model
from tommer.exporter.rewrites.int8 import quantize_int8
from tommer.exporter.spec import ExportSpec
from tommer.runtime.execution.session import create_session

K, N = 64, 48


@pytest.fixture(scope="module")
def layer(tmp_path_factory):
    rng = np.random.default_rng(7)
    weight = (rng.standard_normal((K, N)) * 0.05).astype(np.float32)
    weight[:, 3] = 0.0  # a dead output column must not divide by zero
    model = _matmul_model(weight)
    counts = quantize_int8(model, ExportSpec())
    path = tmp_path_factory.mktemp("int8") / "linear.onnx"
    ir.save(model, path)
    return weight, path, counts, model


def test_graph_form(layer):
    _, _, counts, model = layer
    ops = [n.op_type for n in model.graph]
    assert counts == {"MatMulIntegerToFloat": 1, "quantized_inputs": 1, "rescales_left_out": 0}
    assert "MatMul" not in ops and ops.count("MatMulIntegerToFloat") == 1
    assert [v.name for v in model.graph.outputs] == ["y"]  # the output keeps its name
    w8 = next(v for v in model.graph.initializers.values() if v.name.endswith(".int8")).const_value.numpy()
    assert w8.dtype == np.int8 and np.abs(w8).max() == ExportSpec().int8_weight_max  # full range per column
    assert "w" not in model.graph.initializers  # the fp32 weight is gone


def test_close_to_fp32_and_batch_invariant(layer):
    weight, path, _, _ = layer
    rng = np.random.default_rng(8)
    # rows of magnitudes 1e-3 .. 1e3 together: one scale per tensor would flatten the small ones to 0
    scales = np.logspace(-3, 3, 40, dtype=np.float32)[:, None]
    x = (rng.standard_normal((40, K)) * scales).astype(np.float32)
    session = create_session(path, "cpu")
    y = session.run(None, {"x": x})[0]
    exact = x @ weight
    row_error = np.abs(y - exact).max(axis=1) / np.abs(exact).max(axis=1)
    assert row_error.max() < 0.03  # 8-bit activations and weights, per row and per column
    assert np.all(y[:, 3] == 0.0)
    # each row alone, and in another order, gives bit-identical results
    for i in (0, 17, 39):
        alone = session.run(None, {"x": x[i:i + 1]})[0]
        assert np.array_equal(alone[0], y[i])
    order = rng.permutation(40)
    assert np.array_equal(session.run(None, {"x": x[order]})[0], y[order])


def test_zero_rows_stay_finite(layer):
    _, path, _, _ = layer
    session = create_session(path, "cpu")
    y = session.run(None, {"x": np.zeros((3, K), np.float32)})[0]
    assert np.all(y == 0.0)


@pytest.mark.parametrize("flags,exact", [("fpu sse4_2 avx2 fma", True), ("avx2 avx512f avx512_vnni", False),
                                         ("avx2 avx_vnni", False), ("avx512f amx_tile amx_int8", False)])
def test_exact_int8_mode_only_without_vnni(tmp_path, monkeypatch, layer, flags, exact):
    from tommer.runtime.execution import session as session_module

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\nbugs\t\t: none\n")
    monkeypatch.setattr(session_module.platform, "machine", lambda: "x86_64")
    assert session_module.int8_needs_exact_mode.__wrapped__(str(cpuinfo)) is exact
    assert session_module.int8_needs_exact_mode.__wrapped__(str(tmp_path / "missing")) is True
    monkeypatch.setattr(session_module.platform, "machine", lambda: "aarch64")
    assert session_module.int8_needs_exact_mode.__wrapped__(str(cpuinfo)) is False
    # the session carries onnxruntime's option exactly when the CPU needs it
    monkeypatch.setattr(session_module, "int8_needs_exact_mode", lambda: exact)
    options = create_session(layer[1], "cpu").get_session_options()
    if exact:
        assert options.get_session_config_entry("session.x64quantprecision") == "1"
    else:
        with pytest.raises(RuntimeError, match="does not have configuration"):
            options.get_session_config_entry("session.x64quantprecision")


def test_saved_graph_does_not_point_into_a_deleted_folder(tmp_path):
    """The traced graph's weights live in a scratch folder's ``.data`` file; once int8 brings the
    total under the external-data threshold, the bundle must still hold its own copy."""
    import shutil

    from tommer.exporter.graph import save_model

    rng = np.random.default_rng(9)
    weight = rng.standard_normal((K, N)).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    model = _matmul_model(weight)
    (y,) = model.graph.outputs
    b = ir.Value(name="b", const_value=ir.tensor(bias, name="b"))
    model.graph.register_initializer(b)
    add = ir.node("Add", inputs=[y, b])
    model.graph.append(add)
    add.outputs[0].name, add.outputs[0].dtype, add.outputs[0].shape = "out", y.dtype, y.shape
    model.graph.outputs[0] = add.outputs[0]
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    ir.save(model, scratch / "backbone.onnx", external_data="backbone.onnx.data", size_threshold_bytes=0)
    model = ir.load(scratch / "backbone.onnx")
    quantize_int8(model, ExportSpec())
    assert isinstance(model.graph.initializers["b"].const_value, ir.ExternalTensor)  # still in the scratch file
    names = save_model(model, tmp_path / "model.onnx", ExportSpec(external_data_over_bytes=1 << 40))
    shutil.rmtree(scratch)
    assert names == ["model.onnx", "model.onnx.data"]  # copied beside the graph, tensor by tensor
    x = rng.standard_normal((5, K)).astype(np.float32)
    out = create_session(tmp_path / "model.onnx", "cpu").run(None, {"x": x})[0]
    exact = x @ weight + bias
    assert np.abs(out - exact).max() / np.abs(exact).max() < 0.03


def _mlp_model(gate: np.ndarray, up: np.ndarray, down: np.ndarray, up_also_output: bool = False):
    """``down(silu(x @ gate) * (x @ up))``, the Llama MLP, optionally with ``x @ up`` as a second output."""
    hidden, inner = gate.shape
    x = ir.Value(name="x", type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape(["m", hidden]))
    weights = {name: ir.Value(name=name, const_value=ir.tensor(w, name=name))
               for name, w in (("gate", gate), ("up", up), ("down", down))}
    g = ir.node("MatMul", inputs=[x, weights["gate"]])
    u = ir.node("MatMul", inputs=[x, weights["up"]])
    sig = ir.node("Sigmoid", inputs=[g.outputs[0]])
    silu = ir.node("Mul", inputs=[g.outputs[0], sig.outputs[0]])
    prod = ir.node("Mul", inputs=[silu.outputs[0], u.outputs[0]])
    d = ir.node("MatMul", inputs=[prod.outputs[0], weights["down"]])
    nodes = [g, u, sig, silu, prod, d]
    for node, width in zip(nodes, (inner, inner, inner, inner, inner, hidden)):
        node.outputs[0].dtype, node.outputs[0].shape = ir.DataType.FLOAT, ir.Shape(["m", width])
    d.outputs[0].name, u.outputs[0].name = "y", "up_out"
    outputs = [d.outputs[0]] + ([u.outputs[0]] if up_also_output else [])
    graph = ir.Graph(inputs=[x], outputs=outputs, nodes=nodes, initializers=list(weights.values()),
                     opset_imports={"": 21}, name="mlp")
    return ir.Model(graph, ir_version=10)


@pytest.mark.parametrize("up_also_output", [False, True])
def test_mlp_rescale_moves_to_the_next_quantizer(tmp_path, up_also_output):
    """``up``'s row rescale is left out when only ``down``'s quantizer sees it (its row scale
    absorbs it), kept when ``up``'s output is read elsewhere; the result is the same either way."""
    rng = np.random.default_rng(10)
    gate, up = (rng.standard_normal((2, K, 4 * K)) * 0.1).astype(np.float32)
    down = (rng.standard_normal((4 * K, K)) * 0.1).astype(np.float32)
    model = _mlp_model(gate, up, down, up_also_output)
    counts = quantize_int8(model, ExportSpec())
    moved = 0 if up_also_output else 1
    assert counts == {"MatMulIntegerToFloat": 3, "quantized_inputs": 2, "rescales_left_out": moved}
    assert sum(n.name.endswith("/rescale") for n in model.graph) == 3 - moved
    ir.save(model, tmp_path / "mlp.onnx")
    session = create_session(tmp_path / "mlp.onnx", "cpu")
    scales = np.logspace(-2, 1, 24, dtype=np.float32)[:, None]
    x = (rng.standard_normal((24, K)) * scales).astype(np.float32)
    outputs = session.run(None, {"x": x})
    g, u = x @ gate, x @ up
    exact = ((g / (1 + np.exp(-g))) * u) @ down
    row_error = np.abs(outputs[0] - exact).max(axis=1) / np.abs(exact).max(axis=1)
    assert row_error.max() < 0.05  # two 8-bit products in a row
    if up_also_output:  # the second output is still x @ up, rescaled
        assert np.abs(outputs[1] - u).max() / np.abs(u).max() < 0.03
    for i in (0, 11, 23):  # batch-invariant: each row alone gives the same bits
        assert np.array_equal(session.run(None, {"x": x[i:i + 1]})[0][0], outputs[0][i])
