"""The reference maths of the span head (spec section 3), in fp32 PyTorch.

This is the dense ``(seq, seq)`` computation as the reference code does it,
min/max pooling included, for ONE text without padding. The exporter validates
its graphs against it, and the tests use it too. Batches are scored one text at
a time, which is the padding rule of the spec: a text's output is the
reference's output for that text alone.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .head import Head, HeadConfig


def valid_pairs(n: int, config: HeadConfig, mask_opening: bool = False) -> torch.Tensor:
    """Boolean (n, n) mask of valid (end i, start j) pairs (the reference's ``masks.create_mask``;
    ``mask_opening``: position 0 is a template token and never starts a span, whatever mask_bos)."""
    i = torch.arange(n).unsqueeze(1)
    j = torch.arange(n).unsqueeze(0)
    window = config.sliding_window
    if config.causal:
        valid = j <= i
        if window > 0:
            valid &= (i - j) <= window
    elif window > 0:
        valid = (i - j).abs() <= window
    else:  # non-causal, no window: every pair (the reference's "no mask")
        valid = torch.ones(n, n, dtype=torch.bool)
    if config.mask_bos or mask_opening:
        valid &= j != 0
    return valid


def _pool_right_strict(a: torch.Tensor, sign: float) -> torch.Tensor:
    """max (sign=1) or min (sign=-1) over k > j of a[..., i, k], zeros padded past the row."""
    n = a.shape[-1]
    pooled = F.max_pool2d(F.pad(sign * a, (-1, n), value=0.0).unsqueeze(0), kernel_size=(1, n), stride=1)
    return sign * pooled.squeeze(0)


def dense_span_probs_batched(hidden: torch.Tensor, attention_mask: torch.Tensor, head: Head, closing: int = 0,
                             mask_opening: bool = False) -> torch.Tensor:
    """Span probabilities of a right-padded batch, each text as if alone (the spec's padding rule).

    Encoders (``closing`` template tokens after each text, ``mask_opening``): the reference
    scores the closing tokens as keys and as f5's next token; no span may end on them (nor
    start on the opening token), since they have no characters.

    Args:
        hidden: (batch, n, d) hidden states (BOS first in every row).
        attention_mask: (batch, n), 1 on real tokens.
        head: the span head.

    Returns:
        (batch, n, n) fp32 probabilities, ``[b, i, j]`` = P(span from token j to token i);
        0 where invalid or touching padding.
    """
    cfg = head.config
    hidden = hidden.to(torch.float32)
    n = hidden.shape[1]
    real = attention_mask.to(torch.bool)  # (batch, n)
    q, k = hidden @ head.w_q, hidden @ head.w_k  # (batch, n, r)
    if cfg.use_cosine:
        q, k = F.normalize(q, dim=-1, eps=1e-12), F.normalize(k, dim=-1, eps=1e-12)
    scores = cfg.scale * (q @ k.transpose(1, 2))  # (batch, n, n)
    valid = valid_pairs(n, cfg, mask_opening).unsqueeze(0) & real.unsqueeze(2) & real.unsqueeze(1)
    a0_valid = valid
    if closing:
        end_real = F.pad(real[:, closing:], (0, closing), value=False)[:, :n]  # (batch, n)
        valid = valid & end_real.unsqueeze(2)
    a0 = scores.masked_fill(~a0_valid, 0.0)  # (batch, n, n): closing tokens are keys too
    end = (hidden @ head.w_fc.T + head.b_fc).squeeze(-1)  # (batch, n)
    nxt = F.pad(end[:, 1:] * real[:, 1:], (0, 1), value=0.0)  # e_{i+1}, 0 past the text
    end2d, next2d = end.unsqueeze(-1).expand(-1, -1, n), nxt.unsqueeze(-1).expand(-1, -1, n)
    features = torch.stack([a0, _pool_right_strict(a0, -1.0), _pool_right_strict(a0, 1.0), end2d, next2d], dim=1)
    logits = (head.cl_w.reshape(1, 5, 1, 1) * features).sum(dim=1)  # (batch, n, n)
    return torch.sigmoid(logits).masked_fill(~valid, 0.0)


def dense_span_probs(hidden: torch.Tensor, head: Head, closing: int = 0, mask_opening: bool = False) -> torch.Tensor:
    """Span probabilities of one unpadded text: (n, d) -> (n, n), ``[i, j]`` = P(span j..i)."""
    mask = torch.ones(1, hidden.shape[0], dtype=torch.int64)
    return dense_span_probs_batched(hidden.unsqueeze(0), mask, head, closing, mask_opening)[0]


def dense_to_band(dense: torch.Tensor, band_width: int) -> torch.Tensor:
    """(n, n) ``[i, j]`` -> (n, band_width) ``[i, o]`` with j = i - o (0 where j < 0)."""
    n = dense.shape[0]
    band = torch.zeros(n, band_width, dtype=dense.dtype)
    for o in range(min(band_width, n)):
        band[o:, o] = torch.diagonal(dense, offset=-o)
    return band


def reference_band(hidden: torch.Tensor | np.ndarray, attention_mask: torch.Tensor | np.ndarray,
                   head: Head, band_width: int, closing: int = 0, mask_opening: bool = False) -> np.ndarray:
    """Band of span probabilities for a right-padded batch, one text at a time.

    Args:
        hidden: (batch, seq, d) hidden states; padded positions are ignored.
        attention_mask: (batch, seq), 1 for real tokens (right padding).
        head: the span head.
        band_width: number of offsets kept per end token.

    Returns:
        (batch, seq, band_width) fp32 array, zero on padding.
    """
    hidden = torch.as_tensor(np.asarray(hidden, dtype=np.float32))
    lengths = np.asarray(attention_mask).sum(axis=1).astype(int)
    out = np.zeros((hidden.shape[0], hidden.shape[1], band_width), dtype=np.float32)
    with torch.no_grad():
        for b, n in enumerate(lengths):
            out[b, :n] = dense_to_band(dense_span_probs(hidden[b, :n], head, closing, mask_opening),
                                       band_width).numpy()
    return out
