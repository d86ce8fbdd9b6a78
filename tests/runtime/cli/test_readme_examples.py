"""The README's tommer-annotate, tommer-eval and tommer-show examples, run as written.

Every such command of the README (in ```bash blocks, one command per ``&&`` segment, and in inline code
such as the "Your corpus" table) runs in a fresh folder holding what the examples name: ``bundle``,
``./bundle`` and ``bundle-llama`` are the tiny bundle, ``examples/sample.parquet`` and ``corpus.parquet``
the sample corpus, ``data/`` Parquet files with a ``body`` column, ``c4/`` gzipped JSON Lines, and the
outputs and gold files the eval and show examples read. The examples that need the network (the Hub,
S3, a Ray cluster) are listed in ``NEEDS_NETWORK``; a README example that needs it and is not listed, or
a listed one the README lost, fails the test.
"""

from __future__ import annotations

import gzip
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import REPO

README = REPO / "README.md"
SAMPLE = REPO / "examples" / "sample.parquet"
LAUNCH = {
    "tommer-annotate": "from tommer.runtime.cli.annotate import main; main()",
    "tommer-eval": "from tommer.runtime.cli.quality import eval_main; eval_main()",
    "tommer-show": "from tommer.runtime.cli.quality import show_main; show_main()",
}
NEEDS_NETWORK = {  # read from the Hub or written to S3: not run here
    "tommer-annotate 'hf://datasets/HuggingFaceFW/fineweb/sample/10BT/000_*.parquet' --model bundle "
    "--output s3://bucket/mentions/",
    "tommer-annotate 's3://bucket/corpus/*.parquet' --model ./bundle --output s3://bucket/mentions/ --engine ray "
    "--num-workers 8 --num-gpus-per-worker 1",
}
GOLD_BIO = ("John B-PER\nlives O\nin O\nNew B-LOC\nYork I-LOC\n\nMarie B-PER\nCurie I-PER\nwon O\nthe O\n"
            "Nobel B-MISC\nPrize I-MISC\n\nThe O\nEU B-ORG\nmet O\nin O\nParis B-LOC\n")


def readme_commands(text: str) -> list[str]:
    """The tommer-annotate/eval/show commands of ``text``, each normalized to one line (comments dropped)."""
    found = []

    def keep(segment: str, inline: bool = False) -> None:
        words = shlex.split(segment, comments=True)
        if inline and (len(words) < 2 or words[1].startswith("-")):
            return  # a command named in a sentence (`tommer-eval`, `tommer-annotate --keep-candidates FLOOR`)
        if words and words[0] in LAUNCH:
            found.append(shlex.join(words))

    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for segment in line.split("&&"):
                keep(segment)
    for span in re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S)):
        keep(span, inline=True)
    return list(dict.fromkeys(found))


COMMANDS = readme_commands(README.read_text())


def test_the_readme_has_examples_of_each_command_and_the_network_list_is_current():
    tools = {c.split()[0] for c in COMMANDS}
    assert tools == set(LAUNCH), tools
    assert len(COMMANDS) >= 10, COMMANDS
    listed = {shlex.join(shlex.split(c)) for c in NEEDS_NETWORK}
    assert listed <= set(COMMANDS), f"NEEDS_NETWORK names commands the README no longer has: {listed - set(COMMANDS)}"
    unlisted = [c for c in COMMANDS if "://" in c and c not in listed]
    assert not unlisted, f"README examples that need the network, not in NEEDS_NETWORK: {unlisted}"


def _mentions(spans_per_doc: list[list[tuple[int, int]]], texts: list[str]) -> pa.Array:
    from tommer.runtime.core.mentions import MENTION_TYPE

    return pa.array([[{"start": s, "end": e, "text": t[s:e], "score": 1.0} for s, e in doc]
                     for doc, t in zip(spans_per_doc, texts)], pa.list_(MENTION_TYPE))


@pytest.fixture(scope="module")
def stage(tiny_bundle, tmp_path_factory) -> Path:
    """One folder with every file the examples name; each example runs in a copy of it."""
    from tommer.runtime.annotator import Annotator
    from tommer.runtime.quality.bio import read_bio

    root = tmp_path_factory.mktemp("readme")
    for name in ("bundle", "bundle-llama"):
        (root / name).symlink_to(tiny_bundle, target_is_directory=True)
    (root / "examples").mkdir()
    shutil.copy(SAMPLE, root / "examples" / "sample.parquet")
    shutil.copy(SAMPLE, root / "corpus.parquet")
    sample = pq.read_table(SAMPLE)
    texts = [t for t in sample.column("text").to_pylist() if t]
    (root / "data").mkdir()
    for k, part in enumerate((texts[:7], texts[7:])):
        pq.write_table(pa.table({"id": list(range(len(part))), "body": part}), root / "data" / f"part-{k}.parquet")
    (root / "c4").mkdir()
    for k, part in enumerate((texts[:5], texts[5:])):
        with gzip.open(root / "c4" / f"c4-{k}.json.gz", "wt", encoding="utf-8") as fh:
            fh.writelines(json.dumps({"text": t, "url": f"https://example.org/{i}"}) + "\n" for i, t in enumerate(part))
    (root / "gold.conll").write_text(GOLD_BIO)
    sentences, gold = read_bio(root / "gold.conll")
    pq.write_table(pa.table({"id": list(range(len(sentences))), "text": sentences,
                             "mentions": _mentions(gold, sentences)}), root / "gold.parquet")
    pq.write_table(pa.table({"id": list(range(len(sentences))), "text": sentences}), root / "sentences.parquet")
    Annotator.from_bundle(tiny_bundle, keep_candidates=0.05).annotate_parquet(
        root / "sentences.parquet", root / "predictions.parquet")
    Annotator.from_bundle(tiny_bundle).annotate_parquet(root / "corpus.parquet", root / "run_fp32.parquet")
    other = Annotator.from_bundle(tiny_bundle, threshold=0.6)  # stands for an int8 run: other mentions
    other.annotate_parquet(root / "corpus.parquet", root / "run_int8.parquet")
    return root


OFFLINE = [c for c in COMMANDS if c not in {shlex.join(shlex.split(n)) for n in NEEDS_NETWORK}]


@pytest.mark.parametrize("command", OFFLINE)
def test_readme_example_runs(stage, tmp_path, command):
    work = tmp_path / "work"
    shutil.copytree(stage, work, symlinks=True)
    words = shlex.split(command)
    done = subprocess.run([sys.executable, "-c", LAUNCH[words[0]], *words[1:]], cwd=work, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    if words[0] == "tommer-annotate" and "--check" in words:  # no input: where the graph runs, nothing written
        assert "check: passed" in done.stdout, done.stdout
    elif words[0] == "tommer-annotate":
        written = [line.removeprefix("wrote ") for line in done.stdout.splitlines() if line.startswith("wrote ")]
        assert written and all((work / w).is_file() for w in written), done.stdout
    for flag in ("--json", "--output"):  # eval's JSON, show's page
        if words[0] != "tommer-annotate" and flag in words:
            assert (work / words[words.index(flag) + 1]).stat().st_size > 0, command
