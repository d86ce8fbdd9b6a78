"""Tiny random BERT, RoBERTa and ModernBERT backbones, with tokenizers that wrap texts as the real ones do.

* BERT: WordPiece, lower case, ``[CLS] x [SEP]`` (``TemplateProcessing``), ``[PAD]`` id 0;
* RoBERTa: byte-level BPE, ``<s> x </s>`` (``RobertaProcessing``), ``<pad>`` id 1, positions
  from ``pad + 1``;
* ModernBERT: byte-level BPE, ``[CLS] x [SEP]``, alternating global and local attention, a
  final norm (not part of ``hidden_states[L + 1]``).

Every norm weight and bias is made non-trivial and query/key weights are scaled up, as for the
decoders (``random_models``), so that positions, windows and the final norm matter.
"""

from __future__ import annotations

from pathlib import Path

import torch

QK_GAIN = 4.0
SPECIALS = {
    "bert": dict(cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]", unk_token="[UNK]", mask_token="[MASK]"),
    "modernbert": dict(cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]", unk_token="[UNK]",
                       mask_token="[MASK]"),
    "roberta": dict(bos_token="<s>", pad_token="<pad>", eos_token="</s>", unk_token="<unk>", mask_token="<mask>",
                    cls_token="<s>", sep_token="</s>"),
}
ORDER = {  # the special tokens' ids are their rank here, as in the published vocabularies' first entries
    "bert": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
    "modernbert": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
    "roberta": ["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
}

TINY_ENCODER_CONFIGS: dict[str, dict] = {
    # bert-base-uncased: post-LayerNorm blocks, GELU, absolute positions, token types
    "bert": dict(hidden_size=64, intermediate_size=96, num_attention_heads=4, hidden_act="gelu",
                 max_position_embeddings=512, type_vocab_size=2, pad_token_id=0),
    # roberta-base: BERT's blocks, positions from padding_idx + 1 (514 positions, 512 usable)
    "roberta": dict(hidden_size=64, intermediate_size=96, num_attention_heads=4, hidden_act="gelu",
                    max_position_embeddings=514, type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2),
    # ModernBERT-base: RoPE with two thetas, global attention every 2nd layer, local window 8 (|q - k| <= 4),
    # pre-norm, GeGLU, a final norm
    "modernbert": dict(hidden_size=64, intermediate_size=96, num_attention_heads=4, global_attn_every_n_layers=2,
                       local_attention=8, global_rope_theta=160000.0, local_rope_theta=10000.0,
                       max_position_embeddings=512, pad_token_id=0, cls_token_id=2, sep_token_id=3,
                       bos_token_id=2, eos_token_id=3, norm_bias=False, attention_bias=False, mlp_bias=False),
}


def make_encoder_tokenizer(folder: Path, model_type: str, vocab_size: int, texts: list[str]):
    """Train a small tokenizer of ``model_type``'s kind; saved as the family's fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ORDER[model_type]
    tokens = SPECIALS[model_type]
    if model_type == "bert":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    else:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    ids = {t: tok.token_to_id(t) for t in specials}
    assert [ids[t] for t in specials] == list(range(len(specials))), ids
    if model_type == "roberta":
        tok.post_processor = processors.RobertaProcessing(("</s>", ids["</s>"]), ("<s>", ids["<s>"]),
                                                          trim_offsets=False, add_prefix_space=False)
    else:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **tokens)
    fast.save_pretrained(folder)
    return fast


def make_encoder_backbone(folder: Path, model_type: str, num_layers: int = 4, seed: int = 0,
                          vocab_size: int = 512, tokenizer_texts: list[str] = (), tokenizer_vocab: int = 400,
                          **overrides) -> Path:
    """Save a random encoder base model (non-trivial norms and biases, peaked attention) and its tokenizer,
    trained on ``tokenizer_texts`` (``random_models.make_backbone`` passes its corpus)."""
    from transformers import AutoConfig, AutoModel

    torch.manual_seed(seed)
    fields = {**TINY_ENCODER_CONFIGS[model_type], **overrides}
    config = AutoConfig.for_model(model_type, num_hidden_layers=num_layers, vocab_size=vocab_size, **fields)
    model = AutoModel.from_config(config, attn_implementation="sdpa").eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            lowered = name.lower()
            if "norm" in lowered and p.ndim == 1:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.5 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.05 * torch.randn_like(p))
            if name.endswith(("query.weight", "key.weight", "Wqkv.weight")):
                p.mul_(QK_GAIN)
            if "position_embeddings" in name:
                p.mul_(4.0)  # absolute positions must matter (RoBERTa's offset is checked through them)
    folder = Path(folder)
    model.save_pretrained(folder)
    make_encoder_tokenizer(folder, model_type, vocab_size=min(vocab_size - 100, tokenizer_vocab),
                           texts=list(tokenizer_texts))
    return folder
