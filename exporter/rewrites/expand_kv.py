"""Pass ``kv_heads_expanded``: grouped-query K/V repeated to the query heads, for fp32 graphs on CUDA.

onnxruntime-gpu's CUDA ``Attention`` (opset 23) picks its kernel in this order: flash
attention (fp16/bf16 only), memory-efficient attention (cutlass; fp32 too, head size a
multiple of 8, but with grouped-query heads it ungroups K/V itself only for fp16/bf16: "GQA
with Memory Efficient Attention requires fp16 or bf16, not fp32"), then the unfused kernel,
whose workspace holds the scores of every head: ``2 * 4 * batch * q_heads * S * S`` bytes
for fp32 (about 34 GB for one node of 32 heads at 65,536-token batches of S = 2,048; see
``unfused_attention_workspace_bytes``). An fp32 graph with grouped-query heads therefore
always ran the quadratic path. Repeating each K/V head ``q_heads / kv_heads`` times in the
graph (what onnxruntime's own ``LaunchUngroup`` does for fp16/bf16) makes the node a plain
multi-head one, which memory-efficient attention takes: its extra memory is the expanded
K and V, ``2 * batch * S * q_heads * head_size * 4`` bytes (1 GB at 65,536 tokens of
Llama-3.2-1B), linear in S. Query head ``h`` reads K/V head ``h // group`` in ONNX's
``Attention``, so each K/V head is repeated ``group`` times in a row. The scores are the
same dot products, so the outputs are bit-identical on onnxruntime's CPU kernels.

Applied to fp32 graphs for onnxruntime that are not quantized (``expands_kv_heads``):
bf16/fp16 keep grouped heads (flash attention takes them natively) and int8 graphs run on
the CPU only, where the repeat would be a copy for nothing.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from .common import initializer

NAME = "kv_heads_expanded"


def expands_kv_heads(dtype: str, quantization: str | None, target: str) -> bool:
    """Whether an export of this kind gets its grouped K/V heads expanded (fp32, not quantized, onnxruntime)."""
    return target == "onnxruntime" and dtype == "fp32" and quantization is None


def unfused_attention_workspace_bytes(batch: int, q_heads: int, seq: int, kv_seq: int | None = None,
                                      element_bytes: int = 4) -> int:
    """Scratch of onnxruntime-gpu's unfused CUDA attention for one node: two score buffers of
    (batch, q_heads, seq, kv_seq) (``GetUnfusedAttentionWorkspaceSize``; 4-byte scores)."""
    kv_seq = seq if kv_seq is None else kv_seq
    return 2 * element_bytes * batch * q_heads * seq * kv_seq


def _static(dim: object) -> int | None:
    return dim if isinstance(dim, int) else None


def _heads(attention: ir.Node) -> tuple[int, int, int, int, bool] | None:
    """(q_heads, kv_heads, head_size, v_head_size, three_d) of an Attention node, when known statically."""
    shapes = [x.shape if x is not None else None for x in attention.inputs[:3]]
    q, k, v = shapes
    if q is None or k is None or v is None:
        return None
    if "q_num_heads" in attention.attributes:  # 3-D: (batch, seq, heads * dim)
        hq = attention.attributes["q_num_heads"].as_int()
        hk = attention.attributes["kv_num_heads"].as_int()
        widths = [_static(x[-1]) if len(x) == 3 else None for x in (q, k, v)]
        wq, wk, wv = widths
        if wq is None or wk is None or wv is None or wq % hq or wk % hk or wv % hk:
            return None
        return hq, hk, wk // hk, wv // hk, True
    if len(q) != 4 or len(k) != 4 or len(v) != 4:  # 4-D: (batch, heads, seq, dim)
        return None
    hq4, hk4, size, v_size = _static(q[1]), _static(k[1]), _static(k[3]), _static(v[3])
    if hq4 is None or hk4 is None or size is None or v_size is None or hk4 != _static(v[1]):
        return None
    return hq4, hk4, size, v_size, False


def _repeat_heads(graph: ir.Graph, x: ir.Value, kv_heads: int, group: int, size: int, three_d: bool,
                  prefix: str) -> tuple[list[ir.Node], ir.Value]:
    """Nodes repeating each of ``x``'s heads ``group`` times in a row, and the repeated value."""
    if three_d:  # (b, s, kv * d) -> (b, s, kv, 1, d) -> (b, s, kv, g, d) -> (b, s, kv * g * d)
        split, ones, merged = [0, 0, kv_heads, 1, size], [1, 1, 1, group, 1], [0, 0, kv_heads * group * size]
    else:  # (b, kv, s, d) -> (b, kv, 1, s, d) -> (b, kv, g, s, d) -> (b, kv * g, s, d)
        split, ones, merged = [0, 0, 1, -1, size], [1, 1, group, 1, 1], [0, kv_heads * group, -1, size]
    shapes = [initializer(graph, f"{prefix}/{name}", np.array(s, np.int64))
              for name, s in (("split", split), ("group", ones), ("merged", merged))]
    first = ir.node("Reshape", inputs=[x, shapes[0]], name=f"{prefix}/Reshape")
    repeat = ir.node("Expand", inputs=[first.outputs[0], shapes[1]], name=f"{prefix}/Expand")
    last = ir.node("Reshape", inputs=[repeat.outputs[0], shapes[2]], name=f"{prefix}/Reshape_merged")
    out = last.outputs[0]
    out.dtype = x.dtype  # type: ignore[assignment]  # (None stays unknown)
    assert x.shape is not None  # checked by _heads
    dims = list(x.shape)
    if three_d:
        dims[2] = kv_heads * group * size
    else:
        dims[1] = kv_heads * group
    out.shape = ir.Shape(dims)
    return [first, repeat, last], out


def expand_kv_heads(model: ir.Model) -> int:
    """Repeat the K/V heads of every grouped-query ``Attention`` node to its query heads, in place.

    3-D nodes (``q_num_heads``/``kv_num_heads``) and 4-D nodes with static head counts are
    rewritten; ``kv_num_heads`` becomes ``q_num_heads``. Returns how many nodes changed.
    """
    graph = model.graph
    expanded = 0
    for attention in [n for n in graph if n.op_type == "Attention" and n.domain == ""]:
        if len(attention.inputs) < 3 or len(attention.inputs) > 4:  # no past key/value (never in tommer graphs)
            continue
        found = _heads(attention)
        if found is None:
            continue
        hq, hk, size, v_size, three_d = found
        if hq == hk or hq % hk:
            continue
        group = hq // hk
        name = attention.name or f"attention_{expanded}"
        new_nodes = []
        for index, width in ((1, size), (2, v_size)):
            kv = attention.inputs[index]
            assert kv is not None  # checked by _heads
            nodes, value = _repeat_heads(graph, kv, hk, group, width, three_d,
                                         f"tommer_kv/{name}/{'kv'[index - 1]}")
            new_nodes += nodes
            attention.replace_input_with(index, value)
        graph.insert_before(attention, new_nodes)
        if three_d:
            attention.attributes["kv_num_heads"] = ir.AttrInt64("kv_num_heads", hq)
        expanded += 1
    return expanded
