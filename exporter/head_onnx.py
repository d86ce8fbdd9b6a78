"""The span head as ONE fused ONNX node: the function ``tommer.SpanBand``.

The function body uses standard ONNX operators only, so every execution
provider (CPU, CUDA, TensorRT) can run it: onnxruntime inlines it at load.
No (seq x seq) tensor is ever formed: keys are gathered into a band of
``C = lookahead + band_width`` columns per end token, column ``c`` holding key
token ``i + lookahead - c``; output offset ``o`` is column ``lookahead + o``.
The exclusive running min/max of the spec (f2, f3) are a masked reduction with
a constant triangular mask of shape (band_width, C): O(seq * band * C).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnxscript

from ..runtime.bundle import HEAD_DOMAIN
from ..runtime.errors import ExportError
from .head import Head

HEAD_OPSET = onnxscript.values.Opset(HEAD_DOMAIN, 1)
HEAD_FUNCTION = "SpanBand"
HEAD_INPUTS = ("hidden_states", "attention_mask", "head.W_Q", "head.W_K", "head.fc.weight", "head.fc.bias", "head.cl_w")


@dataclass(frozen=True)
class BandGeometry:
    """How the band is laid out for a head."""

    band_width: int  # offsets o = 0..band_width-1 (span lengths 1..band_width)
    lookahead: int  # key columns past the end token a non-causal head reads (0 if causal)
    closing: int = 0  # template tokens after the text ([SEP], </s>): keys and f5 probes, never a span's end
    mask_opening: bool = False  # the opening token is a template token ([CLS], <s>): never a span start

    @property
    def columns(self) -> int:
        return self.lookahead + self.band_width

    @classmethod
    def for_head(cls, head: Head, max_span_tokens: int, closing: int = 0, mask_opening: bool = False) -> BandGeometry:
        """Raises ExportError for a non-causal head without a window: its running min/max reads every
        later key of the text, which no band of fixed width holds."""
        cfg = head.config
        if not cfg.causal and cfg.sliding_window <= 0:
            raise ExportError(f"head {head.source}: non-causal with no sliding window: f2/f3 read every key of "
                              "the text after the span start, which a band of fixed width cannot hold; "
                              "expected a non-causal head with sliding_window > 0 (or a causal head)")
        if cfg.sliding_window > 0:
            width = cfg.sliding_window + 1
        else:
            width = max_span_tokens
        return cls(band_width=width, lookahead=0 if cfg.causal else cfg.sliding_window, closing=closing,
                   mask_opening=mask_opening)


def triangular_mask(geometry: BandGeometry) -> np.ndarray:
    """(band_width, C) float mask: 1 where column c holds a key strictly after the span start."""
    o = np.arange(geometry.band_width)[:, None]
    c = np.arange(geometry.columns)[None, :]
    return (c < geometry.lookahead + o).astype(np.float32)


def make_span_band_function(geometry: BandGeometry, use_cosine: bool, scale: float, mask_bos: bool,
                            opset: int = 18):
    """Build the onnxscript function ``tommer.SpanBand`` for one head geometry, in ONNX ``opset`` (>= 18)."""
    op = getattr(onnxscript, f"opset{opset}")
    lookahead, width, columns = geometry.lookahead, geometry.band_width, geometry.columns
    pad_left = width - 1  # keys before the text start
    shift = lookahead + width - 1  # padded key index of column c at row i: i + shift - c
    tri_values = triangular_mask(geometry)
    eps = 1e-12
    cosine = bool(use_cosine)
    bos = bool(mask_bos) or geometry.mask_opening
    closing = geometry.closing

    @onnxscript.script(HEAD_OPSET, default_opset=op)
    def SpanBand(hidden_states, attention_mask, w_q, w_k, w_fc, b_fc, cl_w):
        # hidden_states: (B, n, d) fp32; attention_mask: (B, n) int64, right padding
        q = op.MatMul(hidden_states, w_q)  # (B, n, r)
        k = op.MatMul(hidden_states, w_k)  # (B, n, r)
        if cosine:
            qn = op.Sqrt(op.ReduceSum(op.Mul(q, q), op.Constant(value_ints=[-1]), keepdims=1))
            kn = op.Sqrt(op.ReduceSum(op.Mul(k, k), op.Constant(value_ints=[-1]), keepdims=1))
            q = op.Div(q, op.Max(qn, op.Constant(value_float=eps)))
            k = op.Div(k, op.Max(kn, op.Constant(value_float=eps)))
        else:
            q = op.Mul(q, op.Constant(value_float=scale))
        mask = op.Cast(attention_mask, to=onnx.TensorProto.FLOAT)  # (B, n)
        n = op.Shape(hidden_states, start=1, end=2)  # [n]
        rows = op.Range(op.Constant(value_int=0), op.Squeeze(n), op.Constant(value_int=1))  # (n,)
        cols = op.Range(op.Constant(value_int=0), op.Constant(value_int=columns), op.Constant(value_int=1))
        idx = op.Add(op.Unsqueeze(rows, op.Constant(value_ints=[1])),
                     op.Sub(op.Constant(value_int=shift), cols))  # (n, C) padded key index
        pads_k = op.Constant(value_ints=[0, pad_left, 0, 0, lookahead, 0])
        k_pad = op.Pad(k, pads_k)  # (B, pad_left + n + lookahead, r)
        k_band = op.Gather(k_pad, idx, axis=1)  # (B, n, C, r)
        scores = op.ReduceSum(op.Mul(op.Unsqueeze(q, op.Constant(value_ints=[2])), k_band),
                              op.Constant(value_ints=[-1]), keepdims=0)  # (B, n, C)
        pads_m = op.Constant(value_ints=[0, pad_left, 0, lookahead])
        key_real = op.Gather(op.Pad(mask, pads_m), idx, axis=1)  # (B, n, C)
        if closing:  # an end token must have the closing tokens after it inside the text
            end_real = op.Slice(op.Pad(mask, op.Constant(value_ints=[0, 0, 0, closing])),
                                op.Constant(value_ints=[closing]), op.Add(n, op.Constant(value_ints=[closing])),
                                op.Constant(value_ints=[1]))  # mask[i + closing], 0 past the end
        else:
            end_real = mask
        valid = op.Mul(key_real, op.Unsqueeze(end_real, op.Constant(value_ints=[2])))  # (B, n, C)
        if bos:
            not_bos = op.Cast(op.Not(op.Equal(idx, op.Constant(value_int=pad_left))), to=onnx.TensorProto.FLOAT)
            valid = op.Mul(valid, not_bos)
        a0 = op.Mul(scores, valid)  # (B, n, C), 0 where invalid
        tri_c = op.Constant(value=onnx.numpy_helper.from_array(tri_values, "tri"))  # (band, C)
        masked = op.Mul(op.Unsqueeze(a0, op.Constant(value_ints=[2])), tri_c)  # (B, n, band, C)
        axis_last = op.Constant(value_ints=[-1])
        f2 = op.ReduceMin(masked, axis_last, keepdims=0)  # (B, n, band)
        f3 = op.ReduceMax(masked, axis_last, keepdims=0)
        band_cols = op.Constant(value_ints=[lookahead])
        band_end = op.Constant(value_ints=[lookahead + width])
        axis2 = op.Constant(value_ints=[2])
        f1 = op.Slice(a0, band_cols, band_end, axis2)  # (B, n, band)
        valid_band = op.Slice(valid, band_cols, band_end, axis2)
        end = op.Add(op.MatMul(hidden_states, op.Transpose(w_fc, perm=[1, 0])), b_fc)  # (B, n, 1)
        next_mask = op.Pad(op.Slice(mask, op.Constant(value_ints=[1]), op.Constant(value_ints=[2147483647]),
                                    op.Constant(value_ints=[1])), op.Constant(value_ints=[0, 0, 0, 1]))
        nxt = op.Pad(op.Slice(end, op.Constant(value_ints=[1]), op.Constant(value_ints=[2147483647]),
                              op.Constant(value_ints=[1])), op.Constant(value_ints=[0, 0, 0, 0, 1, 0]))
        nxt = op.Mul(nxt, op.Unsqueeze(next_mask, axis2))  # (B, n, 1): e_{i+1}, 0 past the text
        w = op.Reshape(cl_w, op.Constant(value_ints=[5]))
        c0 = op.Gather(w, op.Constant(value_int=0), axis=0)
        c1 = op.Gather(w, op.Constant(value_int=1), axis=0)
        c2 = op.Gather(w, op.Constant(value_int=2), axis=0)
        c3 = op.Gather(w, op.Constant(value_int=3), axis=0)
        c4 = op.Gather(w, op.Constant(value_int=4), axis=0)
        logits = op.Add(op.Add(op.Add(op.Mul(c0, f1), op.Mul(c1, f2)), op.Mul(c2, f3)),
                        op.Add(op.Mul(c3, end), op.Mul(c4, nxt)))
        span_probs = op.Mul(op.Sigmoid(logits), valid_band)  # (B, n, band)
        return span_probs

    return SpanBand
