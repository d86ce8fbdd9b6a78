"""Check an exported graph against the reference maths, at shapes other than the trace shape."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..runtime.core.decoding import decode_threshold
from ..runtime.core.tokenization import Encoding, pad_batch
from ..runtime.errors import ParityError, collect_and_raise
from ..runtime.execution.session import create_session, run_band
from ..runtime.quality.evaluate import span_agreement
from .spec import ExportSpec
from .texts import LONG_VALIDATION_TEXT, VALIDATION_TEXTS


@dataclass(frozen=True)
class ReferenceSet:
    """Texts as token ids and the reference band of each text computed alone."""

    encodings: list[Encoding]
    bands: list[np.ndarray]  # each (n_i, band_width)


def span_set(band: np.ndarray, threshold: float) -> set[tuple[int, int]]:
    starts, ends, _ = decode_threshold(band, threshold)
    return set(zip(starts.tolist(), ends.tolist()))


def agreement(reference: list[np.ndarray], other: list[np.ndarray], threshold: float) -> dict[str, float]:
    """Span-level agreement of decoded bands (``runtime.evaluate.span_agreement``), with the span counts."""
    found = span_agreement([span_set(b, threshold) for b in reference], [span_set(b, threshold) for b in other])
    return {**found.figures(), "reference_spans": found.spans_first, "spans": found.spans_second}


def validation_encodings(tokenizer: Any, max_tokens: int) -> list[Encoding]:
    """The validation texts encoded as the runtime does, and the long text cut to the window
    (``max_tokens``, BOS included), so that the positions up to the window are validated."""
    encodings = tokenizer.encode_batch([*VALIDATION_TEXTS, LONG_VALIDATION_TEXT])
    long = encodings[-1]
    encodings[-1] = Encoding(long.ids[:max_tokens], long.offsets[:max_tokens])
    return encodings


def _batch_layouts(lengths: list[int], trace_shape: tuple[int, int], long_over: int) -> list[tuple[list[int], int]]:
    """Batches (text indices, extra padding) that differ from the trace shape and from each other.

    Texts longer than ``long_over`` tokens (the one near the window) are not padded into the
    batch of all texts, whose (batch, heads, n, n) attention scratch on the CPU would grow with
    it: each goes in a batch with one short text, and alone.
    """
    short = [i for i, n in enumerate(lengths) if n <= long_over]
    long = [i for i, n in enumerate(lengths) if n > long_over]
    return [
        (short, 0),  # all at once, padded to the longest
        (short[::-1][: max(3, trace_shape[0] + 1)], 5),  # reversed, extra padding
        *[([i, short[-1]], 0) for i in long],  # a long text with a short one padded to it
        *[([i], 0) for i in range(len(lengths))],  # each alone, no padding
    ]


def _home(per_layout: list[dict[int, np.ndarray]]) -> dict[int, np.ndarray]:
    """Each text's band in the first layout holding it (the one batch invariance is measured against)."""
    home: dict[int, np.ndarray] = {}
    for layout in per_layout:
        for i, band in layout.items():
            home.setdefault(i, band)
    return home


POSITION_BUCKETS = (0, 256, 1024)  # token positions: [0, 256), [256, 1024), [1024, ...)


def error_by_position(reference: list[np.ndarray], bands: list[np.ndarray]) -> dict[str, float]:
    """Max abs error of span probabilities by the end token's position, per bucket that has tokens."""
    out = {}
    edges = [*POSITION_BUCKETS, None]
    for lo, hi in zip(edges[:-1], edges[1:]):
        errors = [float(np.max(np.abs(b[lo:hi] - r[lo:hi]), initial=0.0)) for b, r in zip(bands, reference)
                  if len(r) > lo]
        if errors:
            out[f"{lo}-{hi - 1}" if hi else f"{lo}+"] = max(errors)
    return out


def run_graph(model_path: Path, refs: ReferenceSet, pad_token_id: int, spec: ExportSpec,
              provider: str = "cpu",
              low_memory: bool = True) -> tuple[list[dict[int, np.ndarray]], list[tuple[int, int]]]:
    """Run the graph over several batch layouts; returns {text index: band} per layout, and shapes.

    ``low_memory`` skips weight pre-packing; never for quantized graphs, whose kernels
    (int8 compute on pre-packed weights) differ without it.
    """
    session = create_session(model_path, provider, low_memory=low_memory)
    per_layout, shapes = [], []
    lengths = [len(e) for e in refs.encodings]
    for members, extra in _batch_layouts(lengths, spec.trace_shape, spec.long_text_over_tokens):
        seqs = [refs.encodings[i].ids for i in members]
        ids, mask = pad_batch(seqs, pad_token_id, max(len(s) for s in seqs) + extra)
        band = run_band(session, ids, mask)
        shapes.append(tuple(ids.shape))
        out: dict[int, np.ndarray] = {}
        for row, i in enumerate(members):
            n = len(refs.encodings[i])
            out[i] = band[row, :n]
            if np.any(band[row, n:] != 0):
                raise ParityError(f"{model_path}: non-zero span probabilities on padding (text {i})")
        per_layout.append(out)
    return per_layout, shapes


def validation_provider(dtype: str, quantization: str | None = None) -> str | None:
    """Where a graph is validated: on CUDA when onnxruntime has it (where GPU bundles run; fp32
    with TF32 off, so fp32 spans must still be identical), else on the CPU. int8 graphs run on
    the CPU only; bf16 has no CPU kernels (None: estimated in PyTorch instead)."""
    import onnxruntime as ort

    if quantization is None and "CUDAExecutionProvider" in ort.get_available_providers():
        return "cuda"
    return None if dtype == "bf16" else "cpu"


def estimated_report(refs: ReferenceSet, bands: list[np.ndarray], dtype: str, spec: ExportSpec) -> dict[str, Any]:
    """Agreement of ``dtype`` weights run in PyTorch, for graphs no local provider can run."""
    found = agreement(refs.bands, bands, spec.threshold)
    if found["dice"] < spec.low_precision_min_dice:
        raise ParityError(f"{dtype} weights: span DICE against the fp32 reference {found['dice']:.3f} "
                          f"< {spec.low_precision_min_dice}")
    return {
        "reference": "tommer.exporter.reference (fp32 PyTorch, one text at a time, unpadded)",
        "measured_with": f"torch-cpu-{dtype}: no local onnxruntime provider runs {dtype} graphs; the graph "
                         "itself was not run here (validate it on a GPU with onnxruntime-gpu)",
        "graph_run": False,
        "texts": len(refs.encodings),
        "tokens": int(sum(len(e) for e in refs.encodings)),
        "max_abs_error": max(float(np.max(np.abs(b - r), initial=0.0)) for b, r in zip(bands, refs.bands)),
        "max_abs_error_by_position": error_by_position(refs.bands, bands),
        "longest_text_tokens": max(len(e) for e in refs.encodings),
        "batch_invariance_max_abs_diff": None,  # measured only when the graph runs (validate it on a GPU)
        "threshold": spec.threshold,
        **found,
        "min_dice": spec.low_precision_min_dice,
        "passed": True,
    }


def validate_graph(model_path: Path, refs: ReferenceSet, pad_token_id: int, dtype: str,
                   quantization: str | None, spec: ExportSpec, provider: str = "cpu") -> dict[str, Any]:
    """Compare the graph with the reference; raise ParityError (all failures at once) if out of tolerance.

    fp32 graphs must match to ``spec.fp32_max_abs_error`` with identical decoded spans in every
    batch layout. Lower precisions report their span agreement and fail only when it is so low
    that the export is broken rather than lossy.
    """
    per_layout, shapes = run_graph(model_path, refs, pad_token_id, spec, provider, low_memory=quantization is None)
    errors = [float(np.max(np.abs(band - refs.bands[i]), initial=0.0))
              for layout in per_layout for i, band in layout.items()]
    home = _home(per_layout)
    invariance = max(float(np.max(np.abs(band - home[i]), initial=0.0))
                     for layout in per_layout for i, band in layout.items() if band is not home[i])
    # every text of every layout pooled: a layout of one text holds a handful of spans, so its
    # own DICE is noise (one flipped span of one is 0); span counts are those of the full batch
    worst = agreement([refs.bands[i] for layout in per_layout for i in layout],
                      [band for layout in per_layout for band in layout.values()], spec.threshold)
    worst.update({k: v for k, v in agreement([refs.bands[i] for i in sorted(home)], [home[i] for i in sorted(home)],
                                             spec.threshold).items() if k.endswith("spans")})
    # the same texts in other batches against the first batch holding them: spans must not move
    across = [agreement([home[i] for i in others], [layout[i] for i in others], spec.threshold)
              for layout in per_layout if (others := [i for i, band in layout.items() if band is not home[i]])]
    invariant_spans = {"exact_match_rate": min(a["exact_match_rate"] for a in across),
                       "dice": min(a["dice"] for a in across)}
    exact_precision = dtype == "fp32" and quantization is None
    cpu_exact = dtype == "fp32"  # fp32 and its int8 quantization run the same kernels whatever the batch
    invariance_tolerance = (spec.invariance_max_abs_diff if cpu_exact
                            else spec.low_precision_invariance_max_abs_diff)
    report = {
        "reference": "tommer.exporter.reference (fp32 PyTorch, one text at a time, unpadded)",
        "measured_with": f"onnxruntime-{provider}",
        "graph_run": True,
        "texts": len(refs.encodings),
        "tokens": int(sum(len(e) for e in refs.encodings)),
        "batch_shapes": [list(s) for s in shapes],
        "max_abs_error": max(errors),
        "max_abs_error_by_position": error_by_position([refs.bands[i] for layout in per_layout for i in layout],
                                                       [b for layout in per_layout for b in layout.values()]),
        "longest_text_tokens": max(len(e) for e in refs.encodings),
        "batch_invariance_max_abs_diff": invariance,
        "batch_invariance_exact_match_rate": invariant_spans["exact_match_rate"],
        "batch_invariance_dice": invariant_spans["dice"],
        "batch_invariance_tolerance": invariance_tolerance,
        "threshold": spec.threshold,
        **worst,
        "tolerance": spec.fp32_max_abs_error if exact_precision else None,
        "min_dice": None if exact_precision else spec.low_precision_min_dice,
        "passed": True,
    }
    problems = []
    if exact_precision:
        if report["max_abs_error"] > spec.fp32_max_abs_error:
            problems.append(f"max abs error of span probabilities {report['max_abs_error']:.3g} "
                            f"> tolerance {spec.fp32_max_abs_error:g}")
        if worst["exact_match_rate"] < 1.0:
            problems.append(f"decoded spans differ from the reference on "
                            f"{(1 - worst['exact_match_rate']) * len(refs.encodings):.0f} text(s) "
                            f"at threshold {spec.threshold}")
    elif worst["dice"] < spec.low_precision_min_dice:
        problems.append(f"span DICE against fp32 reference {worst['dice']:.3f} < {spec.low_precision_min_dice}")
    if invariance > invariance_tolerance:
        problems.append(f"not batch-invariant: a text's span probabilities change by up to {invariance:.3g} with "
                        f"the batch and padding around it (tolerance {invariance_tolerance:g})")
    if cpu_exact and invariant_spans["exact_match_rate"] < 1.0:
        problems.append("not batch-invariant: decoded spans of some texts change with the batch around them")
    elif not cpu_exact and invariant_spans["dice"] < spec.low_precision_invariance_min_dice:
        problems.append(f"not batch-invariant: span DICE between batch layouts {invariant_spans['dice']:.3f} "
                        f"< {spec.low_precision_invariance_min_dice}")
    collect_and_raise(problems, ParityError, f"exported graph {model_path.name} ({dtype}"
                      f"{', ' + quantization if quantization else ''}) failed validation")
    return report
