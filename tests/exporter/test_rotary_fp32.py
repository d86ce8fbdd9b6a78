"""Rotary tables in fp32 at every precision: the graph's inverse frequencies against the exact formula."""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir
import pytest

# rope type -> (architecture, config overrides), on the tiny geometries of random_models (head_dim 16;
# its Llama has Llama 3.1's rope scaling, with an original context short enough to scale)
CASES = {
    "default": ("qwen2", {"rope_theta": 1000000.0}),
    "default-phi3": ("phi3", {}),
    "llama3": ("llama", {}),
    "partial-gpt_neox": ("gpt_neox", {}),
    "partial-phi": ("phi", {}),
}


def exact_inv_freq(rope: str, config) -> np.ndarray:
    """``1 / theta^(2i/d)`` in float64 (d: the rotary dimension), then the rope type's own rescaling."""
    params = dict(config.rope_parameters)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    dim = int(head_dim * params.get("partial_rotary_factor", 1.0))
    inv = 1.0 / params["rope_theta"] ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    if rope == "llama3":  # Llama 3.1's frequency-dependent scaling, as published
        factor, low, high = params["factor"], params["low_freq_factor"], params["high_freq_factor"]
        old = params["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > old / low, inv / factor, inv)
        smooth = (old / wavelen - low) / (high - low)
        medium = (wavelen >= old / high) & (wavelen <= old / low)
        inv = np.where(medium, (1 - smooth) * scaled / factor + smooth * scaled, scaled)
    return inv


def rotary_constants(model: ir.Model) -> list[np.ndarray]:
    """The constant tensors the graph's Cos/Sin nodes are computed from (the inverse frequencies)."""
    found, seen = [], set()
    stack = [n for n in model.graph if n.op_type in ("Cos", "Sin")]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        for value in node.inputs:
            if value is None:
                continue
            if value.const_value is not None and value.const_value.dtype.is_floating_point():
                array = value.const_value.numpy()
                if array.size > 1 and not any(array is a for a in found):
                    found.append(array)
            elif value.producer() is not None:
                stack.append(value.producer())
    return found


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    from tommer.exporter.backbone import inspect_backbone
    from tommer.exporter.random_models import make_backbone

    made = {}

    def build(rope: str):
        if rope not in made:
            arch, overrides = CASES[rope]
            folder = make_backbone(tmp_path_factory.mktemp(f"rope-{rope}"), arch, num_layers=1, **overrides)
            made[rope] = inspect_backbone(str(folder), 0)
        return made[rope]

    return build


@pytest.mark.parametrize("rope,dtype", [("default", "bf16"), ("default-phi3", "bf16"), ("llama3", "bf16"),
                                        ("llama3", "fp16"), ("partial-gpt_neox", "bf16"), ("partial-phi", "fp16")])
def test_low_precision_graph_holds_fp32_exact_frequencies(backbones, rope, dtype):
    from tommer.exporter.backbone import load_truncated_backbone
    from tommer.exporter.graph import export_backbone
    from tommer.exporter.spec import ExportSpec

    src = backbones(rope)
    exact = exact_inv_freq(rope, src.config)
    params = dict(src.config.rope_parameters)
    assert params.get("rope_type", "default") == rope.split("-")[0] or rope.startswith("partial")
    if rope.startswith("partial"):
        assert exact.size < src.config.hidden_size // src.config.num_attention_heads // 2
    if rope == "llama3":  # the case exercises the smoothed and the divided bands of the scaling
        old = params["original_max_position_embeddings"]
        plain = 1.0 / params["rope_theta"] ** (np.arange(0, 2 * exact.size, 2) / (2 * exact.size))
        wavelen = 2 * math.pi / plain
        high, low = old / params["high_freq_factor"], old / params["low_freq_factor"]
        assert ((wavelen >= high) & (wavelen <= low)).any() and (wavelen > low).any()
    model = export_backbone(load_truncated_backbone(src), dtype, ExportSpec())
    (inv,) = [a for a in rotary_constants(model) if a.size == exact.size]
    assert inv.dtype == np.float32
    np.testing.assert_allclose(inv.ravel().astype(np.float64), exact, rtol=2e-7, atol=0)  # fp32 rounding only
    # the angles and their cos/sin are computed in fp32; only the finished tables are cast
    assert all(n.inputs[0].dtype == ir.DataType.FLOAT for n in model.graph if n.op_type in ("Cos", "Sin"))


def test_casting_twice_keeps_them_exact(backbones):
    """The bf16 estimate casts the model before it is traced: the frequencies come from the config."""
    import torch

    from tommer.exporter.backbone import load_truncated_backbone
    from tommer.exporter.graph import cast_keeping_rotary_fp32

    src = backbones("llama3")
    model = load_truncated_backbone(src).model
    cast_keeping_rotary_fp32(model, torch.bfloat16)
    model.to(torch.bfloat16)  # someone rounds them anyway
    cast_keeping_rotary_fp32(model, torch.bfloat16)
    buffers = dict(model.named_buffers())
    assert buffers["rotary_emb.inv_freq"].dtype == torch.float32
    np.testing.assert_allclose(buffers["rotary_emb.inv_freq"].numpy(), exact_inv_freq("llama3", src.config), rtol=2e-7)
    assert next(model.parameters()).dtype == torch.bfloat16


def test_per_layer_type_frequencies_stay_fp32(tmp_path):
    """ModernBERT keeps one table per attention kind (``<layer type>_inv_freq``, two thetas)."""
    import torch
    from transformers import AutoModel

    from tommer.exporter.graph import cast_keeping_rotary_fp32
    from tommer.exporter.random_encoders import make_encoder_backbone

    folder = make_encoder_backbone(tmp_path / "modernbert", "modernbert", num_layers=2,
                                   tokenizer_texts=["Ada Lovelace met Charles Babbage in London."] * 8)
    model = cast_keeping_rotary_fp32(AutoModel.from_pretrained(folder).eval(), torch.bfloat16)
    tables = {name: b for name, b in model.named_buffers() if name.endswith("inv_freq")}
    assert len(tables) >= 2 and all(b.dtype == torch.float32 for b in tables.values())
    params = model.config.rope_parameters
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    for name, table in tables.items():
        layer_type = name.split(".")[-1].removesuffix("_original_inv_freq").removesuffix("_inv_freq")
        exact = 1.0 / params[layer_type]["rope_theta"] ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
        np.testing.assert_allclose(table.numpy().astype(np.float64), exact, rtol=2e-7, atol=0)
