"""The graph targets: fused operators for onnxruntime, and a static TensorRT parser check that can fail."""

from __future__ import annotations

import collections

import numpy as np
import onnx_ir as ir
import pytest
from conftest import TINY_LAYER

from tommer.exporter.tensorrt import check_tensorrt, operator_table
from tommer.runtime.bundle import read_manifest


def _ops(model: ir.Model) -> collections.Counter:
    return collections.Counter((n.domain, n.op_type) for n in model.graph.all_nodes())


def test_onnxruntime_graph_has_one_fused_attention_norm_and_rotary_per_block(tiny_bundle):
    manifest = read_manifest(tiny_bundle)
    model = ir.load(tiny_bundle / "model.onnx")
    ops = _ops(model)
    blocks = TINY_LAYER + 1
    assert manifest.opset == 23 and manifest.graph.target == "onnxruntime"
    assert ops[("", "Attention")] == blocks and ops[("", "RotaryEmbedding")] == 2 * blocks  # queries and keys
    assert ops[("", "RMSNormalization")] == 2 * blocks  # two norms per block; the final norm is cut
    assert ops[("", "Softmax")] == 0  # attention is not decomposed: no (batch, heads, n, n) scores tensor
    causal = [n for n in model.graph if n.op_type == "Attention"]
    assert all(n.attributes["is_causal"].value == 1 and len([i for i in n.inputs if i is not None]) == 3
               for n in causal)  # causal, and no mask input at all
    assert manifest.graph.fused_ops == {"Attention": blocks, "RMSNormalization": 2 * blocks,
                                        "RotaryEmbedding": 2 * blocks}
    # attention and rotary read the linear layers' (batch, seq, heads * dim) layout: no head transposes
    assert manifest.graph.rewrites.get("attention_3d") == blocks and ops[("", "Transpose")] == 0
    # fp32: the grouped K/V heads (2) are repeated to the 4 query heads, for CUDA's memory-efficient attention
    assert manifest.graph.rewrites.get("kv_heads_expanded") == blocks
    assert all(n.attributes["q_num_heads"].value == 4 and n.attributes["kv_num_heads"].value == 4 for n in causal)
    assert not manifest.graph.tensorrt_ready
    assert [f.name for f in model.functions.values()] == ["SpanBand"]


def test_tensorrt_bundle_passes_the_parser_check_and_agrees_with_onnxruntime(tiny_bundle, tiny_trt_bundle):
    from tommer.exporter.random_models import CORPUS
    from tommer.runtime.annotator import Annotator

    manifest = read_manifest(tiny_trt_bundle)
    assert manifest.opset == 20 and manifest.graph.target == "tensorrt" and manifest.graph.tensorrt_ready
    assert manifest.graph.tensorrt["problems"] == [] and manifest.graph.tensorrt["nodes"] > 100
    model = ir.load(tiny_trt_bundle / "model.onnx")
    assert not model.functions and all(n.domain in ("", "ai.onnx") for n in model.graph.all_nodes())
    assert check_tensorrt(model).supported  # the saved file passes too, not only the graph in memory
    texts = CORPUS * 3
    a = Annotator.from_bundle(tiny_bundle, provider="cpu").annotate(texts)
    b = Annotator.from_bundle(tiny_trt_bundle, provider="cpu").annotate(texts)
    assert [[(m.start, m.end) for m in r] for r in a] == [[(m.start, m.end) for m in r] for r in b]
    assert max(abs(x.score - y.score) for r, q in zip(a, b) for x, y in zip(r, q)) < 1e-4


def _tiny_graph(*nodes: ir.Node, inputs: list[ir.Value], outputs: list[ir.Value], opset: int = 20) -> ir.Model:
    graph = ir.Graph(inputs=inputs, outputs=outputs, nodes=list(nodes), opset_imports={"": opset})
    return ir.Model(graph, ir_version=10)


def _value(name: str, dtype=ir.DataType.FLOAT, shape=(2, 3)) -> ir.Value:
    return ir.Value(name=name, type=ir.TensorType(dtype), shape=ir.Shape(list(shape)))


def test_planted_problems_fail_the_check(tiny_trt_bundle):
    model = ir.load(tiny_trt_bundle / "model.onnx")
    (out,) = model.graph.outputs
    planted = ir.node("Unique", inputs=[out], num_outputs=4)  # listed as unsupported by TensorRT 10.1
    model.graph.append(planted)
    report = check_tensorrt(model)
    assert not report.supported and any("Unique is not supported" in p for p in report.problems)

    x = _value("x")
    axes = _value("axes", ir.DataType.INT64, (1,))  # a graph input, not an initializer
    starts, ends = (ir.Value(name=n, const_value=ir.tensor(np.array([0], np.int64))) for n in ("s", "e"))
    sliced = ir.node("Slice", inputs=[x, starts, ends, axes])
    gelu = ir.node("Gelu", inputs=[x], domain="com.microsoft")
    cum = ir.node("CumSum", inputs=[_value("i", ir.DataType.INT64), starts])  # CumSum: float types only
    model = _tiny_graph(sliced, gelu, cum, inputs=[x, axes, cum.inputs[0]],
                        outputs=[sliced.outputs[0], gelu.outputs[0], cum.outputs[0]], opset=23)
    for v in (starts, ends):
        model.graph.register_initializer(v)
    problems = "\n".join(check_tensorrt(model).problems)
    assert "input 'axes' must be an initializer" in problems
    assert "domain 'com.microsoft'" in problems
    assert "data type INT64 not supported" in problems
    assert "opset is 23; TensorRT 10.1's parser reads opsets 9 to 20" in problems


def test_a_local_function_named_like_an_onnx_operator_is_refused():
    x = _value("x")
    body = ir.node("Neg", inputs=[ir.Value(name="a")])
    function = ir.Function("tommer", "Relu", graph=ir.Graph(inputs=[body.inputs[0]], outputs=body.outputs,
                                                           nodes=[body], opset_imports={"": 20}), attributes=[])
    call = ir.node("Relu", inputs=[x], domain="tommer")
    model = _tiny_graph(call, inputs=[x], outputs=call.outputs)
    model.functions[function.identifier()] = function
    model.opset_imports["tommer"] = 1
    report = check_tensorrt(model)
    assert any("named like the ONNX operator Relu" in p for p in report.problems)


def test_operator_table_is_the_pinned_data():
    table = operator_table()
    assert table.version == "10.1" and "onnx-tensorrt" in table.source
    assert (table.opset_min, table.opset_max) == (9, 20)
    assert table.operators["MatMul"]["supported"] and not table.operators["Unique"]["supported"]
    assert table.constant_inputs("Slice") == ("axes",) and table.constant_inputs("OneHot") == ("depth",)
    with pytest.raises(KeyError):
        table.operators["Attention"]  # opset-23 operators are past this parser
