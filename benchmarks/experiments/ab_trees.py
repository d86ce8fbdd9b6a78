"""Paired A/B of two source trees of tommer on one bundle and one corpus: the whole process.

For a refactor that must not change speed or output: ``--old`` is another checkout of tommer
(``git worktree add /tmp/old <rev>``). The bundles are exported by the OLD tree's exporter (an
older runtime may not read a newer manifest; the newer one reads older ones), from a random
Llama-shaped backbone (4 blocks of 256, 8 query and 2 key/value heads) and a random head of the
published rank and window. Each run is a fresh process that annotates the corpus Parquet to
Parquet; the two trees alternate in order, round by round, so drift hits both. Reported: each
tree's median tokens/s, the median of the per-round ratios (new / old) with its range, and
whether both trees wrote the same mentions.

    python benchmarks/experiments/ab_trees.py --old /tmp/old --docs 400 --rounds 6
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from tommer.benchmarks.lib.corpus import write_corpus
from tommer.benchmarks.lib.machine import with_onnxruntime
from tommer.benchmarks.lib.report import RESULTS, write_report

RUN = r'''
import json, sys, time
import pyarrow.parquet as pq
from tommer.runtime.annotator import Annotator
bundle, src, out = sys.argv[1:4]
annotator = Annotator.from_bundle(bundle, provider="cpu")
start = time.perf_counter()
annotator.annotate_parquet(src, out, overwrite=True)
seconds = time.perf_counter() - start
tokens = sum(pq.read_table(out, columns=["n_tokens"]).column("n_tokens").to_pylist())
print(json.dumps({"seconds": seconds, "tokens": tokens}))
'''
BUILD = r'''
import sys
from pathlib import Path
from tommer.exporter.export import export_bundle
from tommer.exporter.random_models import make_backbone, make_head
from tommer.exporter.spec import ExportOptions
work = Path(sys.argv[1])
backbone = make_backbone(work / "backbone", "llama", num_layers=4, hidden_size=256, intermediate_size=768,
                         num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=2048)
head = make_head(work / "head", hidden_size=256, layer=2, rank=32, sliding_window=25)
for quantize in (None, "int8"):
    export_bundle(ExportOptions(backbone=str(backbone), head=str(head), layer=2, quantize=quantize,
                                output=str(work / f"bundle-{quantize or 'fp32'}"), overwrite=True,
                                allow_head_mismatch=True, quiet=True))
'''


def package_tree(checkout: Path, into: Path) -> Path:
    """A folder where ``import tommer`` finds ``checkout``'s code (its folders laid out as installed)."""
    package = into / "tommer"
    package.mkdir(parents=True, exist_ok=True)
    for f in (checkout / "package").iterdir():
        (package / f.name).symlink_to(f)
    for folder in ("runtime", "exporter", "benchmarks"):
        (package / folder).symlink_to(checkout / folder)
    return into


def python(code: str, args: list[str], tree: Path | None) -> str:
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = str(tree)  # ahead of the installed (new) tommer
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    return proc.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", type=Path, required=True, help="the other checkout of tommer (the baseline)")
    parser.add_argument("--docs", type=int, default=400, help="synthetic documents (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=6, help="alternating rounds (default: %(default)s)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new temporary one)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default: benchmarks/results)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="tommer-ab-"))
    old_tree = package_tree(args.old.resolve(), work / "old-tree")
    python(BUILD, [str(work)], old_tree)
    src = write_corpus(work / "corpus.parquet", args.docs, seed=3)
    import pyarrow.parquet as pq

    def revision(folder: Path) -> str:
        done = subprocess.run(["git", "-C", str(folder), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        return done.stdout.strip() or "unknown"

    results: dict = {"command": "python benchmarks/experiments/ab_trees.py " + " ".join(sys.argv[1:]),
                     "machine": with_onnxruntime(), "docs": args.docs, "old_revision": revision(args.old),
                     "new_revision": revision(Path.cwd()), "kinds": {}}
    for kind in ("int8", "fp32"):
        rates: dict[str, list[float]] = {"old": [], "new": []}
        for r in range(args.rounds):
            for arm in (("old", "new") if r % 2 == 0 else ("new", "old")):
                got = json.loads(python(RUN, [str(work / f"bundle-{kind}"), str(src), str(work / f"{kind}-{arm}.parquet")],
                                        old_tree if arm == "old" else None).splitlines()[-1])
                rates[arm].append(got["tokens"] / got["seconds"])
        ratios = [n / o for n, o in zip(rates["new"], rates["old"])]
        same = (pq.read_table(work / f"{kind}-old.parquet").column("mentions").to_pylist()
                == pq.read_table(work / f"{kind}-new.parquet").column("mentions").to_pylist())
        results["kinds"][kind] = {"old_median": statistics.median(rates["old"]),
                                  "new_median": statistics.median(rates["new"]),
                                  "paired_ratio_median": statistics.median(ratios), "ratio_min": min(ratios),
                                  "ratio_max": max(ratios), "identical_mentions": same, "rounds": args.rounds,
                                  "old": rates["old"], "new": rates["new"]}
        print(kind, {k: v for k, v in results["kinds"][kind].items() if k not in ("old", "new")}, flush=True)
    lines = [f"Command: `{results['command']}`", "", f"Machine: {results['machine']}", "",
             f"Old tree: {results['old_revision']}; new tree: {results['new_revision']} (the installed one)", "",
             "| bundle | old tokens/s (median) | new tokens/s (median) | new / old, paired median [min-max] | same mentions |",
             "| --- | --- | --- | --- | --- |"]
    for kind, k in results["kinds"].items():
        lines.append(f"| {kind} | {k['old_median']:,.0f} | {k['new_median']:,.0f} | {k['paired_ratio_median']:.3f} "
                     f"[{k['ratio_min']:.3f}-{k['ratio_max']:.3f}] | {k['identical_mentions']} |")
    write_report(args.out, "ab_trees", results, "\n".join(lines))


if __name__ == "__main__":
    main()
