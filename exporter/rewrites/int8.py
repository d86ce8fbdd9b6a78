"""Pass ``int8``: linear layers on onnxruntime's CPU integer GEMM with per-row activation scales."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ..spec import ExportSpec
from .common import initializer

NAME = "int8"


def _is_linear_layer(node: ir.Node) -> bool:
    """A standard ``MatMul`` by a constant fp32 2-D matrix (a linear layer's weight)."""
    if node.op_type != "MatMul" or node.domain != "" or len(node.inputs) != 2:
        return False
    weight = node.inputs[1]
    if weight is None or weight.const_value is None or weight.producer() is not None:
        return False
    return weight.const_value.dtype == ir.DataType.FLOAT and len(weight.const_value.shape) == 2


def _int8_columns(tensor: ir.TensorProtocol, levels: float) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 weights and their per-column scales; a weight read from a file is unmapped."""
    w = tensor.numpy()
    cols = np.abs(w).max(axis=0)
    scale = np.where(cols > 0, cols / levels, 1.0).astype(np.float32)
    w8 = np.clip(np.rint(w / scale), -levels, levels).astype(np.int8)
    del w, cols
    if isinstance(tensor, ir.ExternalTensor):
        tensor.release()  # unmap the fp32 weight: RSS holds only the int8 copies
    return w8, scale


def quantize_int8(model: ir.Model, spec: ExportSpec) -> dict[str, int]:
    """int8 linear layers for onnxruntime's CPU integer GEMM (VNNI / AMX), in place.

    Every ``MatMul`` by a constant fp32 matrix (the backbone's linear layers; run it
    before ``attach_head`` so the head and the norms stay fp32) becomes::

        m = max(|x|) over each row          (ReduceMax, ReduceMin: one scale per token)
        q = QuantizeLinear(x, m/127, 128)   uint8, one block per row (opset-21 block_size)
        y = MatMulIntegerToFloat(q, W8, 1/127, w_scale, 128, 0) * m

    with ``W8`` int8 per output column (symmetric, ``spec.int8_weight_max`` levels).

    Why not onnxruntime's own quantizers: ``quantize_dynamic`` quantizes activations
    with one scale per tensor, so a token's result would depend on its batch companions
    and on the padding (the bundle promises batch invariance); ``MatMulNBits`` keeps a
    scale per block of each row but its int8 path ran at 1.2x fp32 here, against 3-4x
    for the integer GEMM (``benchmarks/results/int8_kernels.md``). Row scales keep both:
    integer GEMM rows are independent and exact, so the result is batch-invariant.

    The final ``* m`` reads and writes the whole fp32 output. Where a layer's output is
    only multiplied elementwise into the input of other quantized layers (``up`` in
    ``silu(gate) * up``, read by ``down``), the multiplication is left out: the product is
    then ``m`` times smaller in each row, which its own row scale absorbs exactly, and
    ``m`` joins that layer's (one number per row) rescale instead.

    CPUs without VNNI multiply uint8 by int8 with 16-bit saturating adds (vpmaddubsw),
    which full-range int8 weights can overflow: tommer's sessions on such CPUs set
    onnxruntime's ``session.x64quantprecision`` (exact uint8 x uint8 kernel;
    ``runtime/execution/session.py: int8_needs_exact_mode``). Inputs consumed by
    several MatMuls (q, k, v; gate, up) are quantized once. Returns counts.
    """
    graph = model.graph
    if model.opset_imports.get("", 0) < 21:
        raise ValueError("quantize_int8 needs opset 21 or later (QuantizeLinear with block_size)")
    groups: dict[ir.Value, list[ir.Node]] = {}
    for node in graph:
        if _is_linear_layer(node):
            groups.setdefault(node.inputs[0], []).append(node)
    deferred = _deferred_rescales(graph, groups)
    levels = float(spec.int8_weight_max)
    inv127 = initializer(graph, "tommer_q.act_scale", np.array(1 / 127, np.float32))
    zp128 = initializer(graph, "tommer_q.act_zero_point", np.array(128, np.uint8))
    last = initializer(graph, "tommer_q.last_axis", np.array([-1], np.int64))
    tiny = initializer(graph, "tommer_q.tiny", np.array(np.finfo(np.float32).tiny, np.float32))
    carried: dict[ir.Value, ir.Value] = {}  # group input -> row scale of a rescale left out upstream
    quantized = 0
    for i, (x, users) in enumerate(groups.items()):
        first = users[0]
        k = first.inputs[1].const_value.shape[0]
        hi = ir.node("ReduceMax", inputs=[x, last], attributes={"keepdims": 1})
        lo = ir.node("ReduceMin", inputs=[x, last], attributes={"keepdims": 1})
        neg = ir.node("Neg", inputs=[lo.outputs[0]])
        scale = ir.node("Max", inputs=[hi.outputs[0], neg.outputs[0], tiny])  # max |x| of the row, never 0
        step = ir.node("Mul", inputs=[scale.outputs[0], inv127])
        shape = ir.node("Shape", inputs=[step.outputs[0]])
        zero = ir.node("Expand", inputs=[zp128, shape.outputs[0]])
        q = ir.node("QuantizeLinear", inputs=[x, step.outputs[0], zero.outputs[0]],
                    attributes={"axis": -1, "block_size": k})
        prep = [hi, lo, neg, scale, step, shape, zero, q]
        for node in prep:
            node.name = f"tommer_q/{i}/{node.op_type}"
        row_scale = scale.outputs[0]
        if x in carried:
            total = ir.node("Mul", inputs=[row_scale, carried[x]], name=f"tommer_q/{i}/Mul/carried")
            prep.append(total)
            row_scale = total.outputs[0]
        graph.insert_before(first, prep)
        for j, node in enumerate(users):
            w8, w_scale = _int8_columns(node.inputs[1].const_value, levels)
            weight_name = node.inputs[1].name or f"w{i}_{j}"
            w8_v = initializer(graph, f"{weight_name}.int8", w8)
            ws_v = initializer(graph, f"{weight_name}.scale", w_scale)
            wzp_v = initializer(graph, f"{weight_name}.zero_point", np.zeros(w8.shape[1], np.int8))
            mm = ir.node("MatMulIntegerToFloat", inputs=[q.outputs[0], w8_v, inv127, ws_v, zp128, wzp_v],
                         domain="com.microsoft")
            mm.name = f"{node.name}/int8"
            new_nodes = [mm]
            if node in deferred:
                carried[deferred[node]] = row_scale  # the product's row scale absorbs it
            else:
                new_nodes.append(ir.node("Mul", inputs=[mm.outputs[0], row_scale], name=f"{node.name}/rescale"))
            old = node.inputs[1]
            # the last new node's output takes the MatMul output's place, name and type
            ir.convenience.replace_nodes_and_values(graph, node, [node], new_nodes,
                                                    [node.outputs[0]], [new_nodes[-1].outputs[0]])
            if not old.uses() and old.name in graph.initializers:
                del graph.initializers[old.name]
            quantized += 1
    model.opset_imports.setdefault("com.microsoft", 1)
    return {"MatMulIntegerToFloat": quantized, "quantized_inputs": len(groups), "rescales_left_out": len(deferred)}


def _deferred_rescales(graph: ir.Graph, groups: dict[ir.Value, list[ir.Node]]) -> dict[ir.Node, ir.Value]:
    """Linear layers whose row rescale can move to the next quantizer: layer -> that quantizer's input.

    The layer's output must be read once, by an elementwise ``Mul`` of two same-rank
    operands, and that product only by other linear layers (one group), so that
    ``Mul(a, y * m) = Mul(a, y) * m`` reaches nothing but a row-scaled quantizer.
    """
    outputs = set(graph.outputs)
    layer_of = {node.outputs[0]: node for users in groups.values() for node in users}
    deferred: dict[ir.Node, ir.Value] = {}
    for x, users in groups.items():
        mul = x.producer()
        if (mul is None or mul.op_type != "Mul" or mul.domain != "" or x in outputs
                or len(x.uses()) != len(users)):
            continue
        a, b = mul.inputs
        if a is None or b is None or a.shape is None or b.shape is None or len(a.shape) != len(b.shape):
            continue
        for operand in (b, a):
            layer = layer_of.get(operand)
            if (layer is not None and operand not in outputs and len(operand.uses()) == 1
                    and layer.inputs[0] is not x):
                deferred[layer] = x
                break
    return deferred
