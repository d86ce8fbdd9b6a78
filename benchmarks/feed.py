"""The host feed benchmark: how fast the whole process moves tokens when the model costs nothing.

On a GPU the model is no longer the slow part: the host must read, tokenize, batch,
decode and write at the GPU's rate. This benchmark measures that host side alone:

- a **feed bundle**: a real bundle (manifest, tokenizer, ONNX graph, run by onnxruntime
  through the unchanged annotator) whose graph is a near-free ``Gather`` of a random
  per-token table times the attention mask: ``band[b, i, o] = table[ids[b, i], o]``. The
  table's cells are above the threshold with a probability that falls with the span
  length, so the mention density is controlled (about 0.5 mentions per token by default,
  reported as measured);
- a corpus with realistic text: Zipf-distributed pseudo-words (so a byte-level BPE splits
  them into subwords), names, numbers, punctuation, accents and a little emoji; log-normal
  lengths (median about 60 tokens, tail to about 2,000);
- in each round, on the same cores (``taskset``): the bundle's Rust tokenizer alone
  (``encode_batch`` over the same texts, in chunks of the same size), and the whole
  ``tommer-annotate`` process, Parquet to Parquet, in a fresh process; their ratio, the
  per-stage seconds and the peak RSS.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

SYLLABLES = ["ka", "lo", "mi", "ne", "tra", "vel", "son", "dor", "ri", "an", "ber", "gu", "is", "ta", "por", "el",
             "ma", "qui", "zen", "ho", "ur", "sta", "fen", "ly", "cor", "dis", "wa", "pe", "ox", "ni", "bro", "ae"]
NAMES = ["Paris", "Marie Curie", "Barack Obama", "the United Nations", "Tokyo", "Amazon", "São Paulo",
         "Zürich", "Ada Lovelace", "New York City", "Nagoya 名古屋", "Angela Merkel", "François Hollande",
         "the Nobel Prize", "Kraków", "Lionel Messi", "the British Museum", "Apple Inc.", "Ñuñoa", "Reykjavík"]
PUNCT = [",", ",", ".", ";", ":", " -", " (", ")", "!", "?", "'s", " \u201c", "\u201d"]
EMOJI = ["🙂", "🚀", "👍🏽", "🇫🇷", "e\u0301"]


def feed_texts(n_docs: int, seed: int = 0, median_words: float = 45.0, sigma: float = 1.0,
               max_words: int = 1500) -> list[str]:
    """Seeded texts of log-normal word counts (median ~45 words, ~60 tokens; tail to ~2,000 tokens)."""
    rng = np.random.default_rng(seed)
    vocab_rng = np.random.default_rng(12345)
    lex = ["".join(vocab_rng.choice(SYLLABLES, size=k)) for k in vocab_rng.integers(1, 5, size=20000)]
    zipf = 1.0 / np.arange(1, len(lex) + 1) ** 1.05
    zipf /= zipf.sum()
    lengths = np.clip(rng.lognormal(np.log(median_words), sigma, n_docs).astype(int), 1, max_words)
    texts = []
    for n in lengths.tolist():
        words = [lex[i] for i in rng.choice(len(lex), size=n, p=zipf)]
        marks = rng.random(n)
        for k in np.flatnonzero(marks < 0.08).tolist():
            words[k] = NAMES[rng.integers(len(NAMES))]
        for k in np.flatnonzero((marks > 0.08) & (marks < 0.11)).tolist():
            words[k] = str(int(rng.integers(1, 100000)))
        for k in np.flatnonzero(marks > 0.995).tolist():
            words[k] = EMOJI[rng.integers(len(EMOJI))]
        out = []
        for k, w in enumerate(words):
            out.append(w)
            if rng.random() < 0.09:
                out.append(PUNCT[rng.integers(len(PUNCT))])
            if k + 1 < n:
                out.append("\n\n" if rng.random() < 0.01 else " ")
        text = "".join(out)
        texts.append(text[:1].upper() + text[1:] + ".")
    return texts


def write_feed_corpus(path: Path, n_docs: int, seed: int = 0, batch: int = 20000) -> dict[str, Any]:
    """Write the corpus in slices (bounded memory); returns its row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([("id", pa.int64()), ("text", pa.string())])
    with pq.ParquetWriter(path, schema) as writer:
        for first in range(0, n_docs, batch):
            texts = feed_texts(min(batch, n_docs - first), seed=seed * 1000003 + first)
            writer.write_table(pa.table({"id": pa.array(range(first, first + len(texts)), pa.int64()),
                                         "text": pa.array(texts, pa.string())}, schema=schema), row_group_size=8192)
    return {"rows": n_docs}


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

    if (folder / "tommer.json").is_file():
        return folder
    with atomic_folder(folder, overwrite=True) as tmp:
        tok_dir = tmp / "tok"
        make_tokenizer(tok_dir, vocab_size=vocab_size, texts=feed_texts(4000, seed=999))
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


# -- measured in child processes -----------------------------------------------------------
def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def tokenizer_child(bundle: str, corpus: str, chunk_rows: int) -> dict[str, Any]:
    """The raw rate: the bundle's Rust tokenizer on the corpus's texts, in chunks (Parquet read not timed)."""
    import pyarrow.parquet as pq
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(bundle) / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    tokens, seconds = 0, 0.0
    for batch in pq.ParquetFile(corpus).iter_batches(batch_size=chunk_rows, columns=["text"]):
        texts = [t for t in batch.column(0).to_pylist() if t is not None]
        start = time.perf_counter()
        encodings = tok.encode_batch(texts, add_special_tokens=False)
        tokens += sum(len(e.ids) for e in encodings)
        seconds += time.perf_counter() - start
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds, "peak_rss_mb": _peak_rss_mb()}


def annotate_child(bundle: str, corpus: str, output: str, options: dict[str, Any]) -> dict[str, Any]:
    """The whole annotation, Parquet to Parquet, as ``tommer-annotate`` runs it."""
    from tommer.runtime.annotator import Annotator
    from tommer.runtime.engines.local import annotate_files
    from tommer.runtime.options import AnnotateOptions

    begin = time.perf_counter()
    chunk_rows, host_threads = options.pop("chunk_rows"), options.pop("host_threads", 0)
    annotator = Annotator(bundle, AnnotateOptions(**options))
    summary = annotate_files(annotator, corpus, output, chunk_rows=chunk_rows, overwrite=True, host_threads=host_threads)
    s = summary.stats
    return {"tokens": s.tokens - s.rows, "rows": s.rows, "mentions": s.mentions, "seconds": summary.elapsed,
            "process_seconds": time.perf_counter() - begin, "stage_seconds": s.seconds,
            "padding": s.padding_fraction, "peak_rss_mb": _peak_rss_mb()}


def run_child(kind: str, cores: str | None, *args: Any) -> dict[str, Any]:
    """Run a measurement in a fresh process, pinned to ``cores`` (``taskset`` list) when given."""
    cmd = [sys.executable, "-m", "tommer.benchmarks.feed", kind, json.dumps(args)]
    if cores:
        cmd = ["taskset", "-c", cores] + cmd
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"feed child {kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    kind, args = sys.argv[1], json.loads(sys.argv[2])
    fn = {"tokenizer": tokenizer_child, "annotate": annotate_child}[kind]
    print(json.dumps(fn(*args)))


if __name__ == "__main__":
    main()


# -- the command ----------------------------------------------------------------------------
def _tokens_to_docs(tokens: int) -> int:
    return max(100, int(tokens / 90))  # about 90 tokens a document on average with these lengths


def _corpus(work: Path, tokens: int, seed: int) -> Path:
    path = work / f"feed-corpus-{tokens}-{seed}.parquet"
    if not path.is_file():
        tmp = path.with_name(f".{path.name}.tmp")
        write_feed_corpus(tmp, _tokens_to_docs(tokens), seed=seed)
        os.replace(tmp, path)
    return path


def _median(xs: list[float]) -> float:
    return float(np.median(xs)) if xs else float("nan")


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# Host feed benchmark ({result['machine']})", "",
             f"Feed bundle (near-free `Gather` graph), corpus {result['corpus']['tokens']:,} tokens in "
             f"{result['corpus']['rows']:,} rows, threshold {result['threshold']}, "
             f"{result['mentions_per_token']:.2f} mentions per token, `--batch-tokens {result['batch_tokens']}`, "
             f"`--chunk-rows {result['chunk_rows']}`; {result['repeats']} rounds, tokenizer and annotation alternating "
             "in fresh processes; medians.", "",
             "| cores | raw tokenizer tokens/s | tommer-annotate tokens/s (Parquet to Parquet) | feed ratio | "
             "read | tokenize | infer | decode | write (stage s, overlapping) | peak RSS |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in result["scaling"]:
        st = row["stage_seconds"]
        lines.append(f"| {row['cores']} | {row['tokenizer_tokens_per_s']:,.0f} | {row['annotate_tokens_per_s']:,.0f} | "
                     f"**{row['ratio']:.2f}** (min {row['ratio_min']:.2f}) | {st['read']:.1f} | {st['tokenize']:.1f} | "
                     f"{st['infer']:.1f} | {st['decode']:.1f} | {st['write']:.1f} | {row['peak_rss_mb']:.0f} MB |")
    if result.get("memory"):
        lines += ["", "Peak RSS against corpus size (one run each, all cores):", "",
                  "| corpus tokens | rows | tokens/s | peak RSS |", "| --- | --- | --- | --- |"]
        for row in result["memory"]:
            lines.append(f"| {row['tokens']:,} | {row['rows']:,} | {row['tokens_per_s']:,.0f} | {row['peak_rss_mb']:.0f} MB |")
    return "\n".join(lines) + "\n"


def feed_main(
    work: Path, out: Path, tokens: int, memory_tokens: list[int], cores: list[str], repeats: int,
    threshold: float, batch_tokens: int, chunk_rows: int, host_threads: int, seed: int,
) -> dict[str, Any]:
    """Run the feed benchmark; returns the result written to ``out/feed.json`` and ``out/feed.md``."""
    from .machine import machine_summary

    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    log = lambda msg: print(f"[feed] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    log(f"bundle and corpus in {work} (built once)")
    bundle = str(build_feed_bundle(work / "feed-bundle"))
    corpus = _corpus(work, tokens, seed)
    options = dict(threshold=threshold, batch_tokens=batch_tokens, chunk_rows=chunk_rows, host_threads=host_threads)
    output = str(work / "feed-out.parquet")
    runs: dict[str, list[tuple[dict, dict]]] = {c: [] for c in cores}
    for r in range(repeats):
        for c in cores:
            tok = run_child("tokenizer", c, bundle, str(corpus), chunk_rows)
            ann = run_child("annotate", c, bundle, str(corpus), output, dict(options))
            runs[c].append((tok, ann))
            log(f"round {r + 1}/{repeats}, cores {c}: tokenizer {tok['tokens_per_s']:,.0f} tokens/s, annotate "
                f"{ann['tokens'] / ann['seconds']:,.0f} tokens/s, ratio {ann['tokens'] / ann['seconds'] / tok['tokens_per_s']:.2f}")
    scaling = []
    for c, pairs in runs.items():
        ratios = [a["tokens"] / a["seconds"] / t["tokens_per_s"] for t, a in pairs]
        scaling.append({
            "cores": c, "n_cores": len(c.split(",")) if c else os.cpu_count(),
            "tokenizer_tokens_per_s": _median([t["tokens_per_s"] for t, _ in pairs]),
            "annotate_tokens_per_s": _median([a["tokens"] / a["seconds"] for _, a in pairs]),
            "annotate_process_tokens_per_s": _median([a["tokens"] / a["process_seconds"] for _, a in pairs]),
            "ratio": _median(ratios), "ratio_min": min(ratios), "ratios": ratios,
            "stage_seconds": {k: _median([a["stage_seconds"][k] for _, a in pairs]) for k in pairs[0][1]["stage_seconds"]},
            "peak_rss_mb": max(a["peak_rss_mb"] for _, a in pairs),
        })
    first = runs[cores[0]][0][1]
    memory = []
    for n in memory_tokens:
        path = _corpus(work, n, seed + 1)
        log(f"peak RSS at {n:,} tokens")
        ann = run_child("annotate", None, bundle, str(path), output, dict(options))
        memory.append({"tokens": ann["tokens"], "rows": ann["rows"], "tokens_per_s": ann["tokens"] / ann["seconds"],
                       "peak_rss_mb": ann["peak_rss_mb"]})
    import pyarrow.parquet as pq

    result = {
        "machine": machine_summary(),
        "corpus": {"rows": pq.ParquetFile(corpus).metadata.num_rows, "tokens": first["tokens"]},
        "threshold": threshold, "batch_tokens": batch_tokens, "chunk_rows": chunk_rows, "host_threads": host_threads,
        "repeats": repeats, "mentions_per_token": first["mentions"] / first["tokens"], "padding": first["padding"],
        "raw_tokenizer": "tokenizers.Tokenizer.encode_batch (offsets included, as the annotator needs them), "
                         "chunks of --chunk-rows texts, Parquet reading not timed",
        "annotate": "annotate_files in a fresh process: read, tokenize, infer, decode, write parts, join the output",
        "scaling": scaling, "memory": memory,
    }
    (out / "feed.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "feed.md").write_text(markdown(result))
    log(f"wrote {out / 'feed.json'} and {out / 'feed.md'}")
    return result
