"""CPU tokens/s of each decoder family's real geometry at its published layer, side by side in one run.

    python benchmarks/experiments/heads_cpu.py [--work /tmp/tommer-heads-cpu] [--docs 200] [--rounds 2] [--no-int8]

Nothing is downloaded: each backbone is built from its real configuration (hidden size, heads,
MLP, vocabulary, rotary, norms) with random weights, cut to its published layer + 1 blocks
(the exporter never builds more), with a published-size head (rank 64, window 25), exported
fp32 (and int8) one at a time. Every bundle then annotates the same synthetic corpus
(``lib/corpus.py``) Parquet to Parquet in a fresh process per run
(``lib/runs.run_worker``), the arms alternating round by round (``lib/metrics.alternating_rounds``).
The figures are ``lib/runs.figures`` and the table ``lib/report.markdown_table``, as ``tommer-bench``.

Larger backbones are not built: their tokens/s is estimated from FLOPs per token
(``lib/metrics.backbone_flops`` over the corpus's lengths) and the measured rate of the
nearest measured geometry (same MLP kind), and labelled as an estimate.

The oracle error of each family is measured on its tiny test model (``random_models``):
max abs difference between the exported graph's band and the reference maths on the FULL
model's ``hidden_states[L+1]``, and whether the threshold-decoded spans are identical.
Writes ``benchmarks/results/heads_cpu.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tommer.benchmarks.lib.models import build_real_geometry, export_in_child
from tommer.benchmarks.lib.report import RESULTS

PUBLISHED = Path(__file__).resolve().parents[2] / "exporter" / "data" / "published_heads.json"

LLAMA3_ROPE = {"rope_type": "llama3", "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}


def _neox(hidden, layers, heads, vocab=50304):
    return dict(hidden_size=hidden, intermediate_size=4 * hidden, num_attention_heads=heads, num_hidden_layers=layers,
                vocab_size=vocab, max_position_embeddings=2048, rotary_pct=0.25, rotary_emb_base=10000,
                use_parallel_residual=True, attention_bias=True, tie_word_embeddings=False)


def _phi(hidden, layers, heads, partial):
    return dict(hidden_size=hidden, intermediate_size=4 * hidden, num_attention_heads=heads, num_hidden_layers=layers,
                vocab_size=51200, max_position_embeddings=2048, partial_rotary_factor=partial, qk_layernorm=False,
                rope_theta=10000.0, tie_word_embeddings=False)


def _llama(hidden, ff, layers, heads, kv, factor, tie):
    return dict(hidden_size=hidden, intermediate_size=ff, num_attention_heads=heads, num_key_value_heads=kv,
                num_hidden_layers=layers, vocab_size=128256, max_position_embeddings=131072, rope_theta=500000.0,
                rope_scaling={**LLAMA3_ROPE, "factor": factor}, tie_word_embeddings=tie)


# the published configurations (config.json of each Hub repository); layer: the published head's
GEOMETRIES: dict[str, dict] = {
    "pythia-70m": dict(model_type="gpt_neox", llm_name="EleutherAI/pythia-70m", measure=True, config=_neox(512, 6, 8)),
    "pythia-410m": dict(model_type="gpt_neox", llm_name="EleutherAI/pythia-410m", measure=True,
                        config=_neox(1024, 24, 16)),
    "phi-1_5": dict(model_type="phi", llm_name="microsoft/phi-1_5", measure=True, config=_phi(2048, 24, 32, 0.5)),
    "Llama-3.2-1B": dict(model_type="llama", llm_name="meta-llama/Llama-3.2-1B", measure=True,
                         config=_llama(2048, 8192, 16, 32, 8, 32.0, True)),
    # estimated from FLOPs per token
    "Llama-3.2-3B": dict(model_type="llama", llm_name="meta-llama/Llama-3.2-3B",
                         config=_llama(3072, 8192, 28, 24, 8, 32.0, True)),
    "Llama-3.1-8B": dict(model_type="llama", llm_name="meta-llama/Llama-3.1-8B",
                         config=_llama(4096, 14336, 32, 32, 8, 8.0, False)),
    "mistral-7b": dict(model_type="mistral", llm_name="mistralai/Mistral-7B-v0.1",
                       config=dict(hidden_size=4096, intermediate_size=14336, num_attention_heads=32,
                                   num_key_value_heads=8, num_hidden_layers=32, vocab_size=32000,
                                   max_position_embeddings=32768, sliding_window=4096, rope_theta=10000.0)),
    "phi-2": dict(model_type="phi", llm_name="microsoft/phi-2", config=_phi(2560, 32, 32, 0.4)),
    "phi-4": dict(model_type="phi3", llm_name="microsoft/phi-4",
                  config=dict(hidden_size=5120, intermediate_size=17920, num_attention_heads=40, num_key_value_heads=10,
                              num_hidden_layers=40, vocab_size=100352, max_position_embeddings=16384,
                              rope_theta=250000.0, pad_token_id=100349, bos_token_id=100257, eos_token_id=100265)),
    "pythia-1.4b": dict(model_type="gpt_neox", llm_name="EleutherAI/pythia-1.4b", config=_neox(2048, 24, 16)),
    "pythia-2.8b": dict(model_type="gpt_neox", llm_name="EleutherAI/pythia-2.8b", config=_neox(2560, 32, 32, 50304)),
    "pythia-6.9b": dict(model_type="gpt_neox", llm_name="EleutherAI/pythia-6.9b", config=_neox(4096, 32, 32, 50432)),
    "pythia-12b": dict(model_type="gpt_neox", llm_name="EleutherAI/pythia-12b", config=_neox(5120, 36, 40, 50688)),
}
DECODER_TYPES = ("llama", "mistral", "qwen2", "gpt_neox", "phi", "phi3")  # the oracle's families
ASSUMED_LAYER = 5  # backbones whose heads' layers are not confirmed offline (exporter/data/published_heads.json)
# the measured geometry each estimate scales from (same family or same MLP kind)
ESTIMATE_BASIS = {"llama": "Llama-3.2-1B", "mistral": "Llama-3.2-1B", "phi3": "Llama-3.2-1B", "phi": "phi-1_5",
                  "gpt_neox": "pythia-410m"}


def published_layers() -> dict[str, int]:
    """Backbone short name -> the published head's layer (the lowest when there are several)."""
    table = json.loads(PUBLISHED.read_text())
    layers: dict[str, int] = {}
    for head in table["heads"]:
        name = head["id"].split("ToMMeR-", 1)[1].rsplit("_L", 1)[0]
        layers[name] = min(layers.get(name, head["layer"]), head["layer"])
    return layers


def layer_of(name: str, layers: dict[str, int]) -> tuple[int, bool]:
    """The geometry's layer and whether it is a published head's (else ASSUMED_LAYER)."""
    if name == "Llama-3.2-1B":
        return 6, True  # the vendored head's layer (the model card's)
    return (layers[name], True) if name in layers else (ASSUMED_LAYER, False)


def build(work: Path, name: str, layer: int, texts: list[str]) -> tuple[Path, Path]:
    """Backbone cut to layer + 1 blocks (real shapes, random weights) and a random head naming it."""
    return build_real_geometry(work, name, GEOMETRIES[name], layer, texts, check_tiny_fields=True)


def oracle_errors(work: Path) -> dict[str, dict]:
    """Per family: the tiny model's graph against the reference maths on the full model's hidden_states[L+1]."""
    import numpy as np
    import torch
    from transformers import AutoModel

    from tommer.exporter.backbone import FAMILIES
    from tommer.exporter.export import export_bundle
    from tommer.exporter.head import load_head
    from tommer.exporter.random_models import make_backbone, make_head
    from tommer.exporter.reference import reference_band
    from tommer.exporter.spec import ExportOptions
    from tommer.exporter.texts import VALIDATION_TEXTS
    from tommer.runtime.bundle import read_manifest
    from tommer.runtime.core.decoding import decode_threshold
    from tommer.runtime.core.tokenization import BundleTokenizer, pad_batch
    from tommer.runtime.execution.session import create_session, run_band

    layer, out = 2, {}
    for arch in DECODER_TYPES:
        root = work / "tiny" / arch
        backbone = make_backbone(root / "backbone", arch, num_layers=4)
        head_dir = make_head(root / "head", hidden_size=64, layer=layer)
        export_bundle(ExportOptions(backbone=str(backbone), head=str(head_dir), layer=layer,
                                    output=str(root / "bundle"), overwrite=True, quiet=True))
        manifest = read_manifest(root / "bundle")
        texts = list(VALIDATION_TEXTS)
        encodings = BundleTokenizer.from_bundle(root / "bundle", manifest).encode_batch(texts)
        ids, mask = pad_batch([e.ids for e in encodings], manifest.tokenizer.pad_token_id)
        band = run_band(create_session(root / "bundle" / "model.onnx"), ids, mask)
        model = AutoModel.from_pretrained(backbone).eval()
        hidden = np.zeros((*ids.shape, 64), np.float32)
        with torch.no_grad():
            for b, n in enumerate(mask.sum(1)):
                states = model(input_ids=torch.from_numpy(ids[b:b + 1, :n]), output_hidden_states=True).hidden_states
                hidden[b, :n] = states[layer + 1][0].numpy()
        expected = reference_band(hidden, mask, load_head(head_dir), manifest.band_width)
        same = all([s.tolist() for s in decode_threshold(band[b, :n])[:2]]
                   == [s.tolist() for s in decode_threshold(expected[b, :n])[:2]] for b, n in enumerate(mask.sum(1)))
        out[arch] = {"family": FAMILIES[arch].name, "quirks": FAMILIES[arch].quirks,
                     "max_abs_error_vs_full_model": float(np.abs(band - expected).max()),
                     "identical_decoded_spans": bool(same), "texts": len(texts),
                     "spans": int(sum(len(decode_threshold(expected[b, :n])[0]) for b, n in enumerate(mask.sum(1)))),
                     "validation_max_abs_error": manifest.validation["max_abs_error"],
                     "bos": {"token": manifest.tokenizer.bos_token, "rule": manifest.tokenizer.bos_rule}}
        print(f"oracle {arch}: max abs error {out[arch]['max_abs_error_vs_full_model']:.2e}, "
              f"identical spans {same}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/tommer-heads-cpu"), help="scratch folder (default: %(default)s)")
    parser.add_argument("--docs", type=int, default=200, help="synthetic documents (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (default: %(default)s)")
    parser.add_argument("--batch-tokens", type=int, default=512, help="--batch-tokens (default: %(default)s, the CPU default)")
    parser.add_argument("--no-int8", action="store_true", help="fp32 bundles only")
    parser.add_argument("--only", default="", help="comma-separated measured geometries (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default: benchmarks/results)")
    args = parser.parse_args()

    import pyarrow.parquet as pq

    from tommer.benchmarks.lib.corpus import tokenizer_texts, write_corpus
    from tommer.benchmarks.lib.machine import machine_record
    from tommer.benchmarks.lib.metrics import alternating_rounds, backbone_flops, matmul_peaks
    from tommer.benchmarks.lib.report import write_report
    from tommer.benchmarks.lib.runs import figures, read_spans, run_worker
    from tommer.runtime.bundle import read_manifest
    from tommer.runtime.quality.evaluate import span_agreement

    started = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    results: dict = {"command": "python benchmarks/experiments/heads_cpu.py " + " ".join(sys.argv[1:]), "backends": {}}
    results["oracle"] = oracle_errors(args.work)
    layers = published_layers()
    src = write_corpus(args.work / "corpus.parquet", args.docs, seed=11)
    kinds = ["fp32"] if args.no_int8 else ["fp32", "int8"]
    only = {s for s in args.only.split(",") if s}
    measured = [n for n, g in GEOMETRIES.items() if g.get("measure") and (not only or n in only)]
    arms, geometry_of, exports = {}, {}, {}
    for name in measured:  # one export at a time, each in its own process
        layer, published = layer_of(name, layers)
        backbone, head = build(args.work, name, layer, tokenizer_texts())
        for kind in kinds:
            bundle = args.work / name / f"bundle-{kind}"
            exports[f"{name} {kind}"] = export_in_child(backbone, head, layer, bundle, None if kind == "fp32" else kind)
            print(f"exported {name} L{layer} {kind}: {exports[f'{name} {kind}']}", flush=True)
            spec = {"name": f"onnx-{kind}", "bundle": str(bundle), "backbone": str(backbone), "head": str(head),
                    "layer": layer, "batch_tokens": args.batch_tokens, "threads": 0}
            dst = args.work / name / f"onnx-{kind}.parquet"
            arms[(name, kind)] = (lambda spec=spec, dst=dst: run_worker(spec, src, dst))
            geometry_of[(name, kind)] = (backbone, bundle, layer, published)
    peaks = matmul_peaks()
    results["machine"] = machine_record(peaks)
    peak = results["machine"]["matmul_fp32_peak_flops"]
    runs = alternating_rounds({key: (lambda f=f, key=key: (print(f"run {key}", flush=True), f())[1])
                               for key, f in arms.items()}, args.rounds)
    rows = {}
    for name in measured:
        backbone, bundle, layer, published = geometry_of[(name, "fp32")]
        entries = figures({f"onnx-{k}": runs[(name, k)] for k in kinds}, src, args.work / name,
                          read_manifest(bundle), peak, str(backbone))
        spans = {k: read_spans(args.work / name / f"onnx-{k}.parquet") for k in kinds}
        for kind in kinds:
            entry = entries[f"onnx-{kind}"]
            entry["agreement"] = span_agreement(spans["fp32"], spans[kind]).figures()  # against fp32
            entry["export"] = exports[f"{name} {kind}"]
            results["backends"][f"{name} L{layer} {kind}"] = entry
        rows[name] = {"layer": layer, "published_layer": published, "model_type": GEOMETRIES[name]["model_type"],
                      "tokens_per_second": {k: entries[f"onnx-{k}"]["tokens_per_second"]["median"] for k in kinds},
                      "estimate": False}
    # estimates: measured tokens/s scaled by FLOPs per token over the same corpus
    n_tokens = [n + 1 for n in pq.read_table(args.work / measured[0] / "onnx-fp32.parquet",
                                              columns=["n_tokens"]).column("n_tokens").to_pylist()]

    def flops_per_token(name: str, layer: int) -> float:
        config = {**GEOMETRIES[name]["config"], "model_type": GEOMETRIES[name]["model_type"]}
        return backbone_flops(config, n_tokens, blocks=layer + 1) / sum(n_tokens)

    for name, geometry in GEOMETRIES.items():
        layer, published = layer_of(name, layers)
        rows.setdefault(name, {"layer": layer, "published_layer": published, "model_type": geometry["model_type"]})
        rows[name]["gflop_per_token"] = flops_per_token(name, layer) / 1e9
        if name in measured:
            continue
        basis = ESTIMATE_BASIS[geometry["model_type"]]
        if basis not in rows or "tokens_per_second" not in rows[basis]:
            continue
        scale = rows[basis]["gflop_per_token"] / rows[name]["gflop_per_token"]
        rows[name].update(estimate=True, basis=basis,
                          tokens_per_second={k: v * scale for k, v in rows[basis]["tokens_per_second"].items()})
    results["geometries"] = {n: {**rows[n], "config": GEOMETRIES[n]["config"], "llm_name": GEOMETRIES[n]["llm_name"]}
                             for n in GEOMETRIES}
    results["corpus"] = {"docs": args.docs, "tokens": sum(n_tokens), "mean_tokens": sum(n_tokens) / len(n_tokens)}
    results["seconds"] = time.perf_counter() - started
    write_report(args.out, "heads_cpu", results, markdown(results, kinds))
    print(markdown(results, kinds))


def escape(cell: str | None) -> str:
    """A table cell's text with its pipes escaped (``<|endoftext|>`` would split the row)."""
    return str(cell).replace("|", "\\|")


def markdown(results: dict, kinds: list[str]) -> str:
    from tommer.benchmarks.lib.report import markdown_table

    lines = [f"Command: `{results['command']}`", "", f"Machine: {results['machine']['summary']}", "",
             f"Corpus: {results['corpus']['docs']} synthetic documents, {results['corpus']['tokens']:,} tokens "
             f"(mean {results['corpus']['mean_tokens']:.0f} a document, BOS included); random weights of the real "
             "shapes, cut at the head's layer; exact match and DICE are int8 against fp32.", "",
             "## Measured", "", markdown_table(results), "## By backbone (measured and estimated)", "",
             "| backbone | family | layer | GFLOP/token | " + " | ".join(f"{k} tokens/s" for k in kinds) + " | how |",
             "| --- | --- | --- | --- | " + " | ".join("---" for _ in kinds) + " | --- |"]
    for name, row in results["geometries"].items():
        if "tokens_per_second" not in row:
            continue
        layer = f"L{row['layer']}" + ("" if row["published_layer"] else " (assumed)")
        how = f"estimate from {row['basis']} by FLOPs per token" if row["estimate"] else "measured"
        rates = " | ".join(("~" if row["estimate"] else "") + f"{row['tokens_per_second'][k]:,.0f}" for k in kinds)
        lines.append(f"| {name} | {row['model_type']} | {layer} | {row['gflop_per_token']:.2f} | {rates} | {how} |")
    lines += ["", "## Oracle error per family (tiny random models, full model's hidden_states[L+1])", "",
              "| model_type | family | quirks exercised | max abs error | identical spans | BOS |",
              "| --- | --- | --- | --- | --- | --- |"]
    for arch, o in results["oracle"].items():
        lines.append(f"| {arch} | {o['family']} | {o['quirks']} | {o['max_abs_error_vs_full_model']:.1e} | "
                     f"{o['identical_decoded_spans']} ({o['spans']} spans) | `{escape(o['bos']['token'])}` ({o['bos']['rule']}) |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
