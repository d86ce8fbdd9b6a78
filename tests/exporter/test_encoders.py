"""Encoder backbones (BERT, RoBERTa, ModernBERT): bidirectional attention with the padding masked,
the tokenizer's own text template, non-causal heads with look-ahead, windows with both tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TESTED_ENCODERS, TINY_LAYER
from hypothesis import given, settings
from hypothesis import strategies as st

from tommer.exporter.export import export_bundle
from tommer.exporter.reference import dense_span_probs, dense_to_band, reference_band
from tommer.exporter.spec import ExportOptions
from tommer.exporter.texts import VALIDATION_TEXTS
from tommer.exporter.validate import span_set
from tommer.runtime.bundle import read_manifest
from tommer.runtime.core.tokenization import BundleTokenizer, pad_batch
from tommer.runtime.errors import ExportError
from tommer.runtime.execution.session import create_session, run_band

TEXTS = list(VALIDATION_TEXTS[:4]) + ["OK", "", "Ada Lovelace and Charles Babbage worked in London."]
FP32_TOLERANCE = 1e-4  # max abs difference of span probabilities, graph vs full model + reference maths


def _thresholds(bands) -> list[float]:
    """0.5 and the 80th percentile of the valid spans' probabilities: random heads on tiny encoders
    score few spans above 0.5, and decoded spans must be compared where there are some."""
    values = np.sort(np.concatenate([b[b > 0] for b in bands]))
    lo, hi = int(0.7 * len(values)), int(0.9 * len(values))
    k = lo + int(np.argmax(np.diff(values[lo:hi + 1])))  # the widest gap there: no value near the threshold
    return [0.5, float(values[k] + values[k + 1]) / 2]


@pytest.fixture(scope="module")
def encoder_bundles(tmp_path_factory):
    """(backbone folder, head, bundle folder) per family and causality, exported once per module."""
    from tommer.exporter.random_models import make_backbone, make_head

    cache: dict[tuple[str, bool], tuple] = {}

    def build(arch: str, causal: bool = True):
        if (arch, causal) not in cache:
            root = tmp_path_factory.mktemp(f"enc-{arch}-{causal}")
            backbone = make_backbone(root / "backbone", arch, num_layers=4)
            head = make_head(root / "head", hidden_size=64, layer=TINY_LAYER, causal=causal, llm_name=str(backbone))
            out = root / "bundle"
            export_bundle(ExportOptions(backbone=str(backbone), head=str(head), layer=TINY_LAYER, output=str(out)))
            cache[(arch, causal)] = (backbone, head, out)
        return cache[(arch, causal)]

    return build


def _full_model_bands(backbone, head_dir, texts, band_width):
    """Each text alone through the FULL model as the reference feeds it (tokenizer defaults: the
    template), hidden_states[L + 1], then the dense reference maths (closing token: a key, never an end)."""
    from transformers import AutoModel, AutoTokenizer

    from tommer.exporter.head import load_head

    tok = AutoTokenizer.from_pretrained(backbone)
    model = AutoModel.from_pretrained(backbone, dtype=torch.float32).eval()
    head = load_head(str(head_dir))
    ids, bands = [], []
    with torch.no_grad():
        for text in texts:
            seq = tok(text, return_tensors="pt")["input_ids"]
            hidden = model(input_ids=seq, output_hidden_states=True).hidden_states[TINY_LAYER + 1][0]
            ids.append(seq[0].numpy())
            bands.append(dense_to_band(dense_span_probs(hidden, head, closing=1, mask_opening=True),
                                       band_width).numpy())
    return ids, bands


@pytest.mark.parametrize("arch", TESTED_ENCODERS)
def test_encoder_oracle_exact_in_padded_batches(arch, encoder_bundles):
    backbone, head_dir, bundle = encoder_bundles(arch)
    manifest = read_manifest(bundle)
    info = manifest.tokenizer
    assert info.bos_rule == "template" and len(info.template_before) == 1 and len(info.template_after) == 1
    tok = BundleTokenizer.from_bundle(bundle, manifest)
    ours = [tok.close(e) for e in tok.encode_batch(TEXTS)]
    want_ids, want = _full_model_bands(backbone, head_dir, TEXTS, manifest.band_width)
    for got, ref in zip(ours, want_ids):  # the runtime feeds exactly what the tokenizer's template gives
        assert got.ids.tolist() == ref.tolist()
    session = create_session(bundle / "model.onnx", "cpu")
    for order, extra in ((list(range(len(TEXTS))), 0), (list(range(len(TEXTS)))[::-1], 7)):
        seqs = [ours[i].ids for i in order]
        ids, mask = pad_batch(seqs, info.pad_token_id, max(map(len, seqs)) + extra)
        band = run_band(session, ids, mask)
        for row, i in enumerate(order):
            n = len(ours[i])
            np.testing.assert_allclose(band[row, :n], want[i], atol=FP32_TOLERANCE, rtol=0)
            for t in _thresholds(want):
                assert span_set(band[row, :n], t) == span_set(want[i], t)
            assert not band[row, n:].any()
            assert not band[row, n - 1].any()  # the closing token ends no span
            starts_at_opening = np.arange(n)[:, None] - np.arange(band.shape[2])[None, :] == 0
            assert not band[row, :n][starts_at_opening].any()  # the opening token starts no span
    assert sum(len(span_set(b, _thresholds(want)[1])) for b in want) > 10  # decoding was exercised


def test_manifest_records_template_and_position_cap(encoder_bundles):
    for arch, before, after in (("bert", [2], [3]), ("roberta", [0], [2]), ("modernbert", [2], [3])):
        manifest = read_manifest(encoder_bundles(arch)[2])
        assert (manifest.tokenizer.template_before, manifest.tokenizer.template_after) == (before, after)
        assert manifest.tokenizer.max_tokens == 512 and manifest.backbone.max_positions == 512  # RoBERTa: 514 - 2


def test_old_tokenizer_info_reads_as_bos_only():
    from tommer.runtime.bundle import TokenizerInfo

    info = TokenizerInfo(file="tokenizer.json", bos_token_id=7, pad_token_id=0, max_tokens=2048)
    assert info.before_ids == (7,) and info.after_ids == ()


@pytest.mark.parametrize("arch", ["modernbert", "roberta"])
def test_non_causal_head_exact(arch, encoder_bundles):
    """A non-causal head reads look-ahead keys (the closing token included) in f1..f3."""
    backbone, head_dir, bundle = encoder_bundles(arch, causal=False)
    manifest = read_manifest(bundle)
    assert manifest.head.causal is False
    tok = BundleTokenizer.from_bundle(bundle, manifest)
    ours = [tok.close(e) for e in tok.encode_batch(TEXTS)]
    _, want = _full_model_bands(backbone, head_dir, TEXTS, manifest.band_width)
    ids, mask = pad_batch([e.ids for e in ours], manifest.tokenizer.pad_token_id)
    band = run_band(create_session(bundle / "model.onnx", "cpu"), ids, mask)
    for row, e in enumerate(ours):
        np.testing.assert_allclose(band[row, :len(e)], want[row], atol=FP32_TOLERANCE, rtol=0)
        for t in _thresholds(want):
            assert span_set(band[row, :len(e)], t) == span_set(want[row], t)


@pytest.mark.parametrize("arch", TESTED_ENCODERS)
def test_long_documents_windowed_with_both_tokens(arch, encoder_bundles, monkeypatch):
    from tommer.runtime.annotator import Annotator

    _, _, bundle = encoder_bundles(arch)
    text = " ".join(["Marie Curie met Pierre Curie in Paris, then Ada Lovelace wrote to London."] * 12)
    annotator = Annotator.from_bundle(bundle, max_tokens=48, threshold=0.02)  # random head: few spans above 0.5
    info = annotator.manifest.tokenizer
    fed = []
    original = annotator._gather

    def spy(*args, **kwargs):
        ids, mask = original(*args, **kwargs)
        fed.append((ids, mask))
        return ids, mask

    monkeypatch.setattr(annotator, "_gather", spy)
    mentions = annotator.annotate([text, "OK", ""])
    windows = [(ids[r], mask[r]) for ids, mask in fed for r in range(len(ids)) if mask[r].any()]
    assert len(windows) > 3  # the long text was cut
    for ids, mask in windows:
        n = int(mask.sum())
        assert n <= 48 and ids[0] == info.template_before[0] and ids[n - 1] == info.template_after[0]
        assert not np.isin(ids[1:n - 1], info.template_before + info.template_after).any()
    assert mentions[0], "the long text should have mentions"
    for m in mentions[0]:
        assert 0 <= m.start < m.end <= len(text) and text[m.start:m.end] == m.text and m.text.strip() == m.text


def test_encoder_head_on_decoder_is_refused(tiny_factory, tmp_path):
    from tommer.exporter.random_models import make_head

    backbone, _ = tiny_factory("llama")
    head = make_head(tmp_path / "head", hidden_size=64, layer=TINY_LAYER, llm_name="FacebookAI/roberta-base")
    for allow in (False, True):  # --allow-head-mismatch does not lift it
        with pytest.raises(ExportError, match="'FacebookAI/roberta-base', an encoder, but the backbone is a decoder"):
            export_bundle(ExportOptions(backbone=str(backbone), head=str(head), layer=TINY_LAYER,
                                        output=str(tmp_path / "out"), allow_head_mismatch=allow))


def test_decoder_head_on_encoder_is_refused(encoder_bundles, tmp_path):
    from tommer.exporter.random_models import make_head

    backbone, _, _ = encoder_bundles("bert")
    head = make_head(tmp_path / "head", hidden_size=64, layer=TINY_LAYER, llm_name="meta-llama/Llama-3.2-1B")
    with pytest.raises(ExportError, match="'meta-llama/Llama-3.2-1B', a decoder, but the backbone is an encoder"):
        export_bundle(ExportOptions(backbone=str(backbone), head=str(head), layer=TINY_LAYER,
                                    output=str(tmp_path / "out"), allow_head_mismatch=True))


def test_named_kind():
    from tommer.exporter.encoders import named_kind

    assert named_kind("FacebookAI/roberta-base") == "encoder" and named_kind("bert-base-uncased") == "encoder"
    assert named_kind("answerdotai/ModernBERT-base") == "encoder"
    assert named_kind("meta-llama/Llama-3.2-1B") == "decoder" and named_kind("random/backbone") is None


def test_non_causal_head_without_window_is_refused(tmp_path):
    from tommer.exporter.head import load_head
    from tommer.exporter.head_onnx import BandGeometry
    from tommer.exporter.random_models import make_head

    folder = make_head(tmp_path / "h", hidden_size=16, layer=0, causal=False, sliding_window=0)
    with pytest.raises(ExportError, match="non-causal head without a sliding window"):
        load_head(str(folder))
    head = load_head(str(make_head(tmp_path / "w", hidden_size=16, layer=0, causal=False, sliding_window=3)))
    assert BandGeometry.for_head(head, 26).lookahead == 3


@settings(max_examples=25, deadline=None)
@given(window=st.integers(1, 6), closing=st.integers(0, 2), mask_opening=st.booleans(), mask_bos=st.booleans(),
       cosine=st.booleans(), lengths=st.lists(st.integers(1, 17), min_size=1, max_size=4), extra=st.integers(0, 3),
       seed=st.integers(0, 2**16))
def test_non_causal_band_matches_reference(window, closing, mask_opening, mask_bos, cosine, lengths, extra, seed):
    """The band graph of a non-causal head (look-ahead columns, running min/max past the end token,
    closing tokens) against the dense reference, on random geometries and padded batches."""
    import dataclasses

    import onnx_ir as ir
    import onnxruntime as ort

    from tommer.exporter.graph import head_only_model
    from tommer.exporter.head import Head
    from tommer.exporter.head_onnx import BandGeometry
    from tommer.runtime.bundle import HeadConfig

    gen = torch.Generator().manual_seed(seed)
    d, r = 8, 4
    config = HeadConfig(llm_name="x", layer=0, rank=r, causal=False, sliding_window=window, use_cosine=cosine,
                        mask_bos=mask_bos)
    head = Head(config=config, w_q=torch.randn(d, r, generator=gen), w_k=torch.randn(d, r, generator=gen),
                w_fc=torch.randn(1, d, generator=gen), b_fc=torch.randn(1, generator=gen),
                cl_w=torch.tensor([29.71, 22.74, -13.44, -0.031, 0.403]).reshape(1, 5, 1, 1), source="random")
    geometry = dataclasses.replace(BandGeometry.for_head(head, 26), closing=closing, mask_opening=mask_opening)
    assert geometry.lookahead == window
    n = max(lengths) + extra  # padding, or none (then a text may be shorter than its closing tokens)
    hidden = torch.randn(len(lengths), n, d, generator=gen)
    mask = (np.arange(n)[None, :] < np.asarray(lengths)[:, None]).astype(np.int64)
    model = head_only_model(head, geometry)
    session = ort.InferenceSession(ir.to_proto(model).SerializeToString(), providers=["CPUExecutionProvider"])
    (band,) = session.run(None, {"hidden_states": hidden.numpy(), "attention_mask": mask})
    want = reference_band(hidden, mask, head, geometry.band_width, closing=closing, mask_opening=mask_opening)
    np.testing.assert_allclose(band, want, atol=2e-5, rtol=0)
    for b, length in enumerate(lengths):
        assert span_set(band[b, :length], 0.5) == span_set(want[b, :length], 0.5)
        if closing:
            assert not band[b, max(length - closing, 0):].any()


@pytest.mark.parametrize("arch,dtype,quantize", [("bert", "fp32", "int8"), ("modernbert", "fp32", "int8"),
                                                  ("roberta", "fp16", None), ("modernbert", "bf16", None)])
def test_encoder_low_precision_records_span_agreement(arch, dtype, quantize, encoder_bundles, tmp_path):
    """int8 (per-row activation scales: batch invariant) and fp16/bf16, as for decoders: the report
    holds span agreement against the fp32 reference, and batch invariance for int8 is exact."""
    backbone, head, _ = encoder_bundles(arch)
    out = tmp_path / "bundle"
    manifest = export_bundle(ExportOptions(backbone=str(backbone), head=str(head), layer=TINY_LAYER, output=str(out),
                                           dtype=dtype, quantize=quantize))
    report = manifest.validation
    assert manifest.tokenizer.template_after and manifest.dtype == dtype and manifest.quantization == quantize
    assert 0.5 <= report["dice"] <= 1.0 and 0.0 <= report["exact_match_rate"] <= 1.0 and "reference_spans" in report
    if quantize == "int8":
        assert report["batch_invariance_max_abs_diff"] <= 1e-5


def test_window_options_leave_room_for_the_closing_token():
    from tommer.runtime.errors import InputError
    from tommer.runtime.options import check_window_options

    check_window_options(29, 27, 26)  # a decoder: 28 tokens after BOS, overlap 27
    with pytest.raises(InputError, match="closing token"):
        check_window_options(29, 27, 26, closing=1)  # 27 text tokens: no room past the overlap
    check_window_options(30, 27, 26, closing=1)


def test_padding_past_the_position_table_is_harmless(encoder_bundles):
    """BERT's 512 absolute positions: a batch padded past them (validation pads a full window
    further) must run, and the real tokens' spans must not move."""
    _, _, bundle = encoder_bundles("bert")
    manifest = read_manifest(bundle)
    tok = BundleTokenizer.from_bundle(bundle, manifest)
    (enc,) = [tok.close(e) for e in tok.encode_batch([TEXTS[1]])]
    session = create_session(bundle / "model.onnx", "cpu")
    alone = run_band(session, *pad_batch([enc.ids], manifest.tokenizer.pad_token_id))
    padded = run_band(session, *pad_batch([enc.ids], manifest.tokenizer.pad_token_id, 520))
    np.testing.assert_allclose(padded[0, :len(enc)], alone[0], atol=1e-5, rtol=0)
    assert not padded[0, len(enc):].any()
