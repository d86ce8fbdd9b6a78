"""Build the one ONNX graph: truncated backbone, then the fused ``tommer.SpanBand`` node.

Two targets (``ExportOptions.target``):

* ``onnxruntime``: opset 23. The backbone is traced with ``causal_attention`` so that
  attention is one ``Attention`` node (no mask tensor); torch's exporter writes
  ``RMSNormalization`` and ``RotaryEmbedding`` for the norms and rotary tables, and
  onnxscript's onnxruntime rewriter adds what it finds on top. onnxruntime has fused
  CPU and CUDA kernels for all of them.
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
    """onnxscript's onnxruntime rewriter, in place; the count of each fusion it applied."""
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    _, counts = optimize_for_ort(model)
    return {name: int(n) for name, n in sorted(counts.items()) if n}


def fused_op_counts(model: ir.Model) -> dict[str, int]:
    """How many fused-kernel nodes the graph holds (standard fused operators and every com.microsoft one)."""
    counts: dict[str, int] = {}
    for node in model.graph:
        if (node.domain, node.op_type) in FUSED_OPS or node.domain == "com.microsoft":
            key = node.op_type if node.domain == "" else f"{node.domain}.{node.op_type}"
            counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def _initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    value = ir.Value(name=name, const_value=ir.tensor(np.ascontiguousarray(array, dtype=np.float32), name=name))
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
    params = [_initializer(graph, name, w.numpy()) for name, w in zip(HEAD_INPUTS[2:], weights)]
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
    """Save ``model`` to ``path``; weights go to ``<name>.data`` beside it when large. Returns file names."""
    if initializer_bytes(model) > spec.external_data_over_bytes:
        data = f"{path.name}.data"
        ir.save(model, path, external_data=data)
        return [path.name, data]
    ir.save(model, path)
    return [path.name]


def quantize_int8(src: Path, dst: Path, spec: ExportSpec) -> ir.Model:
    """int8 weights for a saved backbone graph's MatMuls, as ``MatMulNBits`` (8 bits, blocks of 32).

    With accuracy level 4 the activations are quantized to int8 per block of each
    row at run time, so the int8 kernels run while a token's result never depends
    on the other rows of the batch (per-tensor dynamic quantization would share
    one scale with the batch companions and the padding). Run it before
    ``attach_head``: the head and the norms stay fp32.
    """
    import logging

    import onnx

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    # the quantizer's module calls logging.basicConfig(level=INFO) when imported, which would print
    # a line per MatMul from every library: undo it, and keep its own INFO lines out
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)
    logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)

    quantizer = MatMulNBitsQuantizer(onnx.load(src), bits=8, block_size=spec.int8_block_size,
                                     is_symmetric=True, accuracy_level=4)
    quantizer.process()
    large = sum(p.stat().st_size for p in src.parent.glob(src.name + "*")) > spec.external_data_over_bytes
    quantizer.model.save_model_to_file(str(dst), use_external_data_format=large)
    return ir.load(dst)
