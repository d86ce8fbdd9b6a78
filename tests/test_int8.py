"""--quantize int8: one linear layer rewritten by ``quantize_int8``, against numpy's fp32 product."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from tommer.benchmarks.int8_kernels import _matmul_model
from tommer.exporter.graph import quantize_int8
from tommer.exporter.spec import ExportSpec
from tommer.runtime.session import create_session

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
    assert counts == {"MatMulIntegerToFloat": 1, "quantized_inputs": 1}
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
    from tommer.runtime import session as session_module

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
