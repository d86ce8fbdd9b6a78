"""Build the one ONNX graph: truncated backbone, then the fused ``tommer.SpanBand`` node.

Two targets (``ExportOptions.target``):

* ``onnxruntime``: opset 23. The backbone is traced with ``causal_attention`` so that
  attention is one ``Attention`` node (no mask tensor); torch's exporter writes
  ``RMSNormalization`` and ``RotaryEmbedding`` for the norms and rotary tables, and
  onnxscript's onnxruntime rewriter adds what it finds on top; ``attention_on_3d``
  then feeds attention and rotary the (batch, seq, heads * dim) layout. onnxruntime has
  fused CPU and CUDA kernels for all of them.
* ``tensorrt``: opset 20, standard operators only (attention, norms and rotary as
  MatMul/Softmax/ReduceMean/...: TensorRT fuses them itself), the head function inlined,
  and every node checked against TensorRT's parser (``exporter/tensorrt.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx_ir as ir
import torch

from ..runtime.bundle import HEAD_DOMAIN
from .backbone import BackboneForExport, TruncatedBackbone, causal_attention_for_export, without_final_norm
from .head import Head
from .head_onnx import HEAD_INPUTS, BandGeometry, make_span_band_function
from .spec import ExportSpec

TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


# fused operators whose count the manifest records: (domain, op_type)
FUSED_OPS = (("", "Attention"), ("", "RMSNormalization"), ("", "RotaryEmbedding"), ("", "LayerNormalization"))


def export_backbone(backbone: TruncatedBackbone, dtype: str, spec: ExportSpec,
                    target: str = "onnxruntime") -> ir.Model:
    """Trace the truncated backbone (in ``dtype``) into an onnx-ir model; output: hidden states."""
    model = backbone.model.to(TORCH_DTYPES[dtype])  # (batch, seq) ids -> (batch, seq, hidden)
    batch, seq = spec.trace_shape
    ids = torch.randint(0, backbone.vocab_size, (batch, seq), dtype=torch.int64)
    mask = torch.ones_like(ids)
    b, s = (torch.export.Dim(n) for n in spec.dynamic_axes)
    with without_final_norm(model, backbone.model_type) as cut, causal_attention_for_export(cut), torch.no_grad():
        program = torch.onnx.export(
            BackboneForExport(cut).eval(), (ids, mask), input_names=list(spec.input_names),
            output_names=[spec.hidden_name],
            dynamic_shapes={"input_ids": {0: b, 1: s}, "attention_mask": {0: b, 1: s}},
            dynamo=True, opset_version=spec.opset_for(target), optimize=True, verbose=False,
        )
    onnx_model = program.model
    names = [v.name for v in onnx_model.graph.inputs]
    assert names == list(spec.input_names), f"graph inputs {names}, expected {list(spec.input_names)}"
    return onnx_model


def fuse_for_onnxruntime(model: ir.Model) -> dict[str, int]:
    """onnxscript's onnxruntime rewriter, then tommer's ``attention_on_3d``, in place; the count of each rewrite applied."""
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    _, counts = optimize_for_ort(model)
    counts = {name: int(n) for name, n in sorted(counts.items()) if n}
    if n := attention_on_3d(model):
        counts["attention_3d"] = n
    return counts


def _only_consumer(value: ir.Value, outputs: set[ir.Value]) -> ir.Node | None:
    uses = value.uses()
    return uses[0].node if len(uses) == 1 and value not in outputs else None


def _head_split(value: ir.Value, outputs: set[ir.Value]) -> tuple[ir.Value, list[ir.Node]] | None:
    """``value = Transpose(Reshape(x, (b, s, heads, dim)), perm=(0, 2, 1, 3))``: ``x`` and the two nodes."""
    transpose = value.producer()
    if (transpose is None or transpose.op_type != "Transpose" or transpose.domain != ""
            or list(transpose.attributes.get_ints("perm", [])) != [0, 2, 1, 3]):
        return None
    reshape = transpose.inputs[0].producer()
    if (reshape is None or reshape.op_type != "Reshape" or reshape.domain != ""
            or _only_consumer(transpose.inputs[0], outputs) is not transpose or _only_consumer(value, outputs) is None):
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
                    or "num_heads" not in rotary.attributes or _only_consumer(value, outputs) is not attention):
                break
            split = _head_split(rotary.inputs[0], outputs)
            if split is None:
                break
            parts[name] = (rotary, *split)
        v_split = _head_split(attention.inputs[2], outputs) if attention.inputs[2] is not None else None
        merge_t = _only_consumer(attention.outputs[0], outputs)
        merge_r = _only_consumer(merge_t.outputs[0], outputs) if merge_t is not None else None
        if (len(parts) != 2 or v_split is None or _only_consumer(attention.inputs[2], outputs) is not attention
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


def fused_op_counts(model: ir.Model) -> dict[str, int]:
    """How many fused-kernel nodes the graph holds (standard fused operators and every com.microsoft one)."""
    counts: dict[str, int] = {}
    for node in model.graph:
        if (node.domain, node.op_type) in FUSED_OPS or node.domain == "com.microsoft":
            key = node.op_type if node.domain == "" else f"{node.domain}.{node.op_type}"
            counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def _initializer(graph: ir.Graph, name: str, array: np.ndarray, dtype: type | None = None) -> ir.Value:
    """Register ``array`` (cast to ``dtype`` when given) as an initializer of ``graph``."""
    value = ir.Value(name=name, const_value=ir.tensor(np.ascontiguousarray(array, dtype=dtype), name=name))
    graph.register_initializer(value)
    return value


def attach_head(model: ir.Model, head: Head, geometry: BandGeometry, spec: ExportSpec) -> ir.Model:
    """Feed the graph's hidden-states output into one ``tommer.SpanBand`` node (in place).

    The head always runs in fp32: a lower-precision hidden state is cast first. The
    function is written in the graph's own ONNX opset.
    """
    graph = model.graph
    (hidden,) = graph.outputs
    mask = next(v for v in graph.inputs if v.name == spec.input_names[1])
    if hidden.dtype != ir.DataType.FLOAT:
        cast = ir.node("Cast", inputs=[hidden], attributes={"to": ir.DataType.FLOAT})
        graph.append(cast)
        hidden = cast.outputs[0]
    weights = [head.w_q, head.w_k, head.w_fc, head.b_fc, head.cl_w]
    params = [_initializer(graph, name, w.numpy(), np.float32) for name, w in zip(HEAD_INPUTS[2:], weights)]
    node = ir.node("SpanBand", inputs=[hidden, mask, *params], domain=HEAD_DOMAIN, num_outputs=1)
    graph.append(node)
    out = node.outputs[0]
    out.name = spec.output_name
    out.dtype = ir.DataType.FLOAT
    out.shape = ir.Shape([spec.dynamic_axes[0], spec.dynamic_axes[1], geometry.band_width])
    graph.outputs.clear()
    graph.outputs.append(out)
    cfg = head.config
    opset = model.opset_imports.get("", spec.opset)
    fn_proto = make_span_band_function(geometry, cfg.use_cosine, cfg.scale, cfg.mask_bos, opset).to_function_proto()
    function = ir.serde.deserialize_function(fn_proto)
    model.functions[function.identifier()] = function
    model.opset_imports[HEAD_DOMAIN] = 1
    model.opset_imports.setdefault("", spec.opset)
    return model


def head_only_model(head: Head, geometry: BandGeometry, spec: ExportSpec = ExportSpec()) -> ir.Model:
    """A graph of the head alone: ``(hidden_states, attention_mask) -> span_probs``."""
    batch, seq = spec.dynamic_axes
    hidden = ir.Value(name=spec.hidden_name, type=ir.TensorType(ir.DataType.FLOAT),
                      shape=ir.Shape([batch, seq, head.hidden_size]))
    mask = ir.Value(name=spec.input_names[1], type=ir.TensorType(ir.DataType.INT64), shape=ir.Shape([batch, seq]))
    graph = ir.Graph(inputs=[hidden, mask], outputs=[hidden], nodes=[], opset_imports={"": spec.opset},
                     name="tommer_head")
    model = ir.Model(graph, ir_version=10, producer_name="tommer")
    return attach_head(model, head, geometry, spec)


def inline_head(model: ir.Model) -> ir.Model:
    """Inline every local function (the head) in place: the form TensorRT's parser reads best."""
    import onnx_ir.passes.common as common_passes

    common_passes.InlinePass()(model)
    common_passes.RemoveUnusedOpsetsPass()(model)
    return model


def initializer_bytes(model: ir.Model) -> int:
    return sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)


def save_model(model: ir.Model, path: Path, spec: ExportSpec) -> list[str]:
    """Save ``model`` to ``path``; returns the file names.

    Weights go to ``<name>.data`` beside it when they are large, or when some are still read
    from another file (the traced graph's ``.data`` in a scratch folder: an int8 graph keeps
    the fp32 embeddings from there). They are then copied tensor by tensor, never all held
    in memory, and the bundle never points into a folder that is about to be deleted.
    """
    from_files = any(isinstance(v.const_value, ir.ExternalTensor) for v in model.graph.initializers.values())
    if from_files or initializer_bytes(model) > spec.external_data_over_bytes:
        data = f"{path.name}.data"
        ir.save(model, path, external_data=data)
        return [path.name, data]
    ir.save(model, path)
    return [path.name]


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
    ``runtime/session.py: int8_needs_exact_mode``). Inputs consumed by
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
    inv127 = _initializer(graph, "tommer_q.act_scale", np.array(1 / 127, np.float32))
    zp128 = _initializer(graph, "tommer_q.act_zero_point", np.array(128, np.uint8))
    last = _initializer(graph, "tommer_q.last_axis", np.array([-1], np.int64))
    tiny = _initializer(graph, "tommer_q.tiny", np.array(np.finfo(np.float32).tiny, np.float32))
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
            w8_v = _initializer(graph, f"{weight_name}.int8", w8)
            ws_v = _initializer(graph, f"{weight_name}.scale", w_scale)
            wzp_v = _initializer(graph, f"{weight_name}.zero_point", np.zeros(w8.shape[1], np.int8))
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
