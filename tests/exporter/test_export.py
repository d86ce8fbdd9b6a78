"""End-to-end exports of tiny random backbones: parity with the full model, precisions, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TESTED_ARCHITECTURES, TESTED_ENCODERS, TINY_LAYER
from export_helpers import TEXTS, graph_bands

from tommer.exporter.backbone import SUPPORTED_ARCHITECTURES
from tommer.exporter.export import export_bundle
from tommer.exporter.head import load_head
from tommer.exporter.random_models import make_backbone, make_head
from tommer.exporter.reference import reference_band
from tommer.exporter.spec import ExportOptions, ExportSpec
from tommer.runtime.bundle import read_manifest
from tommer.runtime.core.decoding import decode_threshold
from tommer.runtime.core.tokenization import BundleTokenizer, pad_batch
from tommer.runtime.errors import ExportError, ParityError
from tommer.runtime.execution.session import create_session, run_band

PARITY = 1e-4  # span probabilities, ONNX graph vs reference maths on full-model hidden states


def export(backbone, head, out, **kw):
    return export_bundle(ExportOptions(backbone=str(backbone), head=str(head), layer=kw.pop("layer", TINY_LAYER),
                                       output=str(out), **kw))




def full_model_hidden(backbone_dir, ids, mask, layer):
    """hidden_states[layer + 1] of the FULL model, each text alone: the tensor the head must read."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(backbone_dir).eval()
    hidden = np.zeros((*ids.shape, model.config.hidden_size), np.float32)
    with torch.no_grad():
        for b, n in enumerate(mask.sum(1)):
            out = model(input_ids=torch.from_numpy(ids[b : b + 1, :n]), output_hidden_states=True)
            hidden[b, :n] = out.hidden_states[layer + 1][0].numpy()
            post_norm = out.last_hidden_state[0].numpy()
    return hidden, post_norm


def test_every_supported_architecture_is_tested():
    assert set(SUPPORTED_ARCHITECTURES) == set(TESTED_ARCHITECTURES) | set(TESTED_ENCODERS)


@pytest.mark.parametrize("arch", TESTED_ARCHITECTURES)
def test_architecture_exports_with_parity_to_full_model(arch, tiny_factory, tmp_path):
    backbone, head_dir = tiny_factory(arch)
    manifest = export(backbone, head_dir, tmp_path / "bundle")
    assert manifest.backbone.architecture == arch and manifest.validation["exact_match_rate"] == 1.0
    band, ids, mask = graph_bands(tmp_path / "bundle", TEXTS)
    hidden, _ = full_model_hidden(backbone, ids, mask, TINY_LAYER)
    head = load_head(head_dir)
    expected = reference_band(hidden, mask, head, manifest.band_width)
    np.testing.assert_allclose(band, expected, atol=PARITY, rtol=0)
    for b, n in enumerate(mask.sum(1)):
        got, want = decode_threshold(band[b, :n]), decode_threshold(expected[b, :n])
        assert [g.tolist() for g in got[:2]] == [w.tolist() for w in want[:2]], f"spans differ for text {b}"
    assert sum(len(decode_threshold(band[b])[0]) for b in range(len(TEXTS))) > 0, "no span decoded: weak test"


def test_final_norm_is_not_applied(tiny_factory, tiny_bundle):
    """The graph matches hidden_states[L+1]; the post-norm tensor of a cut model would differ."""
    backbone, head_dir = tiny_factory("llama")
    band, ids, mask = graph_bands(tiny_bundle, TEXTS[:1])
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(backbone)
    config.num_hidden_layers = TINY_LAYER + 1
    cut = AutoModel.from_pretrained(backbone, config=config).eval()
    with torch.no_grad():
        post_norm = cut(input_ids=torch.from_numpy(ids)).last_hidden_state.numpy()
    wrong = reference_band(post_norm, mask, load_head(head_dir), band.shape[-1])
    assert np.abs(wrong - band).max() > 1e-2


def test_batch_invariance(tiny_bundle):
    """A text alone and in a padded batch with companions gives the same band."""
    together, _, mask = graph_bands(tiny_bundle, TEXTS)
    for b, text in enumerate(TEXTS):
        alone, _, m = graph_bands(tiny_bundle, [text])
        n = int(m.sum())
        np.testing.assert_allclose(together[b, :n], alone[0, :n], atol=1e-5, rtol=0)
        assert not together[b, n:].any()


def full_model_bands(backbone_dir, head_dir, texts, bundle, dtype=torch.float32, encodings=None):
    """Each text's band from the FULL model (in ``dtype``) and the reference head maths, independently
    of the exporter's own reference code path."""
    from transformers import AutoModel

    manifest = read_manifest(bundle)
    tok = BundleTokenizer.from_bundle(bundle, manifest)
    model = AutoModel.from_pretrained(backbone_dir, torch_dtype=dtype).eval()
    head = load_head(head_dir)
    bands = []
    with torch.no_grad():
        for e in tok.encode_batch(texts) if encodings is None else encodings:
            out = model(input_ids=torch.from_numpy(e.ids[None]), output_hidden_states=True)
            hidden = out.hidden_states[TINY_LAYER + 1].float().numpy()
            bands.append(reference_band(hidden, np.ones((1, len(e)), np.int64), head, manifest.band_width)[0])
    return bands


def span_sets(bands, threshold=0.5):
    out = []
    for band in bands:
        starts, ends, _ = decode_threshold(band, threshold)
        out.append(set(zip(starts.tolist(), ends.tolist())))
    return out


def independent_dice(first, second):
    a = {(t, s) for t, spans in enumerate(first) for s in spans}
    b = {(t, s) for t, spans in enumerate(second) for s in spans}
    return 1.0 if not a and not b else 2 * len(a & b) / (len(a) + len(b))


@pytest.mark.parametrize("dtype,quantize", [("fp16", None), ("bf16", None), ("fp32", "int8")])
def test_low_precision_report_is_true(dtype, quantize, tiny_factory, tmp_path):
    """What the manifest says about a lossy export is what an independent measurement finds."""
    from tommer.exporter.validate import validation_encodings

    backbone, head_dir = tiny_factory("llama")
    manifest = export(backbone, head_dir, tmp_path / "b", dtype=dtype, quantize=quantize)
    report = manifest.validation
    assert (manifest.dtype, manifest.quantization) == (dtype, quantize)
    # the exporter's texts as it encodes them: the long one cut to the window
    encodings = validation_encodings(BundleTokenizer.from_bundle(tmp_path / "b", manifest),
                                     manifest.tokenizer.max_tokens)
    assert report["longest_text_tokens"] == manifest.tokenizer.max_tokens == len(encodings[-1])
    reference = full_model_bands(backbone, head_dir, [], tmp_path / "b", encodings=encodings)
    if dtype == "bf16":  # no CPU kernels: the report is the bf16 weights run in PyTorch, and says so
        assert report["graph_run"] is False and report["batch_invariance_max_abs_diff"] is None
        other = full_model_bands(backbone, head_dir, [], tmp_path / "b", dtype=torch.bfloat16, encodings=encodings)
        import onnx

        graph = onnx.load(tmp_path / "b" / "model.onnx")
        types = {i.data_type for i in graph.graph.initializer if not i.name.startswith("head.")}
        assert onnx.TensorProto.BFLOAT16 in types, "the backbone's weights are stored in bf16"
    else:
        assert report["graph_run"]
        # padding never leaks in; what remains is rounding of GEMMs blocked per shape, at fp16 precision
        assert report["batch_invariance_max_abs_diff"] <= (1e-3 if dtype == "fp16" else 1e-5)
        band, _, mask = graph_bands(tmp_path / "b", [], encodings=encodings)
        assert band.dtype == np.float32 and not band[mask == 0].any()
        other = [band[b, : int(mask[b].sum())] for b in range(len(band))]
    expected = independent_dice(span_sets(reference), span_sets(other))
    # the report is the worst over batch layouts, one of which is all texts at once, as measured here;
    # the two references differ in the last bits (full vs truncated model), hence a knife-edge margin
    assert expected - 0.05 <= report["dice"] <= expected + 0.02
    assert abs(report["reference_spans"] - sum(len(s) for s in span_sets(reference))) <= 2
    measured_error = max(float(np.abs(o - r).max()) for o, r in zip(other, reference))
    if report["graph_run"]:  # the all-texts layout is one of the report's
        assert report["max_abs_error"] >= measured_error - 1e-4
    else:  # bf16 weights cast after loading (exporter) vs loaded in bf16 (here): same order of error
        assert 0.5 * measured_error <= report["max_abs_error"] <= 2 * measured_error
    assert report["max_abs_error"] <= (1.0 if quantize else 0.2), "a lossy export, not a broken one"


def test_batch_invariance_is_enforced(tiny_bundle, monkeypatch):
    """A graph whose band for a text moves with the batch around it fails validation; fp16 is bounded."""
    from tommer.exporter import validate
    from tommer.exporter.texts import VALIDATION_TEXTS

    manifest = read_manifest(tiny_bundle)
    encodings = BundleTokenizer.from_bundle(tiny_bundle, manifest).encode_batch(list(VALIDATION_TEXTS))
    session = create_session(tiny_bundle / "model.onnx")
    alone = [run_band(session, *pad_batch([e.ids], manifest.tokenizer.pad_token_id))[0] for e in encodings]
    refs = validate.ReferenceSet(encodings=encodings, bands=alone)
    spec = ExportSpec()
    honest = validate.validate_graph(tiny_bundle / "model.onnx", refs, manifest.tokenizer.pad_token_id,
                                     "fp32", None, spec)
    assert honest["batch_invariance_exact_match_rate"] == 1.0 and honest["batch_invariance_dice"] == 1.0
    real_run_graph = validate.run_graph

    def shifted(by):
        def run(*args, **kwargs):
            layouts, shapes = real_run_graph(*args, **kwargs)
            layouts[1] = {i: band + by * (band > 0) for i, band in layouts[1].items()}
            return layouts, shapes
        return run

    monkeypatch.setattr(validate, "run_graph", shifted(5e-5))  # tiny drift: within fp32's reference tolerance
    with pytest.raises(ParityError, match=r"not batch-invariant: .* up to 5e-05 .*tolerance 1e-05"):
        validate.validate_graph(tiny_bundle / "model.onnx", refs, manifest.tokenizer.pad_token_id, "fp32", None, spec)
    monkeypatch.setattr(validate, "run_graph", shifted(0.01))  # fp16-sized drift: bounded and recorded
    report = validate.validate_graph(tiny_bundle / "model.onnx", refs, manifest.tokenizer.pad_token_id,
                                     "fp16", None, spec)
    assert 0.009 < report["batch_invariance_max_abs_diff"] <= 0.0101
    assert report["batch_invariance_tolerance"] == spec.low_precision_invariance_max_abs_diff
    monkeypatch.setattr(validate, "run_graph", shifted(0.2))
    with pytest.raises(ParityError, match="not batch-invariant"):
        validate.validate_graph(tiny_bundle / "model.onnx", refs, manifest.tokenizer.pad_token_id, "fp16", None, spec)


def test_int8_quantizes_backbone_matmuls_only(tiny_factory, tmp_path):
    import onnx

    backbone, head_dir = tiny_factory("llama")
    export(backbone, head_dir, tmp_path / "b", quantize="int8")
    model = onnx.load(tmp_path / "b" / "model.onnx")
    ops = [n.op_type for n in model.graph.node]
    blocks = TINY_LAYER + 1
    assert ops.count("MatMulIntegerToFloat") == 7 * blocks  # q, k, v, o, gate, up, down per block
    assert ops.count("MatMul") == 0
    # one row-scaled quantization per distinct input: (q, k, v), o, (gate, up), down
    assert ops.count("QuantizeLinear") == 4 * blocks
    weights = [i for i in model.graph.initializer if i.name.endswith(".int8")]
    assert len(weights) == 7 * blocks and all(i.data_type == onnx.TensorProto.INT8 for i in weights)
    assert max(int(np.abs(onnx.numpy_helper.to_array(i)).max()) for i in weights) <= ExportSpec().int8_weight_max
    assert "SpanBand" in ops
    head_inits = {i.name: i for i in model.graph.initializer if i.name.startswith("head.")}
    assert all(i.data_type == onnx.TensorProto.FLOAT for i in head_inits.values()) and len(head_inits) == 5


def test_real_head_on_wide_random_backbone(real_head_dir, tmp_path):
    """The published head (hidden 2048) on an 8-block random backbone, cut at layer 6.

    The folder bears the name of the LLM the head names (a local copy of it, as far as the
    exporter can tell), so the head-backbone check lets it through."""
    backbone = make_backbone(tmp_path / "Llama-3.2-1B", "llama", num_layers=8, hidden_size=2048, intermediate_size=64,
                             num_attention_heads=2, num_key_value_heads=1, vocab_size=512,
                             max_position_embeddings=128)  # windows of 128: the window-long validation text stays short
    manifest = export(backbone, real_head_dir, tmp_path / "b", layer=6)
    assert manifest.band_width == 26 and manifest.backbone.num_layers_kept == 7
    assert manifest.validation["max_abs_error"] <= 1e-4 and manifest.validation["exact_match_rate"] == 1.0
    band, ids, mask = graph_bands(tmp_path / "b", TEXTS)
    hidden, _ = full_model_hidden(backbone, ids, mask, 6)
    expected = reference_band(hidden, mask, load_head(real_head_dir), 26)
    np.testing.assert_allclose(band, expected, atol=PARITY, rtol=0)


def test_errors_a_user_can_act_on(tiny_factory, tmp_path):
    backbone, head_dir = tiny_factory("llama")
    with pytest.raises(ExportError, match="trained on layer 2, but --layer is 1"):
        export(backbone, head_dir, tmp_path / "a", layer=1)
    with pytest.raises(ExportError, match=r"--layer 9 is past the depth .* 4 blocks"):
        export(backbone, make_head(tmp_path / "h9", 64, layer=9), tmp_path / "a", layer=9)
    with pytest.raises(ExportError, match="hidden states of size 32, backbone .* has hidden size 64"):
        export(backbone, make_head(tmp_path / "h32", 32, layer=TINY_LAYER), tmp_path / "a")
    # a head trained on another LLM of the same width: refused, unless the user says it is that LLM
    other = make_head(tmp_path / "other", 64, layer=TINY_LAYER, llm_name="Qwen/Qwen2.5-0.5B")
    with pytest.raises(ExportError, match=r"trained on 'Qwen/Qwen2.5-0.5B', the backbone is .*backbone.* "
                                          r"\(llama, hidden size 64\): pass --backbone Qwen/Qwen2.5-0.5B .*--allow-head-mismatch"):
        export(backbone, other, tmp_path / "a")
    assert not (tmp_path / "a").exists()
    allowed = export(backbone, other, tmp_path / "allowed", allow_head_mismatch=True)
    assert "Qwen/Qwen2.5-0.5B" in allowed.head.backbone_mismatch
    assert read_manifest(tmp_path / "allowed").head.backbone_mismatch == allowed.head.backbone_mismatch
    assert read_manifest(tmp_path / "allowed").head.config == load_head(other).config
    gpt2 = tmp_path / "gpt2"
    from transformers import GPT2Config, GPT2Model

    GPT2Model(GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=100)).save_pretrained(gpt2)
    with pytest.raises(ExportError, match="'gpt2' is not supported; supported architectures: bert, gpt_neox, llama, "
                                          "mistral, modernbert, phi, phi3, qwen2, roberta"):
        export(gpt2, head_dir, tmp_path / "a")
    with pytest.raises(ExportError, match="--quantize int8 is for CPUs"):
        export(backbone, head_dir, tmp_path / "a", dtype="fp16", quantize="int8")
    (tmp_path / "exists").mkdir()
    with pytest.raises(ExportError, match="already exists: pass --overwrite"):
        export(backbone, head_dir, tmp_path / "exists")
    assert not (tmp_path / "a").exists()


def test_failed_validation_leaves_nothing(tiny_factory, tmp_path):
    backbone, head_dir = tiny_factory("llama")
    strict = ExportSpec(fp32_max_abs_error=0.0)
    with pytest.raises(ParityError, match="max abs error of span probabilities .* > tolerance 0"):
        export_bundle(ExportOptions(backbone=str(backbone), head=str(head_dir), layer=TINY_LAYER,
                                    output=str(tmp_path / "out")), spec=strict)
    assert list(tmp_path.iterdir()) == [], "no bundle and no temporary folder left behind"


def test_overwrite_replaces_bundle(tiny_factory, tmp_path):
    backbone, head_dir = tiny_factory("llama")
    first = export(backbone, head_dir, tmp_path / "b")
    second = export(backbone, head_dir, tmp_path / "b", overwrite=True, quantize="int8")
    assert read_manifest(tmp_path / "b").quantization == "int8" != first.quantization
    assert second.files["model.onnx"] != first.files["model.onnx"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_torch_stage_in_child_process(tiny_factory, tiny_bundle, tmp_path):
    """Large backbones are traced in a spawned process; the result is the same graph."""
    backbone, head_dir = tiny_factory("llama")
    manifest = export_bundle(ExportOptions(backbone=str(backbone), head=str(head_dir), layer=TINY_LAYER,
                                           output=str(tmp_path / "b")), spec=ExportSpec(isolate_torch_over_bytes=0))
    assert manifest.validation["exact_match_rate"] == 1.0
    isolated, _, _ = graph_bands(tmp_path / "b", TEXTS)
    in_process, _, _ = graph_bands(tiny_bundle, TEXTS)
    np.testing.assert_allclose(isolated, in_process, atol=1e-6, rtol=0)
