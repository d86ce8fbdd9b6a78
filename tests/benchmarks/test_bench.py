"""Benchmark metrics against hand computations, and a smoke run of tommer-bench."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tommer.benchmarks.lib.corpus import texts
from tommer.benchmarks.lib.metrics import backbone_flops, paired_ratios
from tommer.runtime.quality.evaluate import dice, span_agreement


def test_backbone_flops_by_hand():
    # the CPU model: about 38 MFLOP per token over 5 blocks (layer 4), attention aside
    config = {"hidden_size": 512, "intermediate_size": 2048, "num_attention_heads": 8, "num_key_value_heads": 2}
    per_token = 2 * 512 * (2 * 512 + 2 * 128) + 2 * 3 * 512 * 2048  # 7,602,176
    assert per_token == 7_602_176
    one = backbone_flops(config, [1], blocks=5)
    assert one == 5 * (per_token + 2 * 2 * 512 * 1)
    assert 37e6 < one < 39e6
    # attention grows as n(n+1)/2: for n = 3, 6 query-key pairs
    assert backbone_flops(config, [3], blocks=1) == 3 * per_token + 2 * 2 * 512 * 6


def test_dice_and_agreement():
    assert dice(set(), set()) == 1.0 and dice({1}, set()) == 0.0
    assert dice({1, 2}, {2, 3}) == pytest.approx(0.5)
    agree = span_agreement([[(0, 4), (5, 9)], [], [(1, 2)]], [[(0, 4), (5, 9)], [], [(1, 3)]])
    assert agree.exact_match_rate == pytest.approx(2 / 3)
    assert agree.dice == pytest.approx(2 * 2 / (3 + 3))
    assert agree.per_document == [1.0, 1.0, 0.0] and (agree.spans_first, agree.spans_second) == (3, 3)
    assert agree.figures() == {"exact_match_rate": agree.exact_match_rate, "dice": agree.dice}
    # micro DICE: a span counts only in its own document (the same span in another document is no match)
    assert span_agreement([[(0, 4)], []], [[], [(0, 4)]]).dice == 0.0
    assert span_agreement([], []).figures() == {"exact_match_rate": 1.0, "dice": 1.0}
    with pytest.raises(ValueError, match="same documents"):
        span_agreement([[]], [])


def test_ratios_are_paired_run_by_run():
    r = paired_ratios([10.0, 20.0, 30.0], [5.0, 20.0, 10.0])
    assert (r["median"], r["min"], r["max"]) == (2.0, 1.0, 3.0)


def test_synthetic_corpus_is_seeded_with_a_long_tail():
    a, b = texts(500, seed=1), texts(500, seed=1)
    assert a == b and a != texts(500, seed=2)
    words = sorted(len(t.split()) for t in a)
    assert 30 <= words[len(words) // 2] <= 50 and words[-1] > 200


def test_bench_smoke(tiny_bundle, tmp_path):
    texts = ["John lives in New York City.", "Marie Curie won the Nobel Prize.", "Paris and Berlin."] * 10
    corpus = tmp_path / "c.parquet"
    pq.write_table(pa.table({"id": list(range(len(texts))), "text": texts}), corpus)
    out = subprocess.run([sys.executable, "-m", "tommer.benchmarks.cli", "--model", str(tiny_bundle), "--corpus",
                          str(corpus), "--backends", "reference,onnx-fp32,onnx-tensorrt-fp16", "--repeats", "2",
                          "--sweep", "256", "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    results = json.loads((tmp_path / "out" / "bench.json").read_text())
    onnx, ref = results["backends"]["onnx-fp32"], results["backends"]["reference"]
    assert "skipped" in results["backends"]["onnx-tensorrt-fp16"]
    assert onnx["agreement"] == {"exact_match_rate": 1.0, "dice": 1.0}, "same texts and weights, same spans"
    assert len(onnx["runs"]) == 2 and onnx["tokens_per_second"]["median"] > 0
    # the ratio pairs run k of each backend (they ran back to back), from each run's own counts
    paired = sorted((o["tokens"] / o["wall_seconds"]) / (r["tokens"] / r["wall_seconds"])
                    for o, r in zip(onnx["runs"], ref["runs"]))
    assert onnx["ratio_to_reference"]["median"] == pytest.approx((paired[0] + paired[1]) / 2)
    assert onnx["ratio_to_reference"]["min"] == pytest.approx(paired[0])
    assert onnx["runs"][0]["tokens"] == ref["runs"][0]["tokens"], "both count the same real tokens"
    assert set(results["batch_tokens_sweep"]) == {"256", "512"}
    assert (tmp_path / "out" / "bench.png").stat().st_size > 1000
    assert "| onnx-fp32 |" in (tmp_path / "out" / "bench.md").read_text()


def test_feed_bundle_runs_through_the_annotator_at_a_controlled_density(tmp_path):
    """The feed benchmark's bundle is a real bundle: the annotator runs it, mentions come out at about the set density."""
    import numpy as np

    from tommer.benchmarks.lib.corpus import texts
    from tommer.benchmarks.lib.models import build_feed_bundle
    from tommer.runtime.annotator import Annotator
    from tommer.runtime.core.chunk import Chunk

    bundle = build_feed_bundle(tmp_path / "feed", vocab_size=600)
    annotator = Annotator.from_bundle(bundle, threshold=0.9, batch_tokens=2048)
    chunk = annotator.process(Chunk(texts=texts(200, seed=3, mix="feed")))
    density = chunk.stats.mentions / (chunk.stats.tokens - chunk.stats.rows)
    assert 0.2 < density < 1.0, density
    lengths = chunk.tokens.n_tokens
    assert np.median(lengths) > 20 and lengths.max() > 4 * np.median(lengths)  # log-normal, with a tail


def test_bench_names_a_recorded_backbone_folder_that_is_not_there(tiny_bundle, tmp_path):
    """A bundle exported elsewhere records a folder this machine lacks: a clear error, and --backbone."""
    import shutil

    bundle = shutil.copytree(tiny_bundle, tmp_path / "b")
    manifest = json.loads((bundle / "tommer.json").read_text())
    manifest["backbone"]["source"] = "./tiny-llama"  # as bundles before 0.1 recorded it
    (bundle / "tommer.json").write_text(json.dumps(manifest))
    out = subprocess.run([sys.executable, "-m", "tommer.benchmarks.cli", "--model", str(bundle), "--backends",
                          "reference,onnx-fp32", "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert out.returncode == 2 and "'./tiny-llama'" in out.stderr and "--backbone" in out.stderr
    assert "Traceback" not in out.stderr


def test_the_benchmarks_library_and_experiments_never_import_a_face():
    """``benchmarks/lib`` is what the faces share and ``benchmarks/experiments`` the A/B scripts: neither
    imports the faces at the top (cli, feed, worker, gpu_session), wherever the import stands."""
    import ast

    from conftest import REPO

    faces = {"cli", "feed", "worker", "gpu_session"}
    for folder in ("lib", "experiments"):
        for path in sorted((REPO / "benchmarks" / folder).glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    base = "tommer.benchmarks." if node.level == 2 else f"tommer.benchmarks.{folder}." * (node.level == 1)
                    module = base + (node.module or "")
                    names = [module] + [f"{module.rstrip('.')}.{a.name}" for a in node.names]
                for name in names:
                    parts = name.split(".")
                    assert not (parts[:2] == ["tommer", "benchmarks"] and len(parts) > 2 and parts[2] in faces), \
                        f"{path.relative_to(REPO)} imports {name}"
