"""The bundle: files, manifest contents and the runtime's checks."""

from __future__ import annotations

import json
import shutil

import onnx
import pytest

from tommer.runtime.bundle import FORMAT_VERSION, MANIFEST_NAME, read_manifest
from tommer.runtime.errors import BundleError


def test_manifest_contents(tiny_bundle):
    manifest = read_manifest(tiny_bundle)
    assert manifest.format_version == FORMAT_VERSION
    assert set(manifest.files) == {"model.onnx", "tokenizer.json"}
    assert manifest.backbone.architecture == "llama"
    assert (manifest.backbone.num_layers_total, manifest.backbone.num_layers_kept) == (4, 3)
    assert manifest.head.layer == 2 and manifest.band_width == 6
    assert manifest.input_names == ("input_ids", "attention_mask") and manifest.output_name == "span_probs"
    assert manifest.tokenizer.bos_token_id == 0
    assert {"torch", "onnxruntime", "transformers"} <= set(manifest.library_versions)
    report = manifest.validation
    assert report["passed"] and report["graph_run"] and report["exact_match_rate"] == 1.0
    assert report["max_abs_error"] <= 1e-4 and report["tolerance"] == 5e-4
    assert report["batch_invariance_max_abs_diff"] <= 1e-5
    assert any(shape[0] > 2 for shape in report["batch_shapes"]), "validated at shapes other than the trace"


def test_graph_has_dynamic_axes_and_fused_head(tiny_bundle):
    model = onnx.load(tiny_bundle / "model.onnx", load_external_data=False)
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        assert not dims[0].HasField("dim_value") and not dims[1].HasField("dim_value"), value.name
    heads = [n for n in model.graph.node if n.domain == "tommer"]
    assert [n.op_type for n in heads] == ["SpanBand"]
    assert [f.name for f in model.functions] == ["SpanBand"]


def test_tampered_bundle_is_refused(tiny_bundle, tmp_path):
    copy = shutil.copytree(tiny_bundle, tmp_path / "b")
    with open(copy / "tokenizer.json", "a") as fh:
        fh.write(" ")
    with pytest.raises(BundleError, match="tokenizer.json: sha256 does not match"):
        read_manifest(copy)
    (copy / "model.onnx").unlink()
    with pytest.raises(BundleError, match="model.onnx is missing"):
        read_manifest(copy)


def test_wrong_version_and_missing_manifest(tiny_bundle, tmp_path):
    copy = shutil.copytree(tiny_bundle, tmp_path / "b")
    data = json.loads((copy / MANIFEST_NAME).read_text())
    data["format_version"] = FORMAT_VERSION + 1
    (copy / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(BundleError, match="re-export"):
        read_manifest(copy)
    (copy / MANIFEST_NAME).unlink()
    with pytest.raises(BundleError, match="is not a tommer bundle"):
        read_manifest(copy)
    with pytest.raises(BundleError, match="does not exist"):
        read_manifest(tmp_path / "nowhere")


def test_bundle_folder_gets_the_usual_mode(tmp_path):
    """The bundle folder follows the umask like any folder (tempfile's 0700 would hide it from others)."""
    import os

    from tommer.runtime.bundle import atomic_folder

    old = os.umask(0o022)
    try:
        with atomic_folder(tmp_path / "bundle") as folder:
            (folder / "f").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "bundle").stat().st_mode & 0o777 == 0o755
