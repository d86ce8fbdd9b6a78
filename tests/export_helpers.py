"""Shared by the export tests: fixed texts and the graph's band for them."""

from __future__ import annotations

from tommer.runtime.bundle import read_manifest
from tommer.runtime.core.tokenization import BundleTokenizer, pad_batch
from tommer.runtime.execution.session import create_session, run_band

TEXTS = ["Barack Obama visited Paris and Berlin in 2014.", "Hi", "",
         "The Amazon river flows through Brazil, Peru and Colombia to the Atlantic Ocean."]


def graph_bands(bundle, texts, encodings=None):
    manifest = read_manifest(bundle)
    tok = BundleTokenizer.from_bundle(bundle, manifest)
    encodings = tok.encode_batch(texts) if encodings is None else encodings
    ids, mask = pad_batch([e.ids for e in encodings], manifest.tokenizer.pad_token_id)
    return run_band(create_session(bundle / "model.onnx"), ids, mask), ids, mask
