"""The demo model of the CPU benchmark: a Llama-geometry backbone with random weights, exported."""

from __future__ import annotations

from pathlib import Path

# hidden 512, 8 heads / 2 KV heads, MLP 2048, 6 blocks, vocab 32000; the head reads layer 4
CPU_DEMO = dict(hidden_size=512, intermediate_size=2048, num_attention_heads=8, num_key_value_heads=2,
                num_layers=6, vocab_size=32000, max_position_embeddings=2048)
CPU_DEMO_LAYER = 4


def build_demo(work: Path, geometry: dict = CPU_DEMO, layer: int = CPU_DEMO_LAYER, int8: bool = True) -> dict[str, str]:
    """Backbone, head, fp32 and int8 bundles under ``work`` (reused when already there).

    The tokenizer is trained on the synthetic corpus's vocabulary, so that a word is
    about one token, as with a real tokenizer on real text.
    """
    from tommer.exporter.export import export_bundle
    from tommer.exporter.random_models import make_backbone, make_head
    from tommer.exporter.spec import ExportOptions

    from .corpus import NAMES, WORDS, synthetic_texts

    work.mkdir(parents=True, exist_ok=True)
    fields = dict(geometry)
    num_layers = fields.pop("num_layers")
    backbone, head = work / "backbone", work / "head"
    if not (backbone / "config.json").exists():
        texts = synthetic_texts(2000, seed=123) + [" ".join(WORDS + NAMES)] * 50
        make_backbone(backbone, "llama", num_layers=num_layers, tokenizer_texts=texts, **fields)
    if not (head / "parameters").exists():
        make_head(head, hidden_size=fields["hidden_size"], layer=layer, rank=64, sliding_window=25)
    paths = {"backbone": str(backbone), "head": str(head), "layer": str(layer)}
    for name, quantize in (("fp32", None), ("int8", "int8")) if int8 else (("fp32", None),):
        bundle = work / f"bundle-{name}"
        if not (bundle / "tommer.json").exists():
            export_bundle(ExportOptions(backbone=str(backbone), head=str(head), layer=layer, output=str(bundle),
                                        quantize=quantize, overwrite=True))
        paths[name] = str(bundle)
    return paths
