"""``export_bundle``: head + truncated backbone -> one validated ONNX graph in a bundle folder."""

from __future__ import annotations

import gc
import importlib.metadata as md
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import onnx_ir as ir
import torch

from ..runtime.bundle import (FORMAT_VERSION, MODEL_NAME, TOKENIZER_NAME, BackboneInfo, HeadInfo, Manifest,
                              TokenizerInfo, atomic_folder, write_manifest)
from ..runtime.errors import ExportError, collect_and_raise
from ..runtime.tokenization import BundleTokenizer
from .backbone import TruncatedBackbone, hidden_states_after_block, load_truncated_backbone
from .graph import TORCH_DTYPES, attach_head, export_backbone, quantize_int8, save_model
from .head import Head, load_head
from .head_onnx import BandGeometry
from .reference import dense_span_probs, dense_to_band
from .spec import DTYPES, QUANTIZATIONS, ExportOptions, ExportSpec
from .texts import VALIDATION_TEXTS
from .validate import ReferenceSet, estimated_report, validate_graph, validation_provider

DEFAULT_MAX_TOKENS = 2048  # default window of the annotator, capped by the backbone's positions
LIBRARIES = ("tommer", "torch", "transformers", "onnx", "onnxscript", "onnx-ir", "onnxruntime", "tokenizers")

Step = Callable[[str], None]


def check_options(options: ExportOptions) -> None:
    problems = []
    if options.dtype not in DTYPES:
        problems.append(f"--dtype {options.dtype!r}: expected one of {', '.join(DTYPES)}")
    if options.quantize is not None and options.quantize not in QUANTIZATIONS:
        problems.append(f"--quantize {options.quantize!r}: expected one of {', '.join(QUANTIZATIONS)}")
    if options.quantize and options.dtype != "fp32":
        problems.append(f"--quantize {options.quantize} is for CPUs and starts from fp32; found --dtype {options.dtype}")
    if options.max_span_tokens < 1:
        problems.append(f"--max-span-tokens must be >= 1, found {options.max_span_tokens}")
    if options.layer < 0:
        problems.append(f"--layer must be >= 0, found {options.layer}")
    collect_and_raise(problems, ExportError, "invalid export options")


def check_compatible(head: Head, backbone: TruncatedBackbone, layer: int) -> None:
    problems = []
    if head.config.layer != layer:
        problems.append(f"head {head.source} was trained on layer {head.config.layer}, but --layer is {layer}: "
                        f"pass --layer {head.config.layer} or a head trained on layer {layer}")
    if head.hidden_size != backbone.hidden_size:
        problems.append(f"head {head.source} reads hidden states of size {head.hidden_size}, backbone "
                        f"{backbone.source} has hidden size {backbone.hidden_size}: they do not belong together")
    collect_and_raise(problems, ExportError, "head and backbone do not fit")


def save_tokenizer(backbone: TruncatedBackbone, folder: Path) -> TokenizerInfo:
    """Write ``tokenizer.json`` (fast tokenizer) and choose the BOS and pad ids."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(backbone.folder)
    if not getattr(tok, "is_fast", False):
        raise ExportError(f"backbone {backbone.source}: no fast tokenizer (tokenizer.json) available; "
                          "tommer needs one for exact character offsets")
    tok.backend_tokenizer.save(str(folder / TOKENIZER_NAME))
    bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    if bos is None:
        raise ExportError(f"backbone {backbone.source}: its tokenizer has neither a BOS nor an EOS token to open texts with")
    pad = tok.pad_token_id if tok.pad_token_id is not None else bos
    if len(tok) > backbone.vocab_size:
        raise ExportError(f"backbone {backbone.source}: its tokenizer has {len(tok)} tokens but the model embeds only "
                          f"{backbone.vocab_size}: tokenizer and weights do not belong together")
    return TokenizerInfo(file=TOKENIZER_NAME, bos_token_id=int(bos), pad_token_id=int(pad),
                         max_tokens=min(backbone.max_positions, DEFAULT_MAX_TOKENS))


def torch_bands(backbone: TruncatedBackbone, head: Head, encodings: list, geometry: BandGeometry) -> list[np.ndarray]:
    """Bands of each text alone, from the torch backbone in its current dtype and the fp32 head."""
    bands = []
    with torch.no_grad():
        for enc in encodings:
            hidden = hidden_states_after_block(backbone, torch.from_numpy(enc.ids).unsqueeze(0))[0]
            bands.append(dense_to_band(dense_span_probs(hidden, head), geometry.band_width).numpy())
    return bands


def reference_set(backbone: TruncatedBackbone, head: Head, tokenizer: BundleTokenizer,
                  geometry: BandGeometry) -> ReferenceSet:
    """Reference bands of the validation texts, each computed alone in fp32."""
    encodings = tokenizer.encode_batch(list(VALIDATION_TEXTS))
    return ReferenceSet(encodings=encodings, bands=torch_bands(backbone, head, encodings, geometry))


def library_versions() -> dict[str, str]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "absent"
    return out


def _build_graph(backbone: TruncatedBackbone, head: Head, geometry: BandGeometry, options: ExportOptions,
                 spec: ExportSpec, target: Path, step: Step) -> None:
    step(f"exporting blocks 0..{options.layer} in {options.dtype}")
    model = export_backbone(backbone, options.dtype, spec)
    backbone.model = None  # type: ignore[assignment]  # the graph holds the weights now
    with tempfile.TemporaryDirectory(prefix="tommer-export-") as scratch:
        if options.quantize == "int8":
            step("quantizing the backbone's MatMuls to int8")
            src = Path(scratch) / "backbone.onnx"
            save_model(model, src, spec)
            del model
            gc.collect()
            model = quantize_int8(src, Path(scratch) / "backbone.int8.onnx", spec)
        attach_head(model, head, geometry, spec)
        step("saving the graph")
        save_model(model, target, spec)
    del model
    gc.collect()


def export_bundle(options: ExportOptions, spec: ExportSpec = ExportSpec(), step: Step = lambda _: None) -> Manifest:
    """Export, validate and write a bundle folder; nothing is left behind on failure.

    Raises:
        ExportError: options, head, backbone or their fit are wrong.
        ParityError: the graph disagrees with the reference maths.
        BundleError: the output folder exists and ``overwrite`` is off.
    """
    check_options(options)
    if Path(options.output).exists() and not options.overwrite:
        raise ExportError(f"output folder {options.output} already exists: pass --overwrite to replace it")
    step(f"loading head {options.head}")
    head = load_head(options.head, options.head_revision, options.token)
    step(f"loading backbone {options.backbone}, blocks 0..{options.layer} only")
    backbone = load_truncated_backbone(options.backbone, options.layer, options.revision, options.token)
    check_compatible(head, backbone, options.layer)
    geometry = BandGeometry.for_head(head, options.max_span_tokens)
    with atomic_folder(options.output, options.overwrite) as tmp:
        tok_info = save_tokenizer(backbone, tmp)
        tokenizer = BundleTokenizer(tmp / tok_info.file, tok_info.bos_token_id, tok_info.pad_token_id)
        step("computing the reference on the validation texts")
        refs = reference_set(backbone, head, tokenizer, geometry)
        provider = validation_provider(options.dtype)
        estimate = None
        if provider is None:
            step(f"no local provider runs {options.dtype} graphs: measuring {options.dtype} agreement in PyTorch")
            backbone.model.to(TORCH_DTYPES[options.dtype])
            estimate = torch_bands(backbone, head, refs.encodings, geometry)
        _build_graph(backbone, head, geometry, options, spec, tmp / MODEL_NAME, step)
        if estimate is not None:
            report = estimated_report(refs, estimate, options.dtype, spec)
        else:
            step(f"validating the graph against the reference on onnxruntime-{provider}")
            report = validate_graph(tmp / MODEL_NAME, refs, tok_info.pad_token_id, options.dtype,
                                    options.quantize, spec, provider)
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            tommer_version=library_versions()["tommer"],
            backbone=BackboneInfo(source=backbone.source, architecture=backbone.model_type,
                                  hidden_size=backbone.hidden_size, num_layers_total=backbone.num_layers_total,
                                  num_layers_kept=options.layer + 1, vocab_size=backbone.vocab_size,
                                  max_positions=backbone.max_positions, revision=backbone.revision),
            head=HeadInfo(source=head.source, llm_name=head.config.llm_name, layer=head.config.layer,
                          rank=head.config.rank, causal=head.config.causal_mask,
                          sliding_window=head.config.sliding_window, use_cosine=head.config.use_cosine,
                          mask_bos=head.config.mask_bos, n_parameters=head.n_parameters, revision=head.revision),
            tokenizer=tok_info,
            band_width=geometry.band_width,
            dtype=options.dtype,
            quantization=options.quantize,
            opset=spec.opset,
            input_names=spec.input_names,
            output_name=spec.output_name,
            library_versions=library_versions(),
            validation=report,
        )
        manifest = write_manifest(tmp, manifest)
    return manifest
