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

# tiny geometries per architecture: (config class name, fields)
TINY_CONFIGS: dict[str, dict] = {
    "llama": dict(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2),
    "mistral": dict(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
                    sliding_window=16),
    "qwen2": dict(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2),
    "gpt_neox": dict(hidden_size=64, intermediate_size=96, num_attention_heads=4, rotary_pct=0.5),
    "phi": dict(hidden_size=64, intermediate_size=96, num_attention_heads=4, partial_rotary_factor=0.5),
}


def make_tokenizer(folder: Path, vocab_size: int = 400, texts: list[str] | None = None):
    """Train a small byte-level BPE tokenizer (Llama-3 style: BOS token, byte-level offsets)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|begin_of_text|>", "<|end_of_text|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts or CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>")
    fast.save_pretrained(folder)
    return fast


def make_backbone(folder: Path, model_type: str = "llama", num_layers: int = 4, seed: int = 0,
                  vocab_size: int = 512, tokenizer_texts: list[str] | None = None, **overrides) -> Path:
    """Save a random ``model_type`` base model with non-trivial norm weights, and a tokenizer."""
    from transformers import AutoConfig, AutoModel

    torch.manual_seed(seed)
    fields = {"max_position_embeddings": 512, **TINY_CONFIGS.get(model_type, {}), **overrides}
    config = AutoConfig.for_model(model_type, num_hidden_layers=num_layers, vocab_size=vocab_size, **fields)
    model = AutoModel.from_config(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and p.ndim == 1:
                p.copy_(1.0 + 0.5 * torch.randn_like(p))  # the final norm must matter
    folder = Path(folder)
    model.save_pretrained(folder)
    # room for added special tokens
    make_tokenizer(folder, vocab_size=min(vocab_size - 100, 400 if tokenizer_texts is None else vocab_size - 100),
                   texts=tokenizer_texts)
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
