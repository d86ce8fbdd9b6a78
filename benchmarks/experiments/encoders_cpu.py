"""CPU tokens/s of the roberta-base L5 geometry against the Llama-3.2-1B L6 geometry, in one run.

    python benchmarks/experiments/encoders_cpu.py [--work /tmp/tommer-encoders-cpu] [--docs 120] [--rounds 2] [--no-int8]

Nothing is downloaded: both backbones are built from their published configurations (written
below) with random weights, cut to the head's layer + 1 blocks (roberta-base: 6 blocks of width
768, bidirectional, padding masked in every block; Llama-3.2-1B: 7 blocks of width 2048), each
with a published-size head (rank 64, window 25), exported fp32 and int8 one at a time in a
fresh process. Both tokenizers are trained on the same texts (``random_models`` /
``random_encoders``), so words are about one token in both. Every bundle annotates the same
synthetic corpus (``lib/corpus.py``) Parquet to Parquet in a fresh process per run
(``lib/runs.run_worker``), arms alternating round by round (``lib/metrics.alternating_rounds``); figures
are ``lib/runs.figures`` and the table ``lib/report.markdown_table``, as ``tommer-bench``.

Writes ``benchmarks/results/encoders_cpu.{json,md}``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tommer.benchmarks.lib.models import build_real_geometry, export_in_child
from tommer.benchmarks.lib.report import RESULTS

GEOMETRIES: dict[str, dict] = {
    # FacebookAI/roberta-base config.json
    "roberta-base": dict(model_type="roberta", llm_name="FacebookAI/roberta-base", layer=5,
                         config=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                                     num_hidden_layers=12, vocab_size=50265, max_position_embeddings=514,
                                     type_vocab_size=1, layer_norm_eps=1e-5, hidden_act="gelu", pad_token_id=1,
                                     bos_token_id=0, eos_token_id=2)),
    # meta-llama/Llama-3.2-1B config.json
    "Llama-3.2-1B": dict(model_type="llama", llm_name="meta-llama/Llama-3.2-1B", layer=6,
                         config=dict(hidden_size=2048, intermediate_size=8192, num_attention_heads=32,
                                     num_key_value_heads=8, num_hidden_layers=16, vocab_size=128256,
                                     max_position_embeddings=131072, rope_theta=500000.0, tie_word_embeddings=True,
                                     rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                                   "high_freq_factor": 4.0,
                                                   "original_max_position_embeddings": 8192})),
}


def build(work: Path, name: str, texts: list[str]) -> tuple[Path, Path]:
    """Backbone cut to layer + 1 blocks (real shapes, random weights) and a random head naming it."""
    return build_real_geometry(work, name, GEOMETRIES[name], GEOMETRIES[name]["layer"], texts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/tommer-encoders-cpu"),
                        help="scratch folder (default: %(default)s)")
    parser.add_argument("--docs", type=int, default=120, help="synthetic documents (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (default: %(default)s)")
    parser.add_argument("--batch-tokens", type=int, default=512, help="--batch-tokens (default: %(default)s)")
    parser.add_argument("--no-int8", action="store_true", help="fp32 bundles only")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default: benchmarks/results)")
    args = parser.parse_args()

    from tommer.benchmarks.lib.corpus import tokenizer_texts, write_corpus
    from tommer.benchmarks.lib.machine import machine_record
    from tommer.benchmarks.lib.metrics import alternating_rounds, matmul_peaks, paired_ratios
    from tommer.benchmarks.lib.report import write_report
    from tommer.benchmarks.lib.runs import figures, read_spans, run_worker
    from tommer.runtime.bundle import read_manifest
    from tommer.runtime.quality.evaluate import span_agreement

    started = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    results: dict = {"command": "python benchmarks/experiments/encoders_cpu.py " + " ".join(sys.argv[1:]), "backends": {}}
    src = write_corpus(args.work / "corpus.parquet", args.docs, seed=11)
    kinds = ["fp32"] if args.no_int8 else ["fp32", "int8"]
    arms, where, exports = {}, {}, {}
    for name, geometry in GEOMETRIES.items():  # one export at a time, each in its own process
        layer = geometry["layer"]
        backbone, head = build(args.work, name, tokenizer_texts())
        for kind in kinds:
            bundle = args.work / name / f"bundle-{kind}"
            exports[(name, kind)] = export_in_child(backbone, head, layer, bundle, None if kind == "fp32" else kind)
            print(f"exported {name} L{layer} {kind}: {exports[(name, kind)]}", flush=True)
            spec = {"name": f"onnx-{kind}", "bundle": str(bundle), "backbone": str(backbone), "head": str(head),
                    "layer": layer, "batch_tokens": args.batch_tokens, "threads": 0}
            dst = args.work / name / f"onnx-{kind}.parquet"
            arms[(name, kind)] = (lambda spec=spec, dst=dst: run_worker(spec, src, dst))
            where[(name, kind)] = (backbone, bundle)
    peaks = matmul_peaks()
    results["machine"] = machine_record(peaks)
    peak = results["machine"]["matmul_fp32_peak_flops"]
    runs = alternating_rounds({key: (lambda f=f, key=key: (print(f"run {key}", flush=True), f())[1])
                               for key, f in arms.items()}, args.rounds)
    rows: dict = {}
    for name, geometry in GEOMETRIES.items():
        backbone, bundle = where[(name, "fp32")]
        entries = figures({f"onnx-{k}": runs[(name, k)] for k in kinds}, src, args.work / name,
                          read_manifest(bundle), peak, str(backbone))
        spans = {k: read_spans(args.work / name / f"onnx-{k}.parquet") for k in kinds}
        for kind in kinds:
            entry = entries[f"onnx-{kind}"]
            entry["agreement"] = span_agreement(spans["fp32"], spans[kind]).figures()  # against fp32
            entry["export"] = exports[(name, kind)]
            results["backends"][f"{name} L{geometry['layer']} {kind}"] = entry
        rows[name] = {"layer": geometry["layer"], "model_type": geometry["model_type"],
                      "tokens_per_second": {k: entries[f"onnx-{k}"]["tokens_per_second"]["median"] for k in kinds},
                      "docs_per_second": {k: entries[f"onnx-{k}"]["docs_per_second"]["median"] for k in kinds}}
    # paired by round: the encoder's runs against the decoder's, same kind
    results["roberta_vs_llama"] = {
        k: {"tokens_per_second": paired_ratios([x["tokens"] / x["wall_seconds"] for x in runs[("roberta-base", k)]],
                                               [x["tokens"] / x["wall_seconds"] for x in runs[("Llama-3.2-1B", k)]]),
            "docs_per_second": paired_ratios([x["docs"] / x["wall_seconds"] for x in runs[("roberta-base", k)]],
                                             [x["docs"] / x["wall_seconds"] for x in runs[("Llama-3.2-1B", k)]])}
        for k in kinds}
    results["geometries"] = {n: {**rows[n], "config": GEOMETRIES[n]["config"], "llm_name": GEOMETRIES[n]["llm_name"]}
                             for n in GEOMETRIES}
    results["corpus"] = {"docs": args.docs}
    results["seconds"] = time.perf_counter() - started
    write_report(args.out, "encoders_cpu", results, markdown(results, kinds))
    print(markdown(results, kinds))


def markdown(results: dict, kinds: list[str]) -> str:
    from tommer.benchmarks.lib.report import markdown_table

    lines = [f"Command: `{results['command']}`", "", f"Machine: {results['machine']['summary']}", "",
             f"Corpus: {results['corpus']['docs']} synthetic documents; random weights of the real shapes, cut at "
             "the head's layer; exact match and DICE are int8 against fp32 of the same geometry. Tokens are each "
             "backbone's own (both tokenizers trained on the same texts; the encoder's [CLS]/[SEP] and the "
             "decoder's BOS are counted).", "",
             "| geometry | blocks x width | " + " | ".join(f"{k} tokens/s" for k in kinds)
             + " | " + " | ".join(f"{k} docs/s" for k in kinds) + " |",
             "| --- | --- | " + " | ".join("---" for _ in kinds * 2) + " |"]
    for name, g in results["geometries"].items():
        lines.append(f"| {name} L{g['layer']} | {g['layer'] + 1} x {g['config']['hidden_size']} | "
                     + " | ".join(f"{g['tokens_per_second'][k]:,.0f}" for k in kinds) + " | "
                     + " | ".join(f"{g['docs_per_second'][k]:,.1f}" for k in kinds) + " |")
    lines += ["", "roberta-base L5 / Llama-3.2-1B L6 (paired by round): "
              + ", ".join(f"{k} {r['tokens_per_second']['median']:.2f}x tokens/s, "
                          f"{r['docs_per_second']['median']:.2f}x docs/s"
                          for k, r in results["roberta_vs_llama"].items()), "", markdown_table(results)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
