"""``tommer-export`` without flags shows tommer's own stages with their times, and nothing of the
libraries; ``--verbose`` lets the libraries' output and the file hashes through."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from conftest import TINY_LAYER
from typer.testing import CliRunner

STAGE = re.compile(r"^\[\s*\d+\.\ds\] \S")


def test_default_stderr_holds_only_tommers_stage_lines(tiny_factory, tmp_path):
    backbone, head = tiny_factory("llama")
    out = subprocess.run([sys.executable, "-m", "tommer.exporter.cli", "--backbone", str(backbone), "--head", str(head),
                          "--layer", str(TINY_LAYER), "--output", str(tmp_path / "bundle")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    assert lines and all(STAGE.match(line) for line in lines), "not a stage line:\n" + "\n".join(
        line for line in lines if not STAGE.match(line))
    stages = " ".join(lines)
    assert "loading head" in stages and "validating the graph" in stages
    assert "torchvision" not in out.stderr and "Warning" not in out.stderr and "it/s" not in out.stderr
    assert '"files"' not in out.stderr, "file hashes only with --verbose"
    assert out.stdout.startswith("wrote ") and "span exact-match 1.000" in out.stdout


def _fake_export(seen: dict):
    def export_bundle(options, step):
        seen["quiet_libraries"] = options.quiet
        step("loading head fake")
        folder = Path(options.output)
        folder.mkdir()
        (folder / "model.onnx").write_bytes(b"x")
        return SimpleNamespace(validation={"max_abs_error": 0.0, "exact_match_rate": 1.0, "dice": 1.0, "texts": 1},
                               dtype="fp32", quantization=None, band_width=6, files={"model.onnx": "ab" * 32})
    return export_bundle


def test_verbose_lets_the_libraries_and_the_hashes_through(tmp_path, monkeypatch):
    from tommer.exporter import cli, export

    seen: dict = {}
    monkeypatch.setattr(export, "export_bundle", _fake_export(seen))
    args = ["--backbone", "b", "--head", str(tmp_path / "head"), "--layer", "1"]
    plain = CliRunner().invoke(cli.app, [*args, "-o", str(tmp_path / "a")], prog_name="tommer-export")
    assert plain.exit_code == 0, plain.output
    assert seen["quiet_libraries"] is True and '"files"' not in plain.output and "loading head fake" in plain.output
    verbose = CliRunner().invoke(cli.app, [*args, "-o", str(tmp_path / "b"), "--verbose"], prog_name="tommer-export")
    assert verbose.exit_code == 0, verbose.output
    assert seen["quiet_libraries"] is False
    assert json.loads(verbose.output[verbose.output.index("{"):])["files"] == {"model.onnx": "ab" * 32}
    quiet = CliRunner().invoke(cli.app, [*args, "-o", str(tmp_path / "c"), "-q"], prog_name="tommer-export")
    assert quiet.exit_code == 0 and "loading head fake" not in quiet.output and seen["quiet_libraries"] is True
    both = CliRunner().invoke(cli.app, [*args, "-o", str(tmp_path / "d"), "-q", "--verbose"], prog_name="tommer-export")
    assert both.exit_code == 2 and "contradict" in both.output
