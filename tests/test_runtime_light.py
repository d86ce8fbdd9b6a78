"""The runtime never imports torch or transformers."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import sys
import tommer, tommer.runtime
from tommer.runtime import (annotator, batching, bundle, chunk, cli, columns, decoding, errors, inputs, mentions, parquet_io,
                            pipeline, session, tokenization, windows, bio, evaluate, show,
                            quality_cli, ray_engine, jsonl_io, sources, selection, locations, interop)
heavy = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'transformers', 'onnx', 'onnxscript'})
print(','.join(heavy))
"""


def test_runtime_imports_no_torch():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
