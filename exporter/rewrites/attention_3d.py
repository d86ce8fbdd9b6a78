"""Pass ``attention_3d``: attention and rotary on the linear layers' (batch, seq, heads * dim) layout."""

from __future__ import annotations

import onnx_ir as ir

from .common import only_consumer

NAME = "attention_3d"


def _head_split(value: ir.Value, outputs: set[ir.Value]) -> tuple[ir.Value, list[ir.Node]] | None:
    """``value = Transpose(Reshape(x, (b, s, heads, dim)), perm=(0, 2, 1, 3))``: ``x`` and the two nodes."""
    transpose = value.producer()
    if (transpose is None or transpose.op_type != "Transpose" or transpose.domain != ""
            or list(transpose.attributes.get_ints("perm", [])) != [0, 2, 1, 3]):
        return None
    reshape = transpose.inputs[0].producer()
    if (reshape is None or reshape.op_type != "Reshape" or reshape.domain != ""
            or only_consumer(transpose.inputs[0], outputs) is not transpose or only_consumer(value, outputs) is None):
        return None
    x = reshape.inputs[0]
    if x.shape is None or len(x.shape) != 3:
        return None
    return x, [transpose, reshape]


def attention_on_3d(model: ir.Model) -> int:
    """Feed ``RotaryEmbedding`` and ``Attention`` (opset 23) (batch, seq, heads * dim) tensors, in place.

    The traced graph splits q, k and v into heads (Reshape, Transpose to (batch, heads,
    seq, dim)) before the rotary embedding and attention, and merges them back after.
    Both operators take the 3-D layout themselves (``num_heads``, ``q_num_heads`` /
    ``kv_num_heads``), which is the layout the linear layers produce and read: four
    ``Transpose`` copies per layer go, the numbers stay the same (bit-identical outputs
    on onnxruntime's CPU kernels). Nodes that do not match the pattern are left alone.
    Returns how many ``Attention`` nodes were rewritten.
    """
    graph = model.graph
    outputs = set(graph.outputs)
    rewritten = 0
    for attention in [n for n in graph if n.op_type == "Attention" and n.domain == ""]:
        if len(attention.inputs) < 3 or len(attention.outputs) != 1 or "q_num_heads" in attention.attributes:
            continue
        parts = {}
        for name, value in zip("qk", attention.inputs[:2]):
            rotary = value.producer()
            if (rotary is None or rotary.op_type != "RotaryEmbedding" or rotary.domain != ""
                    or "num_heads" not in rotary.attributes or only_consumer(value, outputs) is not attention):
                break
            split = _head_split(rotary.inputs[0], outputs)
            if split is None:
                break
            parts[name] = (rotary, *split)
        v_split = _head_split(attention.inputs[2], outputs) if attention.inputs[2] is not None else None
        merge_t = only_consumer(attention.outputs[0], outputs)
        merge_r = only_consumer(merge_t.outputs[0], outputs) if merge_t is not None else None
        if (len(parts) != 2 or v_split is None or only_consumer(attention.inputs[2], outputs) is not attention
                or merge_t is None or merge_t.op_type != "Transpose"
                or list(merge_t.attributes.get_ints("perm", [])) != [0, 2, 1, 3]
                or merge_r is None or merge_r.op_type != "Reshape"
                or (merge_r.outputs[0].shape is not None and len(merge_r.outputs[0].shape) != 3)):
            continue  # (the merge must give back (batch, seq, heads * dim), as the 3-D Attention does)
        new_nodes, heads = [], {}
        for name in "qk":
            rotary, x, _ = parts[name]
            heads[name] = rotary.attributes["num_heads"].as_int()
            node = ir.node("RotaryEmbedding", inputs=[x, *rotary.inputs[1:]],
                           attributes={a.name: a for a in rotary.attributes.values()}, name=f"{rotary.name}/3d")
            node.outputs[0].dtype, node.outputs[0].shape = x.dtype, x.shape
            new_nodes.append(node)
        attributes = {a.name: a for a in attention.attributes.values()}
        attributes["q_num_heads"] = ir.AttrInt64("q_num_heads", heads["q"])
        attributes["kv_num_heads"] = ir.AttrInt64("kv_num_heads", heads["k"])
        fused = ir.node("Attention", inputs=[new_nodes[0].outputs[0], new_nodes[1].outputs[0], v_split[0],
                                             *attention.inputs[3:]], attributes=attributes, name=f"{attention.name}/3d")
        new_nodes.append(fused)
        old = [merge_r, merge_t, attention, *v_split[1]]
        for rotary, _, split_nodes in parts.values():
            old += [rotary, *split_nodes]
        ir.convenience.replace_nodes_and_values(graph, attention, old, new_nodes,
                                                [merge_r.outputs[0]], [fused.outputs[0]])
        rewritten += 1
    if rewritten:
        import onnx_ir.passes.common as common_passes

        common_passes.RemoveUnusedNodesPass()(model)  # the head split's shape arithmetic
    return rewritten
