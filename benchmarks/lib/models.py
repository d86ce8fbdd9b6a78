"""The models the benchmarks run: the CPU benchmark's demo model (a Llama-geometry backbone with random
weights, exported), and the host feed benchmark's near-free bundle."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

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

    from .corpus import tokenizer_texts

    work.mkdir(parents=True, exist_ok=True)
    fields = dict(geometry)
    num_layers = fields.pop("num_layers")
    backbone, head = work / "backbone", work / "head"
    if not (backbone / "config.json").exists():
        make_backbone(backbone, "llama", num_layers=num_layers, tokenizer_texts=tokenizer_texts(), **fields)
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


def build_feed_bundle(folder: Path, vocab_size: int = 16000, band_width: int = 26, hit_rate: float = 0.22,
                      length_decay: float = 0.6, seed: int = 0) -> Path:
    """A bundle whose graph is ``Gather(table, input_ids) * attention_mask`` (near-free), reused when there.

    Cell ``(v, o)`` of the table is above 0.9 with probability ``hit_rate * length_decay**o``.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from tommer import __version__
    from tommer.exporter.random_models import make_tokenizer
    from tommer.runtime.bundle import (
        FORMAT_VERSION,
        MODEL_NAME,
        TOKENIZER_NAME,
        BackboneInfo,
        HeadInfo,
        Manifest,
        TokenizerInfo,
        atomic_folder,
        read_manifest,
        write_manifest,
    )

    from .corpus import texts

    if (folder / "tommer.json").is_file():
        return folder
    with atomic_folder(folder, overwrite=True) as tmp:
        tok_dir = tmp / "tok"
        make_tokenizer(tok_dir, vocab_size=vocab_size, texts=texts(4000, seed=999, mix="feed"))
        os.replace(tok_dir / TOKENIZER_NAME, tmp / TOKENIZER_NAME)
        for f in tok_dir.iterdir():
            f.unlink()
        tok_dir.rmdir()
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(tmp / TOKENIZER_NAME))
        vocab = tok.get_vocab_size()
        bos = tok.token_to_id("<|begin_of_text|>")
        rng = np.random.default_rng(seed)
        rates = hit_rate * length_decay ** np.arange(band_width)
        hit = rng.random((vocab, band_width)) < rates
        table = np.where(hit, rng.uniform(0.9, 1.0, hit.shape), rng.uniform(0.0, 0.9, hit.shape)).astype(np.float32)
        nodes = [
            helper.make_node("Gather", ["table", "input_ids"], ["cells"], axis=0),
            helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["mask_f", "last"], ["mask_3d"]),
            helper.make_node("Mul", ["cells", "mask_3d"], ["span_probs"]),
        ]
        graph = helper.make_graph(
            nodes, "tommer_feed",
            [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
             helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"])],
            [helper.make_tensor_value_info("span_probs", TensorProto.FLOAT, ["batch", "sequence", band_width])],
            [numpy_helper.from_array(table, "table"), numpy_helper.from_array(np.array([-1], np.int64), "last")])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), tmp / MODEL_NAME)
        manifest = Manifest(
            format_version=FORMAT_VERSION, tommer_version=__version__,
            backbone=BackboneInfo(source="feed: Gather of a random table (near-free)", architecture="feed",
                                  hidden_size=0, num_layers_total=0, num_layers_kept=0, vocab_size=vocab,
                                  max_positions=1 << 20),
            head=HeadInfo(source="feed", llm_name="feed", layer=0, rank=0, causal=True,
                          sliding_window=band_width - 1, use_cosine=False),
            tokenizer=TokenizerInfo(file=TOKENIZER_NAME, bos_token_id=bos, pad_token_id=bos, max_tokens=2048),
            band_width=band_width, dtype="fp32", quantization=None, opset=18,
            validation={"feed": True, "graph_run": False, "note": "benchmark bundle: no model, nothing to validate"})
        write_manifest(tmp, manifest)
    read_manifest(folder)
    return folder
