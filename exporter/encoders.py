"""Encoder backbones (BERT, RoBERTa, ModernBERT): bidirectional attention with the padding masked.

A decoder's real tokens never see the right padding, so its graph needs no mask; an encoder's
attention is bidirectional, so every attention node must mask the padded keys, or a text's
hidden states would depend on its batch companions and on the padding length. The wrapper
``EncoderForExport`` builds the masks once from ``attention_mask`` and hands them to
transformers as prepared 4-D boolean masks (``create_bidirectional_mask`` returns a 4-D mask
as it is), and the attention implementation ``tommer_bidirectional`` gives them to
``scaled_dot_product_attention``, which torch's exporter writes as one opset-23 ``Attention``
node with a boolean mask input:

* full attention: a ``(batch, 1, n, n)`` boolean mask, key real or query padded (a padded query
  sees every key, so no softmax row is empty, even on an empty bucket row); built once per graph;
* ModernBERT's local layers: ``(batch, 1, n, n)`` = key real and ``|q - k| <= window``, or
  query padded (a padded query far from the text would otherwise see no key at all: NaN,
  which multiplied by a zero attention weight still poisons the real tokens' values).

The text template is the tokenizer's own: ``[CLS] x [SEP]`` (BERT, ModernBERT) or
``<s> x </s>`` (RoBERTa), read from ``tokenizer(text)`` against ``tokenizer(text,
add_special_tokens=False)``, as the reference feeds them (it calls the tokenizer with its
defaults).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..runtime.errors import ExportError

ENCODER_TYPES = ("bert", "roberta", "modernbert")
BIDIRECTIONAL_ATTENTION = "tommer_bidirectional"
TEMPLATE_PROBE_TEXT = "John lives in Paris."


def is_encoder(model_type: str) -> bool:
    return model_type in ENCODER_TYPES


def position_offset(config) -> int:
    """First position id of a text: RoBERTa's positions start after its padding index, others at 0."""
    if config.model_type == "roberta":
        return int(config.pad_token_id) + 1
    return 0


def usable_positions(config) -> int:
    """Tokens a text (its opening and closing tokens included) can have: RoBERTa's 514 positions give 512."""
    total = int(getattr(config, "max_position_embeddings", 512) or 512)
    return total - position_offset(config)


@dataclass(frozen=True)
class Template:
    """The ids the tokenizer puts around every text, as the reference feeds them."""

    before: tuple[int, ...]
    after: tuple[int, ...]
    before_tokens: tuple[str, ...]
    after_tokens: tuple[str, ...]


def text_template(folder: Path, source: str) -> Template:
    """The special tokens ``AutoTokenizer.from_pretrained(folder)`` wraps a text in, by default.

    Raises:
        ExportError: the wrapped encoding does not contain the plain one, the template is not
            one opening token (the runtime's opening slot) and special tokens after, or the
            empty text is not the template alone.
    """
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    plain = list(tok(TEMPLATE_PROBE_TEXT, add_special_tokens=False)["input_ids"])
    full = list(tok(TEMPLATE_PROBE_TEXT)["input_ids"])
    starts = [k for k in range(len(full) - len(plain) + 1) if full[k:k + len(plain)] == plain]
    if not plain or not starts:
        raise ExportError(f"backbone {source}: its tokenizer encodes {TEMPLATE_PROBE_TEXT!r} as {full} with its "
                          f"special tokens and {plain} without: the text is not inside its template")
    k = starts[0]
    before, after = tuple(full[:k]), tuple(full[k + len(plain):])
    specials = set(tok.all_special_ids)
    problems = []
    if len(before) != 1:
        problems.append(f"expected exactly one opening token before a text, found {list(before)}")
    if not set(before + after) <= specials:
        problems.append(f"expected special tokens around a text, found ids {list(before)} and {list(after)} "
                        f"(special ids: {sorted(specials)})")
    empty = list(tok("")["input_ids"])
    if empty != list(before + after):
        problems.append(f"expected the empty text to encode as the template {list(before + after)}, found {empty}")
    if problems:
        raise ExportError(f"backbone {source}: its tokenizer's text template cannot be fed by tommer: "
                          + "; ".join(problems))
    return Template(before=before, after=after, before_tokens=tuple(tok.convert_ids_to_tokens(list(before))),
                    after_tokens=tuple(tok.convert_ids_to_tokens(list(after))))


def key_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(batch, 1, n, n) boolean: the key is real, or the query is padding (it then sees every key, so
    no softmax row is empty, even on a row without any real token). onnxruntime's ``Attention``
    wants the mask's query axis at full length (a (batch, 1, 1, n) mask is refused), so it is
    built once per graph at (batch, 1, n, n) and shared by every block."""
    real = attention_mask.to(torch.bool)
    return real[:, None, None, :] | ~real[:, None, :, None]


def window_mask(attention_mask: torch.Tensor, window: int) -> torch.Tensor:
    """(batch, 1, n, n) boolean: key real and within ``window`` of the query, or the query padded."""
    real = attention_mask.to(torch.bool)
    n = attention_mask.shape[1]
    positions = torch.arange(n, device=attention_mask.device)
    near = (positions[:, None] - positions[None, :]).abs() <= window  # (n, n)
    return (near[None, None] & real[:, None, None, :]) | ~real[:, None, :, None]


def modernbert_window(config) -> int:
    """ModernBERT's local attention reach: ``|q - k| <= local_attention // 2`` (``config.sliding_window``)."""
    return int(config.sliding_window)


class EncoderForExport(nn.Module):
    """``(input_ids, attention_mask) -> hidden states after block L`` for an encoder, padding masked.

    Positions are given explicitly, ``offset..offset+n-1`` on every row (RoBERTa's offset is its
    padding index + 1, as its own ``create_position_ids_from_input_ids`` gives a right-padded
    text), and token types are zeros, so nothing is derived from the pad id. Absolute position
    tables (BERT, RoBERTa) end at ``max_position_embeddings``: positions past it, which only
    padding can reach (a batch padded beyond the 512 tokens of a window), read the last entry
    instead of failing the graph's ``Gather``; they are masked as keys and never scored.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.offset = position_offset(model.config)
        absolute = model.config.model_type in ("bert", "roberta")
        self.last_position = int(model.config.max_position_embeddings) - 1 if absolute else None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        batch, seq = input_ids.shape
        positions = torch.arange(seq, device=input_ids.device) + self.offset
        if self.last_position is not None:
            positions = positions.clamp(max=self.last_position)
        positions = positions.unsqueeze(0).expand(batch, seq)
        config = self.model.config
        full = key_mask(attention_mask)
        if config.model_type == "modernbert":
            local = window_mask(attention_mask, modernbert_window(config))
            masks = {"full_attention": full, "sliding_attention": local}
            out = self.model(input_ids=input_ids, attention_mask=masks, position_ids=positions)
        else:
            out = self.model(input_ids=input_ids, attention_mask=full, position_ids=positions,
                             token_type_ids=torch.zeros_like(input_ids), use_cache=False)
        return out.last_hidden_state


def bidirectional_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                            attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                            **kwargs) -> tuple[torch.Tensor, None]:
    """``scaled_dot_product_attention`` with the boolean mask ``EncoderForExport`` prepared.

    Exported at opset 23: one ``Attention`` node per block with a boolean ``attn_mask``
    (onnxruntime's fused CPU and CUDA kernels), no causal flag.
    """
    if attention_mask is None or attention_mask.dtype != torch.bool or attention_mask.ndim != 4:
        found = None if attention_mask is None else (attention_mask.dtype, tuple(attention_mask.shape))
        raise ExportError(f"the bidirectional export attention expected a 4-D boolean mask prepared by "
                          f"EncoderForExport, found {found}: this transformers version builds masks differently; "
                          "please report it")
    gqa = query.shape[1] != key.shape[1]
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask,
                                                           scale=scaling, enable_gqa=gqa)
    return out.transpose(1, 2).contiguous(), None


@contextlib.contextmanager
def bidirectional_attention_for_export(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` with ``bidirectional_attention`` while it is traced."""
    from transformers import AttentionInterface, AttentionMaskInterface

    if BIDIRECTIONAL_ATTENTION not in AttentionInterface._global_mapping:
        AttentionInterface.register(BIDIRECTIONAL_ATTENTION, bidirectional_attention)
    if BIDIRECTIONAL_ATTENTION not in AttentionMaskInterface._global_mapping:
        from transformers.masking_utils import sdpa_mask

        AttentionMaskInterface.register(BIDIRECTIONAL_ATTENTION, sdpa_mask)  # unused: masks come prepared (4-D)
    config = model.config
    previous = config._attn_implementation
    config._attn_implementation = BIDIRECTIONAL_ATTENTION
    try:
        yield model
    finally:
        config._attn_implementation = previous


def template_tokenizer_info(folder: Path, source: str, max_tokens: int, tokenizer_file: str):
    """The manifest's tokenizer entry of an encoder: the template's opening token as ``bos_token_id``
    (rule ``template``), the closing ids in ``template_after``, the pad id of the tokenizer."""
    from transformers import AutoTokenizer

    from ..runtime.bundle import TokenizerInfo

    template = text_template(folder, source)
    tok = AutoTokenizer.from_pretrained(folder)
    pad = tok.pad_token_id if tok.pad_token_id is not None else template.before[0]
    return TokenizerInfo(file=tokenizer_file, bos_token_id=int(template.before[0]), pad_token_id=int(pad),
                         max_tokens=max_tokens, bos_token=template.before_tokens[0], bos_rule="template",
                         template_before=[int(i) for i in template.before],
                         template_after=[int(i) for i in template.after])


def opens_with_bos(folder: Path, info) -> bool:
    """Whether the template's opening token is the tokenizer's BOS (RoBERTa's ``<s>``; BERT's ``[CLS]`` is
    not): what a head's ``mask_bos: null`` is settled against, as the reference settles it."""
    from transformers import AutoTokenizer

    bos = AutoTokenizer.from_pretrained(folder).bos_token_id
    return bos is not None and int(bos) == info.bos_token_id


def close_encodings(encodings: list, after: tuple[int, ...], max_tokens: int) -> list:
    """Encodings (opening token + text) cut to leave room for the closing tokens, which are appended."""
    from ..runtime.core.tokenization import Encoding

    if not after:
        return encodings
    tail = np.asarray(after, dtype=np.int64)
    keep = max_tokens - len(after)
    return [Encoding(np.concatenate([e.ids[:keep], tail]),
                     np.concatenate([e.offsets[:keep], np.zeros((len(tail), 2), dtype=np.int64)])) for e in encodings]


ENCODER_NAME_PARTS = ("bert", "roberta", "modernbert", "deberta", "electra")


def named_kind(llm_name: str) -> str | None:
    """``encoder`` or ``decoder`` for the LLM a head names, from tommer's table of published heads
    (``exporter/data/published_heads.json``: its ``model_type``), else from the name itself (an
    encoder family's name in it); None when neither tells."""
    import json

    name = (llm_name or "").strip().rstrip("/").lower()
    if not name:
        return None
    table = json.loads((Path(__file__).parent / "data" / "published_heads.json").read_text())
    for head in table.get("heads", []):
        if str(head.get("llm_name", "")).lower() in (name, name.rsplit("/", 1)[-1]) and head.get("model_type"):
            return "encoder" if is_encoder(head["model_type"]) else "decoder"
    last = name.rsplit("/", 1)[-1]
    return "encoder" if any(part in last for part in ENCODER_NAME_PARTS) else None


def kind_mismatch(llm_name: str, model_type: str) -> str | None:
    """Why a head named after an encoder cannot run on a decoder backbone (or the reverse); None if it can."""
    wanted = named_kind(llm_name)
    found = "encoder" if is_encoder(model_type) else "decoder"
    if wanted is None or wanted == found:
        return None
    reads = "bidirectional" if wanted == "encoder" else "causal"

    def a(kind: str) -> str:
        return f"an {kind}" if kind == "encoder" else f"a {kind}"

    return (f"the head was trained on {llm_name!r}, {a(wanted)}, but the backbone is {a(found)} ({model_type}): "
            f"{a(wanted)} head reads {reads} hidden states, which this backbone does not produce; pass the "
            f"{wanted} the head names as --backbone (--allow-head-mismatch does not lift this)")
