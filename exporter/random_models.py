"""Random backbones, tokenizers and heads built from a config, for tests and benchmarks.

Nothing is downloaded: every model is made here and saved with ``save_pretrained``
into a folder, in the same formats as the real ones, so the real loading code runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .head import DEFINITION_FILE, PARAMETERS_FILE

CORPUS = [
    "John lives in New York City and works for the United Nations.",
    "Marie Curie won the Nobel Prize in Physics in 1903.",
    "The European Central Bank is in Frankfurt, Germany.",
    "Apple unveiled the iPhone in San Francisco, California.",
    "Tokyo, Osaka et Kyoto sont des villes du Japon.",
    "Ada Lovelace and Charles Babbage worked in London.",
]

# tiny geometries per architecture, each with its family's quirks set explicitly (never left to a default
# that could change): tests/exporter/test_families.py checks that undoing each quirk changes the hidden states
TINY_CONFIGS: dict[str, dict] = {
    # Llama 3.x: grouped-query attention, llama3 rope scaling (an original context short enough that the
    # tiny texts reach the scaled frequencies)
    "llama": dict(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
                  rope_theta=500000.0,
                  rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
    # Mistral 7B v0.1: sliding-window attention (a window shorter than the texts)
    "mistral": dict(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
                    sliding_window=8),
    "qwen2": dict(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2),
    # Pythia: parallel residual, rotary on a quarter of each head, LayerNorm, fused query_key_value
    "gpt_neox": dict(hidden_size=64, intermediate_size=96, num_attention_heads=4, rotary_pct=0.25,
                     use_parallel_residual=True, attention_bias=True),
    # phi-1_5/phi-2: attention and MLP in parallel from one LayerNorm, rotary on half of each head
    "phi": dict(hidden_size=64, intermediate_size=96, num_attention_heads=4, partial_rotary_factor=0.5,
                qk_layernorm=False),
    # phi-4 (Phi3ForCausalLM): fused qkv_proj and gate_up_proj, grouped-query attention, RMSNorm
    "phi3": dict(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
                 rope_theta=250000.0, pad_token_id=None, bos_token_id=None, eos_token_id=None),
}

# query/key (and fused) projections of every family, drawn with std 1/sqrt(hidden) in the random models
# (attention logits of order 1): with the default initialisation (std 0.02) attention is almost uniform
# at small widths and rotary quirks would barely show in the hidden states
ATTENTION_INPUTS = ("q_proj.weight", "k_proj.weight", "query_key_value.weight", "qkv_proj.weight")

# the special tokens of each family's tokenizer, as published (the tiny tokenizers add none by default,
# as GPT-NeoX's and Phi's do not: the BOS comes from the reference's add_bos_token=True rule)
FAMILY_TOKENS: dict[str, dict] = {
    "llama": dict(bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>"),
    "mistral": dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>"),
    "qwen2": dict(bos_token=None, eos_token="<|endoftext|>"),
    "gpt_neox": dict(bos_token="<|endoftext|>", eos_token="<|endoftext|>", tokenizer_class="GPTNeoXTokenizer"),
    "phi": dict(bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>",
                tokenizer_class="CodeGenTokenizer"),
    "phi3": dict(bos_token="<|endoftext|>", eos_token="<|im_end|>", tokenizer_class="GPT2Tokenizer"),
}


def make_tokenizer(folder: Path, vocab_size: int = 400, texts: list[str] | None = None,
                   model_type: str = "llama"):
    """Train a small byte-level BPE tokenizer with the special tokens of ``model_type``'s family.

    Byte-level offsets, no special token added by default; ``tokenizer_class`` is the family's,
    so ``AutoTokenizer`` loads the family's class (``add_bos_token`` handled as for the real one).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokens = dict(FAMILY_TOKENS.get(model_type, FAMILY_TOKENS["llama"]))
    tokenizer_class = tokens.pop("tokenizer_class", None)
    specials = list(dict.fromkeys(t for t in tokens.values() if t))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts or CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **{k: v for k, v in tokens.items() if v})
    fast.save_pretrained(folder)
    if tokenizer_class:
        config_file = Path(folder) / "tokenizer_config.json"
        config = json.loads(config_file.read_text())
        config["tokenizer_class"] = tokenizer_class
        config_file.write_text(json.dumps(config, indent=2))
    return fast


def make_backbone(folder: Path, model_type: str = "llama", num_layers: int = 4, seed: int = 0,
                  vocab_size: int = 512, tokenizer_texts: list[str] | None = None, **overrides) -> Path:
    """Save a random ``model_type`` base model with non-trivial norm weights, and a tokenizer."""
    from transformers import AutoConfig, AutoModel

    from .random_encoders import TINY_ENCODER_CONFIGS, make_encoder_backbone

    if model_type in TINY_ENCODER_CONFIGS:  # BERT, RoBERTa, ModernBERT: tokenizers with their text templates
        return make_encoder_backbone(folder, model_type, num_layers, seed, vocab_size, tokenizer_texts or CORPUS * 4,
                                     tokenizer_vocab=min(vocab_size - 100, 400 if tokenizer_texts is None
                                                         else vocab_size - 100), **overrides)

    torch.manual_seed(seed)
    fields = {"max_position_embeddings": 512, **TINY_CONFIGS.get(model_type, {}), **overrides}
    config = AutoConfig.for_model(model_type, num_hidden_layers=num_layers, vocab_size=vocab_size, **fields)
    model = AutoModel.from_config(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and p.ndim == 1:
                p.copy_(1.0 + 0.5 * torch.randn_like(p))  # the final norm must matter
            elif name.endswith(".bias"):
                p.copy_(0.05 * torch.randn_like(p))  # biases are initialised to 0: make them matter too
            if name.endswith(ATTENTION_INPUTS) and p.ndim == 2:  # peaked attention, whatever the width:
                p.normal_(0.0, config.hidden_size**-0.5)  # positions (rotary, its scaling, windows) matter
    folder = Path(folder)
    model.save_pretrained(folder)
    # room for added special tokens
    make_tokenizer(folder, vocab_size=min(vocab_size - 100, 400 if tokenizer_texts is None else vocab_size - 100),
                   texts=tokenizer_texts, model_type=model_type)
    return folder


def make_head(folder: Path, hidden_size: int, layer: int, rank: int = 16, sliding_window: int = 5,
              causal: bool = True, use_cosine: bool = True, seed: int = 0,
              llm_name: str = "random/backbone") -> Path:
    """Save a random head in the llm2ner format (definition.json + torch zip ``parameters``).

    The feature weights are those of the published checkpoint, so that some spans
    come out above 0.5 and decoding is exercised.
    """
    gen = torch.Generator().manual_seed(seed)
    state = {
        "W_Q": torch.randn(hidden_size, rank, generator=gen),
        "W_K": torch.randn(hidden_size, rank, generator=gen),
        "classifier.fc.weight": torch.randn(1, hidden_size, generator=gen) / hidden_size**0.5,
        "classifier.fc.bias": torch.tensor([-2.04]),
        "cl_w": torch.tensor([29.71, 22.74, -13.44, -0.031, 0.403]).reshape(1, 5, 1, 1),
    }
    fields = {"llm_name": llm_name, "layer": layer, "rank": rank, "causal_mask": causal,
              "sliding_window": sliding_window, "use_cosine": use_cosine, "normalize_scores": ""}
    definition = {"objects": [{"id": 1, "module": "llm2ner.models.tommer", "type": "ToMMeR",
                               "typename": "llm2ner.models.tommer.ToMMeR", "fields": fields}]}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / DEFINITION_FILE).write_text(json.dumps(definition))
    torch.save(state, folder / PARAMETERS_FILE)
    return folder
