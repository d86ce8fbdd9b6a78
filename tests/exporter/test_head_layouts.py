"""Both head layouts: experimaestro.json + model.safetensors (read with safetensors) and the legacy pair."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import load_file, save_file

from tommer.exporter.graph import head_only_model
from tommer.exporter.head import load_head
from tommer.exporter.head_onnx import BandGeometry
from tommer.exporter.reference import reference_band
from tommer.runtime.errors import ExportError

TENSORS = ("w_q", "w_k", "w_fc", "b_fc", "cl_w")


def run_graph(head, hidden, mask):
    proto = ir.serde.serialize_model(head_only_model(head, BandGeometry.for_head(head, 32)))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"hidden_states": hidden.astype(np.float32), "attention_mask": mask.astype(np.int64)})[0]


def test_both_layouts_load_the_same_head(real_head_dir, real_head_safetensors_dir):
    legacy, current = load_head(real_head_dir), load_head(real_head_safetensors_dir)
    assert (legacy.layout, current.layout) == ("definition.json", "experimaestro.json")
    assert legacy.config == current.config and current.config.layer == 6 and current.config.sliding_window == 25
    for name in TENSORS:
        a, b = getattr(legacy, name), getattr(current, name)
        assert a.dtype == b.dtype == torch.float32 and torch.equal(a, b), name  # bit-identical
    assert current.n_parameters == 264_198


def test_both_layouts_give_identical_graph_outputs(real_head_dir, real_head_safetensors_dir, golden):
    hidden, mask = golden["hidden_states"], golden["attention_mask"]
    legacy, current = (run_graph(load_head(d), hidden, mask) for d in (real_head_dir, real_head_safetensors_dir))
    np.testing.assert_array_equal(legacy, current)
    np.testing.assert_allclose(current, golden["span_probs"], atol=1e-5, rtol=0)
    assert set(zip(*np.nonzero(current > 0.5))) == set(zip(*np.nonzero(golden["span_probs"] > 0.5)))
    band = reference_band(hidden, mask, load_head(real_head_safetensors_dir), 26)
    np.testing.assert_allclose(band, golden["span_probs"], atol=1e-5, rtol=0)


def test_current_layout_is_preferred_when_both_are_present(tmp_path, real_head_dir, real_head_safetensors_dir):
    both = tmp_path / "both"
    shutil.copytree(real_head_dir, both)
    for f in real_head_safetensors_dir.iterdir():
        shutil.copy(f, both / f.name)
    (both / "parameters").write_bytes(b"not a torch archive: never read when model.safetensors is there")
    assert load_head(both).layout == "experimaestro.json"


def test_a_folder_with_neither_layout_names_both(tmp_path, real_head_safetensors_dir):
    (tmp_path / "README.md").write_text("no head here")
    with pytest.raises(ExportError, match=r"holds no llm2ner head: expected experimaestro.json \+ model.safetensors "
                                          r"or definition.json \+ parameters; found \['README.md'\]"):
        load_head(tmp_path)
    half = tmp_path / "half"
    half.mkdir()
    shutil.copy(real_head_safetensors_dir / "experimaestro.json", half)
    with pytest.raises(ExportError, match="has experimaestro.json but not model.safetensors"):
        load_head(half)


@pytest.fixture()
def current_copy(tmp_path, real_head_safetensors_dir):
    folder = tmp_path / "head"
    shutil.copytree(real_head_safetensors_dir, folder)
    return folder


def test_wrong_tensors_are_listed_one_by_one(current_copy):
    state = load_file(str(current_copy / "model.safetensors"))
    del state["cl_w"]
    state["W_K"] = torch.zeros(2048, 63)
    state["classifier.fc.bias"] = torch.zeros(2)
    state["extra.weight"] = torch.zeros(3)
    save_file(state, str(current_copy / "model.safetensors"))
    with pytest.raises(ExportError) as info:
        load_head(current_copy)
    message = str(info.value)
    for problem in ("missing tensor 'cl_w'", "unexpected tensor 'extra.weight'",
                    "W_K: expected shape (2048, 64), found (2048, 63)",
                    "classifier.fc.bias: expected shape (1,), found (2,)"):
        assert problem in message, problem
    assert "not a ToMMeR head of rank 64" in message


def test_a_corrupt_safetensors_file_is_an_error(current_copy):
    (current_copy / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ExportError, match="not a readable safetensors file"):
        load_head(current_copy)


def test_weights_outside_safetensors_are_refused(current_copy):
    """The current layout's loader object names the weights; tommer reads only a .safetensors file beside it."""
    objects = json.loads((current_copy / "experimaestro.json").read_text())
    objects[1]["fields"]["path"]["value"] = "../parameters.pt"
    (current_copy / "experimaestro.json").write_text(json.dumps(objects))
    with pytest.raises(ExportError, match=r"its weights file '../parameters.pt' is not a .safetensors file"):
        load_head(current_copy)


def _with_mask_bos(folder, value):
    objects = json.loads((folder / "experimaestro.json").read_text())
    objects[0]["fields"]["mask_bos"] = value
    (folder / "experimaestro.json").write_text(json.dumps(objects))
    return load_head(folder)


def test_mask_bos_field(current_copy, golden):
    assert load_head(current_copy).config.mask_bos is True  # absent: true, as the reference class sets it
    assert not load_head(current_copy).mask_bos_from_tokenizer
    off = _with_mask_bos(current_copy, False)
    assert off.config.mask_bos is False and not off.mask_bos_from_tokenizer
    # mask_bos false lets position 0 start spans: the graph scores them (the golden band has them at 0)
    hidden, mask = golden["hidden_states"], golden["attention_mask"]
    band = run_graph(off, hidden, mask)
    starts_at_bos = band[0, np.arange(26), np.arange(26)]  # span 0..i is at offset o = i
    assert starts_at_bos.any() and not golden["span_probs"][0, np.arange(26), np.arange(26)].any()
    null = _with_mask_bos(current_copy, None)
    assert null.mask_bos_from_tokenizer
    assert null.for_tokenizer(has_bos=True).config.mask_bos is True
    assert null.for_tokenizer(has_bos=False).config.mask_bos is False
    assert off.for_tokenizer(has_bos=True).config.mask_bos is False  # an explicit value is kept
    with pytest.raises(ExportError, match="mask_bos must be true, false or null, found 'yes'"):
        _with_mask_bos(current_copy, "yes")
