"""``attention_on_3d``: the head split and merge around attention go, the numbers stay the same."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from tommer.exporter.rewrites.attention_3d import attention_on_3d
from tommer.runtime.execution.session import create_session

B, S, HQ, HK, D = 2, 7, 4, 2, 8


def _attention_block(k_split_is_output: bool) -> ir.Model:
    """q, k, v (batch, seq, heads * dim) split into heads as the traced graph does, rotary, attention, merge."""
    def value(name, width):
        return ir.Value(name=name, type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape(["b", "s", width]))

    q, k, v = value("q", HQ * D), value("k", HK * D), value("v", HK * D)
    cos = ir.Value(name="cos", type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape(["b", "s", D // 2]))
    sin = ir.Value(name="sin", type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape(["b", "s", D // 2]))
    nodes, inits = [], []

    def const(name, array):
        c = ir.Value(name=name, const_value=ir.tensor(array, name=name))
        inits.append(c)
        return c

    def split(x, heads, name):
        reshape = ir.node("Reshape", inputs=[x, const(f"{name}_shape", np.array([0, 0, heads, D], np.int64))])
        transpose = ir.node("Transpose", inputs=[reshape.outputs[0]], attributes={"perm": [0, 2, 1, 3]})
        nodes.extend([reshape, transpose])
        transpose.outputs[0].name = f"{name}_heads"
        return transpose.outputs[0]

    qr = ir.node("RotaryEmbedding", inputs=[split(q, HQ, "q"), cos, sin], attributes={"num_heads": HQ})
    k_heads = split(k, HK, "k")
    kr = ir.node("RotaryEmbedding", inputs=[k_heads, cos, sin], attributes={"num_heads": HK})
    att = ir.node("Attention", inputs=[qr.outputs[0], kr.outputs[0], split(v, HK, "v")],
                  attributes={"is_causal": 1, "scale": 0.3})
    merge = ir.node("Transpose", inputs=[att.outputs[0]], attributes={"perm": [0, 2, 1, 3]})
    out = ir.node("Reshape", inputs=[merge.outputs[0], const("out_shape", np.array([0, 0, HQ * D], np.int64))])
    nodes.extend([qr, kr, att, merge, out])
    out.outputs[0].name = "y"
    out.outputs[0].dtype = ir.DataType.FLOAT
    outputs = [out.outputs[0]]
    if k_split_is_output:
        k_heads.dtype = ir.DataType.FLOAT
        outputs.append(k_heads)
    graph = ir.Graph(inputs=[q, k, v, cos, sin], outputs=outputs, nodes=nodes, initializers=inits,
                     opset_imports={"": 23}, name="block")
    return ir.Model(graph, ir_version=10)


def _run(model: ir.Model, path, feed) -> list[np.ndarray]:
    ir.save(model, path)
    return create_session(path, "cpu").run(None, feed)


@pytest.mark.parametrize("k_split_is_output", [False, True])
def test_attention_on_3d_keeps_the_numbers(tmp_path, k_split_is_output):
    rng = np.random.default_rng(3)
    feed = {"q": rng.standard_normal((B, S, HQ * D)), "k": rng.standard_normal((B, S, HK * D)),
            "v": rng.standard_normal((B, S, HK * D))}
    angles = np.arange(S)[:, None] * (100.0 ** (-np.arange(D // 2) / (D // 2)))[None]
    feed |= {"cos": np.broadcast_to(np.cos(angles), (B, S, D // 2)), "sin": np.broadcast_to(np.sin(angles), (B, S, D // 2))}
    feed = {name: np.ascontiguousarray(a, dtype=np.float32) for name, a in feed.items()}
    before = _run(_attention_block(k_split_is_output), tmp_path / "before.onnx", feed)
    model = _attention_block(k_split_is_output)
    rewritten = attention_on_3d(model)
    ops = [n.op_type for n in model.graph]
    if k_split_is_output:  # k's head split is read elsewhere: the block is left as it was
        assert rewritten == 0 and ops.count("Transpose") == 4
    else:
        assert rewritten == 1 and "Transpose" not in ops and "Reshape" not in ops
        (att,) = [n for n in model.graph if n.op_type == "Attention"]
        assert att.attributes["q_num_heads"].value == HQ and att.attributes["kv_num_heads"].value == HK
        assert [v.name for v in model.graph.outputs] == ["y"]
    after = _run(model, tmp_path / "after.onnx", feed)
    np.testing.assert_allclose(after[0], before[0], rtol=0, atol=1e-6)
