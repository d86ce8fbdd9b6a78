"""The fused head graph against the golden fixture and the dense reference."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.inliner
import onnx_ir as ir
import onnxruntime as ort
import pytest
import torch

from tommer.exporter.graph import head_only_model
from tommer.exporter.head import load_head
from tommer.exporter.head_onnx import BandGeometry
from tommer.exporter.random_models import make_head
from tommer.exporter.reference import dense_span_probs, dense_to_band, reference_band

GOLDEN_TOLERANCE = 1e-5


def run_head(head, geometry, hidden, mask):
    proto = ir.serde.serialize_model(head_only_model(head, geometry))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"hidden_states": hidden.astype(np.float32), "attention_mask": mask.astype(np.int64)})[0]


def test_real_head_config_read_from_file(real_head_dir):
    head = load_head(real_head_dir)
    cfg = head.config
    assert (cfg.layer, cfg.rank, cfg.causal, cfg.sliding_window, cfg.use_cosine) == (6, 64, True, 25, True)
    assert head.n_parameters == 264_198
    assert BandGeometry.for_head(head, 32).band_width == 26


def test_reference_reproduces_golden(real_head_dir, golden):
    head = load_head(real_head_dir)
    band = reference_band(golden["hidden_states"], golden["attention_mask"], head, 26)
    np.testing.assert_allclose(band, golden["span_probs"], atol=GOLDEN_TOLERANCE, rtol=0)


def test_exported_head_reproduces_golden(real_head_dir, golden):
    head = load_head(real_head_dir)
    band = run_head(head, BandGeometry.for_head(head, 32), golden["hidden_states"], golden["attention_mask"])
    assert band.shape == golden["span_probs"].shape
    np.testing.assert_allclose(band, golden["span_probs"], atol=GOLDEN_TOLERANCE, rtol=0)
    # decoded spans, not only tensors: identical sets above 0.5
    assert set(zip(*np.nonzero(band > 0.5))) == set(zip(*np.nonzero(golden["span_probs"] > 0.5)))
    assert (golden["span_probs"] > 0.5).sum() > 0


def test_head_is_one_function_node_of_standard_ops(real_head_dir):
    head = load_head(real_head_dir)
    proto = ir.serde.serialize_model(head_only_model(head, BandGeometry.for_head(head, 32)))
    onnx.checker.check_model(proto, full_check=True)
    assert [(n.domain, n.op_type) for n in proto.graph.node] == [("tommer", "SpanBand")]
    (function,) = proto.functions
    assert {n.domain for n in function.node} == {""}  # standard operators only


@pytest.mark.parametrize("causal,window,max_span", [(True, 0, 7), (True, 3, 32), (False, 4, 32), (True, 25, 32)])
@pytest.mark.parametrize("cosine", [True, False])
def test_head_variants_match_dense_reference(tmp_path, causal, window, max_span, cosine):
    """Windowless, non-causal and dot-product heads: the band equals the dense reference's band."""
    head = load_head(make_head(tmp_path, hidden_size=24, layer=0, rank=8, sliding_window=window,
                               causal=causal, use_cosine=cosine, seed=3))
    geometry = BandGeometry.for_head(head, max_span)
    rng = np.random.default_rng(0)
    lengths = [19, 5, 1, 12]
    hidden = (0.25 * rng.normal(size=(4, 19, 24))).astype(np.float32)  # moderate logits for dot-product heads
    mask = (np.arange(19)[None, :] < np.array(lengths)[:, None]).astype(np.int64)
    band = run_head(head, geometry, hidden, mask)
    for b, n in enumerate(lengths):
        dense = dense_span_probs(torch.from_numpy(hidden[b, :n]), head)
        expected = dense_to_band(dense, geometry.band_width).numpy()
        np.testing.assert_allclose(band[b, :n], expected, atol=1e-5, rtol=0)
        assert not band[b, n:].any(), "padding must score 0"
    assert band.shape[-1] == (window + 1 if window else max_span)


def test_no_seq_by_seq_tensor_in_head(real_head_dir):
    """Every intermediate tensor of the inlined head has at most one axis of length seq."""
    head = load_head(real_head_dir)
    proto = onnx.inliner.inline_local_functions(ir.serde.serialize_model(head_only_model(head, BandGeometry.for_head(head, 32))))
    names = [o for node in proto.graph.node for o in node.output]
    del proto.graph.output[:]
    proto.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in names)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    seq = 97  # a length no other axis has
    hidden = np.random.default_rng(1).normal(size=(1, seq, 2048)).astype(np.float32)
    outputs = session.run(None, {"hidden_states": hidden, "attention_mask": np.ones((1, seq), np.int64)})
    assert len(outputs) > 50
    worst = max(sum(d == seq for d in np.shape(o)) for o in outputs)
    assert worst == 1
