"""What every command shares: ``--version``, a usage line without braces, one default per option and
no measured figures in ``--help``; and ``tommer-bench`` never overwriting the committed results."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from conftest import REPO
from typer.testing import CliRunner

ROOT = REPO
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def _run_entry(name: str, *args: str) -> subprocess.CompletedProcess:
    module, function = SCRIPTS[name].split(":")
    code = f"import sys; from {module} import {function}; sys.argv = [{name!r}, *{list(args)!r}]; {function}()"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def _apps():
    from tommer.benchmarks import cli as bench_cli
    from tommer.exporter import cli as export_cli
    from tommer.runtime.cli import annotate, quality

    return {"tommer-annotate": annotate.app, "tommer-eval": quality.eval_app, "tommer-show": quality.show_app,
            "tommer-export": export_cli.app, "tommer-bench": bench_cli.app, "tommer-bench-feed": bench_cli.feed_app}


def test_every_entry_point_is_covered():
    assert set(SCRIPTS) == set(_apps())


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_version_on_every_entry_point(name):
    from tommer._version import __version__

    out = _run_entry(name, "--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"tommer {__version__}", out.stdout + out.stderr


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_help_usage_one_default_per_option_and_no_measured_figures(name):
    out = CliRunner().invoke(_apps()[name], ["--help"], prog_name=name)
    assert out.exit_code == 0, out.output
    usage = out.output.splitlines()[0]
    assert usage.startswith(f"Usage: {name} [OPTIONS]") and "{" not in usage, usage
    assert "--version" in out.output
    text = " ".join(out.output.split())
    for block in re.split(r" (?=(?:-\w, )?--[a-z][\w-]+[ ,/])", text):  # one option's help at a time
        assert block.count("[default:") <= 1, f"two defaults: {block}"
    figures = re.findall(r"\d+(?:\.\d+)?x faster|\d+(?:\.\d+)?x \(|\d+% of|\d+%", text)
    assert not figures, f"{name} --help quotes measured figures {figures}: cite the README instead"


def test_annotate_usage_names_the_argument():
    out = CliRunner().invoke(_apps()["tommer-annotate"], ["--help"], prog_name="tommer-annotate")
    usage = out.output.splitlines()[0]
    assert re.fullmatch(r"Usage: tommer-annotate \[OPTIONS\] (SOURCE|\[SOURCE\]\.\.\.)", usage), out.output


def test_bench_default_out_is_not_tracked_nor_the_committed_results():
    from tommer.benchmarks import cli as bench_cli

    for fn in (bench_cli.bench, bench_cli.feed):
        sig = inspect.signature(fn)
        for name in ("out", "work"):
            if name not in sig.parameters:
                continue
            folder = Path(sig.parameters[name].default.default)
            assert not folder.is_absolute()
            assert "benchmarks/results" not in folder.as_posix() or folder.as_posix().startswith(
                "benchmarks/results/work"), folder
            ignored = subprocess.run(["git", "check-ignore", "-q", str(folder / "bench.json")], cwd=ROOT)
            assert ignored.returncode == 0, f"{fn.__name__} --{name} {folder} is not ignored by git"


def _committed_results(tmp_path: Path, names: tuple[str, ...]) -> Path:
    repo = tmp_path / "checkout"
    (repo / "results").mkdir(parents=True)
    for n in names:
        (repo / "results" / n).write_text("committed\n")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["git", "add", "."], cwd=repo, check=True)
    return repo / "results"


def test_bench_refuses_to_overwrite_committed_results(tmp_path):
    from tommer.benchmarks import cli as bench_cli

    results = _committed_results(tmp_path, bench_cli.BENCH_FILES)
    out = CliRunner().invoke(bench_cli.app, ["--out", str(results), "--demo-model", str(tmp_path / "demo")],
                             prog_name="tommer-bench")
    assert out.exit_code == 2, out.output
    assert "committed to git" in out.output and "--overwrite" in out.output and "bench.json" in out.output
    assert not (tmp_path / "demo").exists(), "refused before building anything"
    assert (results / "bench.json").read_text() == "committed\n"
    assert not (results / "work").exists()
    (results / "feed.json").write_text("committed\n")
    subprocess.run(["git", "add", "."], cwd=results, check=True)
    feed = CliRunner().invoke(bench_cli.feed_app, ["--out", str(results), "--work", str(tmp_path / "w")],
                              prog_name="tommer-bench-feed")
    assert feed.exit_code == 2 and "feed.json" in feed.output and "--overwrite" in feed.output, feed.output
    assert not (tmp_path / "w").exists()


def test_bench_writes_over_untracked_results_and_with_overwrite(tmp_path):
    from tommer.benchmarks import cli as bench_cli

    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "bench.json").write_text("{}")
    bench_cli.check_out(plain, bench_cli.BENCH_FILES, overwrite=False)  # not in git: no objection
    results = _committed_results(tmp_path, bench_cli.BENCH_FILES)
    bench_cli.check_out(results, bench_cli.BENCH_FILES, overwrite=True)
    assert [p.name for p in bench_cli.tracked_results(results, bench_cli.BENCH_FILES)] == list(bench_cli.BENCH_FILES)
