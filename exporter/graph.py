"""Build the one ONNX graph: truncated backbone, then the fused ``tommer.SpanBand`` node.

Two targets (``ExportOptions.target``):

* ``onnxruntime``: opset 23. The backbone is traced with ``causal_attention`` so that
  attention is one ``Attention`` node (no mask tensor); torch's exporter writes
  ``RMSNormalization`` and ``RotaryEmbedding`` for the norms and rotary tables, and
  onnxscript's onnxruntime rewriter adds what it finds on top, then tommer's own passes
  (``exporter/rewrites/``: attention on the (batch, seq, heads * dim) layout; fp32 K/V
  heads expanded for CUDA; int8). onnxruntime has fused CPU and CUDA kernels for all of them.
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
from .rewrites import attention_on_3d, fuse_for_onnxruntime, quantize_int8  # noqa: F401 (the exporter's names)
from .rewrites.common import initializer
from .spec import ExportSpec

TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


# fused operators whose count the manifest records: (domain, op_type)
FUSED_OPS = (("", "Attention"), ("", "RMSNormalization"), ("", "RotaryEmbedding"), ("", "LayerNormalization"))


def cast_keeping_rotary_fp32(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """``model.to(dtype)``, with every rotary embedding's inverse frequencies kept in fp32, in place.

    ``Module.to`` casts the ``inv_freq`` buffers too: in bf16 they were rounded to 8 bits of
    mantissa (2.9e-3 relative error, up to 1.9 rad of phase at position 2,048; fp16: 8.6e-3 at
    most, about 0.13 rad). transformers' rotary ``forward`` computes the angles and their
    cos/sin in fp32 from ``inv_freq`` and casts only the tables to the model's dtype, so with
    fp32 frequencies the graph holds fp32-exact angles at every precision, as the fp32 model
    does; only the final tables are rounded, which bounds the error whatever the position.
    The frequencies are recomputed from the configuration by building a fresh rotary module
    of the same class (its ``__init__`` runs the rope type's own init function in fp32:
    default, llama3, partial rotary, ...), not copied from a model that may have been cast
    before.
    """
    model.to(dtype)
    if dtype == torch.float32:
        return model
    for module in list(model.modules()):
        # inv_freq, original_inv_freq; ModernBERT: <layer type>_inv_freq, one per attention kind
        names = [name for name in module._buffers if name.endswith("inv_freq")]
        if not names or getattr(module, "config", None) is None:
            continue
        device = module._buffers[names[0]].device
        with torch.device("cpu"):
            fresh = type(module)(module.config)
        for name, buffer in fresh.named_buffers(recurse=False):
            if name in module._buffers and buffer.is_floating_point():
                module._buffers[name] = buffer.to(device=device, dtype=torch.float32)
    return model


def export_backbone(backbone: TruncatedBackbone, dtype: str, spec: ExportSpec,
                    target: str = "onnxruntime") -> ir.Model:
    """Trace the truncated backbone (in ``dtype``) into an onnx-ir model; output: hidden states."""
    model = cast_keeping_rotary_fp32(backbone.model, TORCH_DTYPES[dtype])  # (batch, seq) ids -> (batch, seq, hidden)
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


def fused_op_counts(model: ir.Model) -> dict[str, int]:
    """How many fused-kernel nodes the graph holds (standard fused operators and every com.microsoft one)."""
    counts: dict[str, int] = {}
    for node in model.graph:
        if (node.domain, node.op_type) in FUSED_OPS or node.domain == "com.microsoft":
            key = node.op_type if node.domain == "" else f"{node.domain}.{node.op_type}"
            counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


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
    params = [initializer(graph, name, w.numpy(), np.float32) for name, w in zip(HEAD_INPUTS[2:], weights)]
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
