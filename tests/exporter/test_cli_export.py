"""``tommer-export`` as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import TINY_LAYER


def run(*args, **kw):
    return subprocess.run([sys.executable, "-m", "tommer.exporter.cli", *args], capture_output=True, text=True, **kw)


def test_help_lists_every_option_with_default():
    out = run("--help")
    assert out.returncode == 0
    text = out.stdout
    for option in ("--layer", "--backbone", "--head", "--output", "--dtype", "--quantize", "--max-span-tokens",
                   "--revision", "--head-revision", "--token", "--overwrite", "--quiet"):
        assert option in text, option
    assert "meta-llama/Llama-3.2-1B" in text and "default: 32" in text and "fp32" in text


def test_export_from_local_folders(tiny_factory, tmp_path):
    backbone, head = tiny_factory("llama")
    root = backbone.parent
    out = run("--backbone", "./backbone", "--head", "./head", "--layer", str(TINY_LAYER),
              "--output", str(tmp_path / "bundle"), "--quiet", cwd=root)
    assert out.returncode == 0, out.stderr
    assert "wrote" in out.stdout and "span exact-match 1.000" in out.stdout
    assert out.stderr == "", "--quiet: nothing but errors (no library warnings)"
    manifest = json.loads((tmp_path / "bundle" / "tommer.json").read_text())
    assert manifest["validation"]["passed"] is True
    # folders given relative to where the export ran are recorded so that they work from anywhere
    assert (manifest["backbone"]["source"], manifest["head"]["source"]) == (str(backbone.resolve()),
                                                                            str(head.resolve()))
    again = run("--backbone", str(backbone), "--head", str(head), "--layer", str(TINY_LAYER),
                "--output", str(tmp_path / "bundle"), "--quiet")
    assert again.returncode == 2 and "already exists: pass --overwrite" in again.stderr
    wrong = run("--backbone", str(backbone), "--head", str(head), "--layer", "1", "--output", str(tmp_path / "x"))
    assert wrong.returncode == 2 and "trained on layer 2, but --layer is 1" in wrong.stderr
    assert not (tmp_path / "x").exists()


def test_runtime_only_install_says_which_extra(tmp_path):
    """Without the export extra (onnx-ir missing), tommer-export says what to install, not a traceback."""
    code = ("import sys; sys.modules['onnx_ir'] = None; from tommer.exporter.cli import main; "
            f"sys.argv = ['tommer-export', '--layer', '1', '--backbone', {str(tmp_path)!r}]; main()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 2 and "pip install 'tommer[export]'" in out.stderr and "onnx_ir" in out.stderr
    assert "Traceback" not in out.stderr
