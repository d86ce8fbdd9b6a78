"""Graph rewrite passes, one file each, each returning what it changed (as onnxruntime's
``python/tools/transformers/fusion_*.py`` do), recorded in the manifest's ``graph.rewrites``.

* ``attention_3d``: attention and rotary on the (batch, seq, heads * dim) layout.
* ``expand_kv``: grouped-query K/V repeated to the query heads (fp32 graphs for CUDA).
* ``int8``: linear layers on the CPU integer GEMM with per-row activation scales.

``graph.py`` builds, attaches and saves; it calls these.
"""

from __future__ import annotations

import onnx_ir as ir

from . import attention_3d, expand_kv
from .attention_3d import attention_on_3d
from .expand_kv import expand_kv_heads, expands_kv_heads, unfused_attention_workspace_bytes
from .int8 import quantize_int8

__all__ = ["attention_on_3d", "expand_kv_heads", "expands_kv_heads", "fuse_for_onnxruntime", "quantize_int8",
           "unfused_attention_workspace_bytes"]


def fuse_for_onnxruntime(model: ir.Model, expand_kv_heads_too: bool = False) -> dict[str, int]:
    """onnxscript's onnxruntime rewriter, then ``attention_3d`` (and ``expand_kv`` when asked), in
    place; the count of each rewrite applied (none listed when nothing matched)."""
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    _, counts = optimize_for_ort(model)
    counts = {name: int(n) for name, n in sorted(counts.items()) if n}
    if n := attention_on_3d(model):
        counts[attention_3d.NAME] = n
    if expand_kv_heads_too and (n := expand_kv_heads(model)):
        counts[expand_kv.NAME] = n
    return counts
