"""Load a Hugging Face decoder cut to its first ``layer + 1`` blocks.

Only blocks 0..L are ever built: the configuration is cut before the model is
instantiated, so the weights of later blocks and of the LM head are never
materialised (``AutoModel`` has no LM head). The tensor the span head reads is
the residual stream after block L, before the final norm: the final norm is
swapped for an identity while the model is exported (``without_final_norm``).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..runtime.errors import ExportError
from .encoders import EncoderForExport, bidirectional_attention_for_export, is_encoder, usable_positions
from .hub import is_local, resolve_repo_folder


@dataclass(frozen=True)
class Family:
    """How one ``model_type`` is cut, exported and fed: the only per-family knowledge of the exporter.

    ``final_norm``: attribute of the base model holding the norm after the last block (swapped
    for an identity while exporting). ``blocks``: attribute holding the blocks. ``bos``: the
    special token of the backbone tokenizer put in front of every text, as the reference
    loads it (``AutoTokenizer.from_pretrained(..., add_bos_token=True)``: the tokenizer's
    ``bos_token`` for every decoder, GPT-NeoX and Phi included, whose tokenizers add none by
    default); the EOS token stands in where a tokenizer has no BOS. ``quirks``: what the
    family's tiny test model exercises (``random_models.TINY_CONFIGS``), for the docs.
    """

    name: str
    final_norm: str
    blocks: str = "layers"
    bos: str = "bos_token"
    quirks: str = ""


# model_type -> family; a new family is one entry here, a tiny test model and a test
FAMILIES: dict[str, Family] = {
    "llama": Family("Llama 3.x", "norm", quirks="RMSNorm, grouped-query attention, llama3 rope scaling"),
    "mistral": Family("Mistral", "norm", quirks="RMSNorm, grouped-query attention, sliding-window attention"),
    "qwen2": Family("Qwen2", "norm", quirks="RMSNorm, grouped-query attention, q/k/v biases"),
    "gpt_neox": Family("GPT-NeoX (Pythia)", "final_layer_norm",
                       quirks="LayerNorm, parallel residual, rotary on part of each head, fused qkv"),
    "phi": Family("Phi (phi-1_5, phi-2)", "final_layernorm",
                  quirks="one LayerNorm feeding attention and MLP in parallel, partial rotary, biases"),
    "phi3": Family("Phi-3 (phi-4)", "norm",
                   quirks="RMSNorm, fused qkv_proj and gate_up_proj, grouped-query attention"),
    # encoders (exporter/encoders.py): bidirectional attention with the padding masked, the tokenizer's
    # own text template ([CLS] x [SEP], <s> x </s>); BERT and RoBERTa have no norm after their last block
    "bert": Family("BERT", "", blocks="encoder.layer", bos="cls_token",
                   quirks="post-LayerNorm, GELU, absolute positions, token types, WordPiece [CLS] x [SEP]"),
    "roberta": Family("RoBERTa", "", blocks="encoder.layer", bos="cls_token",
                      quirks="BERT blocks, positions from padding_idx + 1, byte-level BPE <s> x </s>"),
    "modernbert": Family("ModernBERT", "final_norm", bos="cls_token",
                         quirks="RoPE with two thetas, alternating global and local (sliding-window) attention, "
                                "pre-norm, GeGLU, final norm"),
}
# model_type -> attribute of the base model holding the final norm
SUPPORTED_ARCHITECTURES: dict[str, str] = {name: family.final_norm for name, family in FAMILIES.items()}
BACKBONE_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken"]
# per-layer lists in some configurations that must be cut with num_hidden_layers
PER_LAYER_FIELDS = ("layer_types",)


@dataclass(frozen=True)
class OpeningToken:
    """The token put in front of every text: its id, its string, and which special token it is."""

    id: int
    token: str
    rule: str  # "bos_token" (what the reference's add_bos_token=True prepends) or "eos_token" (no BOS)


REFERENCE_PROBE_TEXT = "John lives in Paris."


def opening_token(folder: Path, model_type: str, source: str) -> OpeningToken:
    """The BOS of a backbone's tokenizer as the reference loader adds it (``add_bos_token=True``).

    The family's ``bos`` token (the tokenizer's BOS for every decoder); where a tokenizer has
    none, its EOS, so that every real token can still start a span. The choice is checked
    against the reference loader itself: ``AutoTokenizer.from_pretrained(folder,
    add_bos_token=True)`` must encode a text as this id followed by the plain encoding.

    Raises:
        ExportError: no BOS nor EOS, or the reference loader opens texts with another token.
    """
    from transformers import AutoTokenizer

    family = FAMILIES[model_type]
    plain = AutoTokenizer.from_pretrained(folder)
    for rule in dict.fromkeys((family.bos, "eos_token")):
        token_id = getattr(plain, f"{rule}_id", None)
        if token_id is not None:
            break
    else:
        raise ExportError(f"backbone {source}: its tokenizer has neither a BOS nor an EOS token to open texts with")
    chosen = OpeningToken(id=int(token_id), token=str(getattr(plain, rule)), rule=rule)
    if rule == "bos_token":
        reference = AutoTokenizer.from_pretrained(folder, add_bos_token=True)
        got = list(reference(REFERENCE_PROBE_TEXT)["input_ids"])
        want = [chosen.id, *plain(REFERENCE_PROBE_TEXT, add_special_tokens=False)["input_ids"]]
        if got != want:
            raise ExportError(f"backbone {source}: the reference loader (add_bos_token=True) encodes "
                              f"{REFERENCE_PROBE_TEXT!r} as {got}, tommer would feed {want} ({chosen.token!r} "
                              "first, no special token after): please report this tokenizer")
    return chosen


def supported_list() -> str:
    return ", ".join(sorted(SUPPORTED_ARCHITECTURES))


def check_architecture(model_type: str, source: str) -> None:
    if model_type not in SUPPORTED_ARCHITECTURES:
        raise ExportError(
            f"backbone {source}: architecture {model_type!r} is not supported; supported architectures: "
            f"{supported_list()}"
        )


def cut_config(config, layer: int, source: str):
    """Copy of ``config`` with ``layer + 1`` blocks; errors if the layer does not exist."""
    total = int(config.num_hidden_layers)
    if not 0 <= layer < total:
        raise ExportError(
            f"--layer {layer} is past the depth of backbone {source}, which has {total} blocks "
            f"(valid layers: 0..{total - 1})"
        )
    cut = copy.deepcopy(config)
    cut.num_hidden_layers = layer + 1
    for name in PER_LAYER_FIELDS:
        value = getattr(cut, name, None)
        if isinstance(value, list) and len(value) == total:
            setattr(cut, name, value[: layer + 1])
    return cut


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence the expected 'weights of later blocks were not used' report."""
    logger = logging.getLogger("transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@dataclass(frozen=True)
class BackboneSource:
    """A resolved backbone: local folder and configuration, before any weight is read."""

    folder: Path
    source: str
    revision: str | None
    config: object
    layer: int

    @property
    def model_type(self) -> str:
        return str(self.config.model_type)

    @property
    def hidden_size(self) -> int:
        return int(self.config.hidden_size)

    @property
    def vocab_size(self) -> int:
        return int(self.config.vocab_size)

    @property
    def num_layers_total(self) -> int:
        return int(self.config.num_hidden_layers)

    @property
    def max_positions(self) -> int:
        if is_encoder(self.model_type):  # RoBERTa: 514 positions, the first two never used
            return usable_positions(self.config)
        return int(getattr(self.config, "max_position_embeddings", 2048) or 2048)

    @property
    def weight_bytes(self) -> int:
        """Bytes of the kept blocks' share of the checkpoint (a size estimate, from file sizes)."""
        total = sum(p.stat().st_size for p in self.folder.glob("*.safetensors"))
        return int(total * (self.layer + 1) / max(int(self.config.num_hidden_layers), 1))


def inspect_backbone(ref: str, layer: int, revision: str | None = None,
                     token: str | bool | None = None) -> BackboneSource:
    """Resolve (download if needed) and check a backbone without reading its weights.

    Raises:
        ExportError: unsupported architecture, layer past the depth, no safetensors
            weights, gated or missing repository.
    """
    from transformers import AutoConfig

    folder = resolve_repo_folder(ref, revision=revision, token=token,
                                 allow_patterns=BACKBONE_PATTERNS, what="backbone")
    config = AutoConfig.from_pretrained(folder)
    check_architecture(config.model_type, ref)
    cut_config(config, layer, ref)
    if not any(folder.glob("*.safetensors")):
        raise ExportError(f"backbone {ref}: no *.safetensors weights in {folder}; only safetensors "
                          "checkpoints are loaded (they cannot run code when read)")
    source = str(folder.resolve()) if is_local(ref) else ref  # a folder works from anywhere
    return BackboneSource(folder=folder, source=source, revision=revision, config=config, layer=layer)


@dataclass
class TruncatedBackbone:
    """A base model holding blocks 0..layer only, and where it came from."""

    model: nn.Module
    src: BackboneSource

    @property
    def model_type(self) -> str:
        return self.src.model_type

    @property
    def vocab_size(self) -> int:
        return self.src.vocab_size


def load_truncated_backbone(src: BackboneSource) -> TruncatedBackbone:
    """Load blocks 0..layer of a resolved backbone, in fp32.

    Raises:
        ExportError: weights missing for a kept block.
    """
    from transformers import AutoModel

    config, layer = src.config, src.layer
    with _quiet_transformers():
        model, info = AutoModel.from_pretrained(src.folder, config=cut_config(config, layer, src.source),
                                                dtype=torch.float32, output_loading_info=True)
    missing = [k for k in info.get("missing_keys", []) if "rotary" not in k]
    if missing:
        raise ExportError(f"backbone {src.source}: weights missing for kept blocks: {sorted(missing)[:8]}")
    kept = len(functools.reduce(getattr, FAMILIES[src.model_type].blocks.split("."), model))
    assert kept == layer + 1, f"expected {layer + 1} blocks after truncation, found {kept}"
    return TruncatedBackbone(model=model.eval(), src=src)


@contextlib.contextmanager
def without_final_norm(model: nn.Module, model_type: str) -> Iterator[nn.Module]:
    """Swap the final norm for an identity, so the output is the residual stream after block L."""
    name = FAMILIES[model_type].final_norm
    if not name:  # BERT, RoBERTa: the last block's own LayerNorm is part of hidden_states[L + 1]
        yield model
        return
    norm = getattr(model, name)
    setattr(model, name, nn.Identity())
    try:
        yield model
    finally:
        setattr(model, name, norm)


class BackboneForExport(nn.Module):
    """Positional-tensor wrapper: ``(input_ids, attention_mask) -> hidden states after block L``.

    The backbones are causal decoders fed right-padded batches, so real tokens
    never attend to padding and the attention mask does not change their hidden
    states: the backbone runs with its plain causal mask (a simpler, faster
    graph), and ``attention_mask`` is used by the span head only. Positions are
    ``0..n-1`` on every row, given explicitly with the batch's shape so that the
    rotary tables have the batch dimension the ONNX ``RotaryEmbedding`` expects.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if is_encoder(self.model.config.model_type):  # bidirectional: the padding is masked in every block
            return EncoderForExport(self.model)(input_ids, attention_mask)
        batch, seq = input_ids.shape
        positions = torch.arange(seq, device=input_ids.device).unsqueeze(0).expand(batch, seq)
        out = self.model(input_ids=input_ids, position_ids=positions, use_cache=False)
        return out.last_hidden_state  # (batch, seq, hidden)


CAUSAL_ATTENTION = "tommer_causal"


def causal_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                     **kwargs) -> tuple[torch.Tensor, None]:
    """Causal attention with no mask tensor: ``scaled_dot_product_attention(is_causal=True)``.

    Exported at opset 23 this is one ONNX ``Attention`` node (``is_causal=1``, grouped-query
    heads kept as they are), which onnxruntime runs with its fused kernels (flash or
    memory-efficient attention on CUDA): no (batch, heads, n, n) tensor and no mask input.
    Registered as the attention implementation ``tommer_causal``, which has no mask
    function, so transformers builds no mask at all (the padding is on the right and
    never attended to by real tokens). A layer with a sliding window gets its window as
    one (n, n) boolean mask.
    """
    if attention_mask is not None:
        raise ExportError("the causal export attention got a mask tensor: this transformers version builds masks "
                          f"for custom attention implementations ({CAUSAL_ATTENTION}); please report it")
    gqa = query.shape[1] != key.shape[1]
    window = kwargs.get("sliding_window")
    if window:  # keys within the window only: an (n, n) boolean mask, shared by the batch and the heads
        positions = torch.arange(query.shape[2], device=query.device)
        behind = positions[:, None] - positions[None, :]
        mask = (behind >= 0) & (behind < window)
        out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling,
                                                               enable_gqa=gqa)
    else:
        out = torch.nn.functional.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scaling,
                                                               enable_gqa=gqa)
    return out.transpose(1, 2).contiguous(), None


@contextlib.contextmanager
def causal_attention_for_export(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` with ``causal_attention`` (see there) while it is traced; encoders with
    ``encoders.bidirectional_attention``."""
    from transformers import AttentionInterface

    if is_encoder(model.config.model_type):
        with bidirectional_attention_for_export(model):
            yield model
        return

    if CAUSAL_ATTENTION not in AttentionInterface._global_mapping:
        AttentionInterface.register(CAUSAL_ATTENTION, causal_attention)
    config = model.config
    previous = config._attn_implementation
    config._attn_implementation = CAUSAL_ATTENTION
    try:
        yield model
    finally:
        config._attn_implementation = previous


def hidden_states_after_block(backbone: TruncatedBackbone, input_ids: torch.Tensor) -> torch.Tensor:
    """Reference hidden states (batch, seq, hidden) after block L, before the final norm."""
    with without_final_norm(backbone.model, backbone.model_type) as model, torch.no_grad():
        if is_encoder(backbone.model_type):  # transformers' own attention and masks, one unpadded text
            return model(input_ids=input_ids).last_hidden_state.to(torch.float32)
        return BackboneForExport(model)(input_ids, torch.ones_like(input_ids)).to(torch.float32)
