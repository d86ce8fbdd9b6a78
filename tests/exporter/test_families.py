"""Each decoder family of the published collection: its quirks are really in the tiny model, its BOS is the
reference loader's, and Phi-3's fused projections go through the int8 and attention rewrites.

Parity with the full model's hidden_states[L+1] for every family is tests/exporter/test_export.py
(test_architecture_exports_with_parity_to_full_model, parametrized over TESTED_ARCHITECTURES).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TESTED_ARCHITECTURES, TESTED_ENCODERS, TINY_LAYER

from tommer.exporter.backbone import FAMILIES, inspect_backbone, opening_token
from tommer.exporter.random_encoders import TINY_ENCODER_CONFIGS
from tommer.exporter.random_models import FAMILY_TOKENS, TINY_CONFIGS

TEXT = "Barack Obama visited Paris, Berlin and the United Nations in New York City in 2014 with Marie Curie."


def _hidden(folder, **overrides) -> np.ndarray:
    """hidden_states[L+1] of the full tiny model, its configuration changed by ``overrides`` (same weights)."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    config = AutoConfig.from_pretrained(folder)
    for key, value in overrides.items():
        if key == "rope_parameters":
            config.rope_parameters = {**config.rope_parameters, **value}
        else:
            setattr(config, key, value)
    model = AutoModel.from_pretrained(folder, config=config).eval()
    ids = AutoTokenizer.from_pretrained(folder, add_bos_token=True)(TEXT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids, output_hidden_states=True).hidden_states[TINY_LAYER + 1][0].numpy()


# what undoes each quirk, on the same weights: the hidden states must change, so the parity test checks it
QUIRKS_UNDONE = [
    ("llama", "llama3 rope scaling", {"rope_parameters": {"rope_type": "default"}}),
    ("mistral", "sliding window", {"sliding_window": None}),
    ("gpt_neox", "parallel residual", {"use_parallel_residual": False}),
    ("gpt_neox", "partial rotary", {"rope_parameters": {"partial_rotary_factor": 1.0}}),
    ("phi", "partial rotary", {"rope_parameters": {"partial_rotary_factor": 1.0}}),
]


@pytest.mark.parametrize("arch,quirk,undo", QUIRKS_UNDONE, ids=[f"{a}-{q}" for a, q, _ in QUIRKS_UNDONE])
def test_family_quirk_is_exercised(arch, quirk, undo, tiny_factory):
    backbone, _ = tiny_factory(arch)
    n_tokens = _hidden(backbone).shape[0]
    if arch == "mistral":
        assert n_tokens > TINY_CONFIGS["mistral"]["sliding_window"] + 1, "texts shorter than the window"
    diff = np.abs(_hidden(backbone) - _hidden(backbone, **undo)).max()
    assert diff > 1e-2, f"{arch}: undoing the {quirk} changes hidden_states[L+1] by {diff:.2e} only"


def test_family_table_matches_the_tests():
    decoders = set(FAMILIES) - set(TESTED_ENCODERS)  # encoders: tests/exporter/test_encoders.py, random_encoders.py
    assert decoders == set(TESTED_ARCHITECTURES) == set(TINY_CONFIGS) == set(FAMILY_TOKENS)
    assert set(FAMILIES) - decoders == set(TINY_ENCODER_CONFIGS)


def test_phi3_has_fused_projections(tiny_factory):
    from transformers import AutoModel

    backbone, _ = tiny_factory("phi3")
    model = AutoModel.from_pretrained(backbone)
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    assert {"qkv_proj", "gate_up_proj"} <= names and not names & {"q_proj", "gate_proj", "up_proj"}
    cfg = TINY_CONFIGS["phi3"]
    assert cfg["num_key_value_heads"] < cfg["num_attention_heads"]  # grouped-query, as phi-4 (40 / 10)


@pytest.mark.parametrize("arch", TESTED_ARCHITECTURES)
def test_bos_is_the_reference_loaders(arch, tiny_factory, tmp_path):
    """The bundle opens texts with the token AutoTokenizer(add_bos_token=True) puts first, and the runtime's
    encoding is the reference's token for token."""
    from transformers import AutoTokenizer

    from tommer.exporter.export import save_tokenizer
    from tommer.runtime.core.tokenization import BundleTokenizer

    backbone, _ = tiny_factory(arch)
    info = save_tokenizer(inspect_backbone(str(backbone), TINY_LAYER), tmp_path)
    reference = AutoTokenizer.from_pretrained(backbone, add_bos_token=True)
    tokens = FAMILY_TOKENS[arch]
    texts = [TEXT, "Hi", "", "  spaced  out "]
    got = BundleTokenizer(tmp_path / info.file, info.bos_token_id, info.pad_token_id).encode_batch(texts)
    if tokens["bos_token"] is not None:  # every decoder of the collection, GPT-NeoX and Phi included
        assert (info.bos_token, info.bos_rule) == (tokens["bos_token"], "bos_token")
        assert info.bos_token_id == reference.convert_tokens_to_ids(tokens["bos_token"])
        for text, enc in zip(texts, got):
            assert enc.ids.tolist() == reference(text)["input_ids"], f"{arch}: {text!r}"
    else:  # no BOS (qwen2): the EOS opens the text, so that every real token can start a span
        assert (info.bos_token, info.bos_rule) == (tokens["eos_token"], "eos_token")
        for text, enc in zip(texts, got):
            assert enc.ids.tolist() == [info.bos_token_id, *reference(text)["input_ids"]]


def test_phi4_bos_is_not_its_eos(tiny_factory):
    """phi-4's tokenizer ends texts with <|im_end|> but its BOS is <|endoftext|>: the BOS is taken."""
    backbone, _ = tiny_factory("phi3")
    chosen = opening_token(backbone, "phi3", str(backbone))
    assert (chosen.token, chosen.rule) == ("<|endoftext|>", "bos_token")


def test_old_manifest_without_bos_fields_reads():
    from tommer.runtime.bundle import TokenizerInfo

    info = TokenizerInfo(**{"file": "tokenizer.json", "bos_token_id": 1, "pad_token_id": 0, "max_tokens": 8})
    assert (info.bos_token, info.bos_rule) == (None, None)


def test_phi3_int8_and_attention_rewrites(tiny_factory, tmp_path):
    """Fused qkv_proj / gate_up_proj: every linear layer quantized (4 per block), none of their rescales
    deferred (gate_up's output is sliced, not multiplied whole), attention on the 3-D layout in every block,
    validated by the exporter (batch invariance included); BOS recorded; position 0 never starts a span."""
    from export_helpers import TEXTS, graph_bands

    from tommer.exporter.export import export_bundle
    from tommer.exporter.spec import ExportOptions
    from tommer.runtime.core.decoding import decode_threshold

    backbone, head = tiny_factory("phi3")
    steps: list[str] = []
    manifest = export_bundle(ExportOptions(backbone=str(backbone), head=str(head), layer=TINY_LAYER,
                                           output=str(tmp_path / "b"), quantize="int8"), step=steps.append)
    blocks = TINY_LAYER + 1
    assert manifest.graph.fused_ops["com.microsoft.MatMulIntegerToFloat"] == 4 * blocks
    assert manifest.graph.rewrites.get("attention_3d") == blocks
    assert any(f"{4 * blocks} MatMuls, {4 * blocks} activations quantized per row, 0 output rescales" in s
               for s in steps), steps
    assert manifest.validation["batch_invariance_max_abs_diff"] <= 1e-5
    assert manifest.validation["dice"] > 0.9
    assert (manifest.tokenizer.bos_token, manifest.tokenizer.bos_rule) == ("<|endoftext|>", "bos_token")
    band, _, mask = graph_bands(tmp_path / "b", TEXTS)
    for b, n in enumerate(mask.sum(1)):
        starts, _, _ = decode_threshold(band[b, :n], 0.0)
        assert 0 not in starts.tolist()
        assert not band[b, np.arange(min(n, band.shape[2])), np.arange(min(n, band.shape[2]))].any()
