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


REAL_GEOMETRY_RANK, REAL_GEOMETRY_WINDOW = 64, 25  # the published heads' rank and window


def build_real_geometry(work: Path, name: str, geometry: dict, layer: int, texts: list[str],
                        check_tiny_fields: bool = False) -> tuple[Path, Path]:
    """A backbone of a real model's shapes (``geometry["config"]``, random weights) cut to ``layer + 1``
    blocks, and a random head of the published rank and window naming it; built once per folder.

    ``check_tiny_fields``: refuse a geometry that leaves a field to the tiny test configuration of
    its family (``random_models.TINY_CONFIGS``), which would then shrink the real shapes.
    """
    from tommer.exporter.random_models import TINY_CONFIGS, make_backbone, make_head

    fields = dict(geometry["config"])
    if check_tiny_fields:
        leaking = set(TINY_CONFIGS.get(geometry["model_type"], {})) - set(fields)
        assert not leaking, f"{name}: the tiny test configuration would set {sorted(leaking)}"
    fields.pop("num_hidden_layers")
    vocab = fields.pop("vocab_size")
    backbone, head = work / name / name, work / name / "head"  # the folder bears the LLM's name
    if not (backbone / "config.json").exists():
        make_backbone(backbone, geometry["model_type"], num_layers=layer + 1, vocab_size=vocab,
                      tokenizer_texts=texts, **fields)
    if not (head / "parameters").exists():
        make_head(head, hidden_size=fields["hidden_size"], layer=layer, rank=REAL_GEOMETRY_RANK,
                  sliding_window=REAL_GEOMETRY_WINDOW, llm_name=geometry["llm_name"])
    return backbone, head


def export_in_child(backbone: Path, head: Path, layer: int, out: Path, quantize: str | None) -> dict:
    """One export in a fresh process (its memory returns after), done once per folder; its manifest's
    validation figures, the export's seconds and the bundle's size."""
    import json
    import subprocess
    import sys
    import time

    if not (out / "tommer.json").exists():
        code = ("import json, sys\nfrom tommer.exporter.export import export_bundle\n"
                "from tommer.exporter.spec import ExportOptions\n"
                "if __name__ == '__main__':\n"
                "    export_bundle(ExportOptions(**json.loads(sys.argv[1])))\n")
        args = dict(backbone=str(backbone), head=str(head), layer=layer, output=str(out), quantize=quantize,
                    overwrite=True, quiet=True)
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"export of {backbone.name} ({quantize or 'fp32'}) failed:\n{proc.stderr[-4000:]}")
        (out / "export_seconds.txt").write_text(f"{time.perf_counter() - start:.1f}\n")
    manifest = json.loads((out / "tommer.json").read_text())
    keys = ("max_abs_error", "exact_match_rate", "dice", "batch_invariance_max_abs_diff")
    return {"export_seconds": float((out / "export_seconds.txt").read_text()),
            "validation": {k: manifest["validation"].get(k) for k in keys},
            "bundle_bytes": sum(p.stat().st_size for p in out.iterdir())}
