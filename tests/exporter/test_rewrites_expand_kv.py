"""``expand_kv_heads``: grouped-query K/V repeated to the query heads give the same outputs."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from tommer.exporter.rewrites import expand_kv_heads, expands_kv_heads, unfused_attention_workspace_bytes
from tommer.runtime.execution.session import create_session

B, S, HQ, HK, D = 2, 9, 6, 2, 8


def _attention(three_d: bool, masked: bool) -> ir.Model:
    def value(name, shape, dtype=ir.DataType.FLOAT):
        return ir.Value(name=name, type=ir.TensorType(dtype), shape=ir.Shape(shape))

    if three_d:
        q, k, v = value("q", ["b", "s", HQ * D]), value("k", ["b", "s", HK * D]), value("v", ["b", "s", HK * D])
        attributes = {"is_causal": 1, "scale": 0.3, "q_num_heads": HQ, "kv_num_heads": HK}
    else:
        q, k, v = value("q", ["b", HQ, "s", D]), value("k", ["b", HK, "s", D]), value("v", ["b", HK, "s", D])
        attributes = {"is_causal": 0 if masked else 1, "scale": 0.3}
    inputs = [q, k, v]
    if masked:  # a sliding window as the traced graph gives it: one (n, n) boolean mask
        inputs.append(value("mask", ["s", "s"], ir.DataType.BOOL))
    node = ir.node("Attention", inputs=inputs, attributes=attributes, name="att")
    node.outputs[0].name = "y"
    node.outputs[0].dtype = ir.DataType.FLOAT
    graph = ir.Graph(inputs=inputs, outputs=[node.outputs[0]], nodes=[node], opset_imports={"": 23}, name="a")
    return ir.Model(graph, ir_version=10)


@pytest.mark.parametrize("three_d,masked", [(True, False), (False, False), (False, True)])
def test_expanded_heads_give_identical_outputs(tmp_path, three_d, masked):
    rng = np.random.default_rng(5)
    shape = {"q": (B, S, HQ * D), "k": (B, S, HK * D), "v": (B, S, HK * D)} if three_d else \
        {"q": (B, HQ, S, D), "k": (B, HK, S, D), "v": (B, HK, S, D)}
    feed = {name: rng.standard_normal(s).astype(np.float32) for name, s in shape.items()}
    if masked:
        behind = np.arange(S)[:, None] - np.arange(S)[None, :]
        feed["mask"] = (behind >= 0) & (behind < 4)
    before_model = _attention(three_d, masked)
    ir.save(before_model, tmp_path / "before.onnx")
    model = _attention(three_d, masked)
    assert expand_kv_heads(model) == 1
    (att,) = [n for n in model.graph if n.op_type == "Attention"]
    assert att.inputs[1].producer().op_type == "Reshape" and att.inputs[2].producer().op_type == "Reshape"
    if three_d:
        assert att.attributes["kv_num_heads"].as_int() == HQ
    ir.save(model, tmp_path / "after.onnx")
    before = create_session(tmp_path / "before.onnx", "cpu").run(None, feed)[0]
    after = create_session(tmp_path / "after.onnx", "cpu").run(None, feed)[0]
    np.testing.assert_array_equal(after, before)  # the same dot products, bit for bit
    # query head h reads K/V head h // group: the repeated heads are grouped, not interleaved
    if not three_d and not masked:
        grouped = {"q": feed["q"], "k": np.repeat(feed["k"], HQ // HK, axis=1),
                   "v": np.repeat(feed["v"], HQ // HK, axis=1)}
        mha = _attention(False, False)
        for x in mha.graph.inputs[1:]:
            x.shape = ir.Shape(["b", HQ, "s", D])
        ir.save(mha, tmp_path / "mha.onnx")
        np.testing.assert_array_equal(create_session(tmp_path / "mha.onnx", "cpu").run(None, grouped)[0], before)


def test_multi_head_nodes_are_left_alone():
    model = _attention(True, False)
    (att,) = list(model.graph)
    att.attributes["kv_num_heads"] = ir.AttrInt64("kv_num_heads", HQ)
    for x in model.graph.inputs[1:]:
        x.shape = ir.Shape(["b", "s", HQ * D])
    assert expand_kv_heads(model) == 0 and len(list(model.graph)) == 1


def test_which_exports_expand_and_the_workspace_they_avoid():
    assert expands_kv_heads("fp32", None, "onnxruntime")
    assert not expands_kv_heads("bf16", None, "onnxruntime") and not expands_kv_heads("fp16", None, "onnxruntime")
    assert not expands_kv_heads("fp32", "int8", "onnxruntime") and not expands_kv_heads("fp32", None, "tensorrt")
    # the figure: 65,536-token batches of S = 2,048 with 32 query heads, fp32 scores
    assert unfused_attention_workspace_bytes(32, 32, 2048) == 2 * 4 * 32 * 32 * 2048 ** 2 == 34_359_738_368
