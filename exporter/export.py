"""``export_bundle``: head + truncated backbone -> one validated ONNX graph in a bundle folder.

The torch stage (load blocks 0..L, compute the reference on the validation texts,
trace, save the backbone graph) runs in a spawned child process for large backbones:
all its memory returns to the system when it exits, so quantization, attaching the
head and validation never sit on top of it. Peak memory stays below the full model's.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata as md
import multiprocessing
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx_ir as ir
import torch

from ..runtime.bundle import (
    FORMAT_VERSION,
    MODEL_NAME,
    TOKENIZER_NAME,
    BackboneInfo,
    GraphInfo,
    HeadInfo,
    Manifest,
    TokenizerInfo,
    atomic_folder,
    write_manifest,
)
from ..runtime.core.tokenization import BundleTokenizer
from ..runtime.errors import ExportError, collect_and_raise
from .backbone import (
    BackboneSource,
    TruncatedBackbone,
    hidden_states_after_block,
    inspect_backbone,
    load_truncated_backbone,
    opening_token,
)
from .encoders import close_encodings, is_encoder, kind_mismatch, opens_with_bos, template_tokenizer_info
from .graph import (
    TORCH_DTYPES,
    attach_head,
    cast_keeping_rotary_fp32,
    export_backbone,
    fuse_for_onnxruntime,
    fused_op_counts,
    inline_head,
    quantize_int8,
    save_model,
)
from .head import Head, head_defaults, load_head
from .head_onnx import BandGeometry
from .hub import alias_target
from .reference import dense_span_probs, dense_to_band
from .rewrites import expand_kv_heads, expands_kv_heads
from .spec import DTYPES, QUANTIZATIONS, TARGETS, ExportOptions, ExportSpec
from .validate import ReferenceSet, estimated_report, validate_graph, validation_encodings, validation_provider

DEFAULT_MAX_TOKENS = 2048  # default window of the annotator, capped by the backbone's positions
LIBRARIES = ("tommer", "torch", "transformers", "onnx", "onnxscript", "onnx-ir", "onnxruntime", "tokenizers")

Step = Callable[[str], None]


def check_options(options: ExportOptions) -> None:
    problems = []
    if options.dtype not in DTYPES:
        problems.append(f"--dtype {options.dtype!r}: expected one of {', '.join(DTYPES)}")
    if options.quantize is not None and options.quantize not in QUANTIZATIONS:
        problems.append(f"--quantize {options.quantize!r}: expected one of {', '.join(QUANTIZATIONS)}")
    if options.target not in TARGETS:
        problems.append(f"--target {options.target!r}: expected one of {', '.join(TARGETS)}")
    if options.quantize and options.target == "tensorrt":
        problems.append(f"--quantize {options.quantize} makes MatMulIntegerToFloat, an onnxruntime CPU operator "
                        "TensorRT cannot parse: use --target onnxruntime")
    if options.quantize and options.dtype != "fp32":
        problems.append(f"--quantize {options.quantize} is for CPUs and starts from fp32; found --dtype {options.dtype}")
    if options.max_span_tokens < 1:
        problems.append(f"--max-span-tokens must be >= 1, found {options.max_span_tokens}")
    if options.layer is not None and options.layer < 0:
        problems.append(f"--layer must be >= 0, found {options.layer}")
    collect_and_raise(problems, ExportError, "invalid export options")


def _names(ref: str) -> set[str]:
    """A model reference as compared with a head's ``llm_name``: the whole id and its last part."""
    ref = ref.strip().rstrip("/").lower()
    return {ref, ref.rsplit("/", 1)[-1]} if ref else set()


def backbone_mismatch(head: Head, src: BackboneSource) -> str | None:
    """Why the head does not name this backbone (None when it does).

    A head is trained on the hidden states of one LLM: another model of the same width
    feeds it states it has never seen, and the spans are wrong without any error. The
    head's ``llm_name`` must match the backbone as given (repo id or folder), its last
    part (a local copy or a mirror of the same repository), or the name in its config.
    """
    wanted = head.config.llm_name
    names = _names(src.source) | _names(str(getattr(src.config, "_name_or_path", "") or ""))
    if not wanted or (_names(wanted) | _names(alias_target(wanted) or "")) & names:  # phi-2: microsoft/phi-2
        return None
    return (f"head {head.source} was trained on {wanted!r}, the backbone is {src.source!r} "
            f"({src.model_type}, hidden size {src.hidden_size})")


def check_compatible(head: Head, src: BackboneSource, layer: int, allow_mismatch: bool = False) -> str | None:
    """Refuse a head that does not belong to the backbone; returns the mismatch allowed, if any."""
    problems = []
    if head.config.layer != layer:
        problems.append(f"head {head.source} was trained on layer {head.config.layer}, but --layer is {layer}: "
                        f"pass --layer {head.config.layer} or a head trained on layer {layer}")
    if head.hidden_size != src.hidden_size:
        problems.append(f"head {head.source} reads hidden states of size {head.hidden_size}, backbone "
                        f"{src.source} has hidden size {src.hidden_size}: they do not belong together")
    if kind := kind_mismatch(head.config.llm_name, src.model_type):  # encoder head on a decoder, or the reverse
        problems.append(f"head {head.source}: {kind}")
    mismatch = backbone_mismatch(head, src) if not problems else None
    if mismatch and not allow_mismatch:
        problems.append(f"{mismatch}: pass --backbone {alias_target(head.config.llm_name) or head.config.llm_name} "
                        "(or a local copy of it; with no --backbone the head's own is exported), or "
                        "--allow-head-mismatch if this backbone is that model under another name")
    collect_and_raise(problems, ExportError, "head and backbone do not fit")
    return mismatch


def save_tokenizer(src: BackboneSource, folder: Path) -> TokenizerInfo:
    """Write ``tokenizer.json`` (fast tokenizer) and choose the BOS and pad ids."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src.folder)
    if not getattr(tok, "is_fast", False):
        raise ExportError(f"backbone {src.source}: no fast tokenizer (tokenizer.json) available; "
                          "tommer needs one for exact character offsets")
    tok.backend_tokenizer.save(str(folder / TOKENIZER_NAME))
    if len(tok) > src.vocab_size:
        raise ExportError(f"backbone {src.source}: its tokenizer has {len(tok)} tokens but the model embeds only "
                          f"{src.vocab_size}: tokenizer and weights do not belong together")
    if is_encoder(src.model_type):  # the tokenizer's own template, [CLS] x [SEP] / <s> x </s>
        return template_tokenizer_info(src.folder, src.source, min(src.max_positions, DEFAULT_MAX_TOKENS),
                                       TOKENIZER_NAME)
    opening = opening_token(src.folder, src.model_type, src.source)  # the reference's add_bos_token=True
    bos = opening.id
    pad = tok.pad_token_id if tok.pad_token_id is not None else bos
    return TokenizerInfo(file=TOKENIZER_NAME, bos_token_id=int(bos), pad_token_id=int(pad),
                         max_tokens=min(src.max_positions, DEFAULT_MAX_TOKENS), bos_token=opening.token,
                         bos_rule=opening.rule)


def torch_bands(backbone: TruncatedBackbone, head: Head, ids: list[np.ndarray], band_width: int,
                closing: int = 0, mask_opening: bool = False) -> list[np.ndarray]:
    """Band of each text alone, from the torch backbone in its current dtype and the fp32 head."""
    bands = []
    with torch.no_grad():
        for seq in ids:
            hidden = hidden_states_after_block(backbone, torch.from_numpy(seq).unsqueeze(0))[0]
            bands.append(dense_to_band(dense_span_probs(hidden, head, closing, mask_opening), band_width).numpy())
    return bands


@dataclass(frozen=True)
class TorchStage:
    """Everything the torch stage needs (picklable, for a child process)."""

    src: BackboneSource
    head: Head
    dtype: str
    ids: list[np.ndarray]
    band_width: int
    estimate: bool  # also run the weights in ``dtype`` in torch (no local provider runs the graph)
    graph_path: Path
    spec: ExportSpec
    target: str = "onnxruntime"
    quiet: bool = False  # --quiet: the child process silences the libraries too
    closing: int = 0  # encoders: closing template tokens after each text (never a span's end)
    mask_opening: bool = False  # encoders: the opening token never starts a span


@dataclass(frozen=True)
class TorchStageResult:
    reference_bands: list[np.ndarray]
    estimate_bands: list[np.ndarray] | None
    rewrites: dict[str, int]


def quiet_libraries() -> None:
    """Keep the libraries' warnings, progress bars and log lines off the terminal (``--quiet``);
    errors still reach the user as tommer's errors. The torch stage's child calls it too."""
    import logging
    import os
    import warnings

    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    warnings.simplefilter("ignore")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    for name in ("torch", "torch.onnx", "onnxscript", "onnx_ir", "onnxruntime"):
        logging.getLogger(name).setLevel(logging.ERROR)


def run_torch_stage(stage: TorchStage) -> TorchStageResult:
    """Load blocks 0..L, compute the fp32 reference, trace in ``dtype`` and save the backbone graph."""
    if stage.quiet:
        quiet_libraries()
    backbone = load_truncated_backbone(stage.src)
    reference = torch_bands(backbone, stage.head, stage.ids, stage.band_width, stage.closing, stage.mask_opening)
    estimate = None
    if stage.estimate:
        cast_keeping_rotary_fp32(backbone.model, TORCH_DTYPES[stage.dtype])  # the graph's fp32 rotary
        estimate = torch_bands(backbone, stage.head, stage.ids, stage.band_width, stage.closing, stage.mask_opening)
    model = export_backbone(backbone, stage.dtype, stage.spec, stage.target)
    del backbone
    rewrites = fuse_for_onnxruntime(model) if stage.target == "onnxruntime" else {}
    save_model(model, stage.graph_path, stage.spec)
    return TorchStageResult(reference, estimate, rewrites)


def run_torch_stage_isolated(stage: TorchStage) -> TorchStageResult:
    """``run_torch_stage`` in a spawned child process, so that all its memory is returned after."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(run_torch_stage, stage).result()


def library_versions() -> dict[str, str]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "absent"
    return out


def _manifest(src: BackboneSource, head: Head, tok_info: TokenizerInfo, geometry: BandGeometry,
              options: ExportOptions, spec: ExportSpec, report: dict, graph: GraphInfo,
              mismatch: str | None = None) -> Manifest:
    return Manifest(
        format_version=FORMAT_VERSION,
        tommer_version=library_versions()["tommer"],
        backbone=BackboneInfo(source=src.source, architecture=src.model_type, hidden_size=src.hidden_size,
                              num_layers_total=src.num_layers_total, num_layers_kept=options.layer + 1,
                              vocab_size=src.vocab_size, max_positions=src.max_positions, revision=src.revision),
        head=HeadInfo(**dataclasses.asdict(head.config), source=head.source, n_parameters=head.n_parameters,
                      revision=head.revision, backbone_mismatch=mismatch),
        tokenizer=tok_info, band_width=geometry.band_width, dtype=options.dtype, quantization=options.quantize,
        opset=spec.opset_for(options.target), input_names=spec.input_names, output_name=spec.output_name,
        library_versions=library_versions(), validation=report, graph=graph,
    )


def _check_for_tensorrt(model: ir.Model, step: Step) -> dict:
    """Run the static TensorRT check on the (inlined) graph; an export for TensorRT that fails it is an error."""
    from .tensorrt import check_tensorrt

    report = check_tensorrt(model)
    step(f"TensorRT {report.tensorrt} parser check: {report.nodes} nodes, "
         + ("every operator supported" if report.supported else f"{len(report.problems)} problems"))
    if not report.supported:
        collect_and_raise(report.problems, ExportError,
                          f"the graph is not one TensorRT {report.tensorrt}'s ONNX parser can read")
    return report.as_dict()


def export_bundle(options: ExportOptions, spec: ExportSpec = ExportSpec(), step: Step = lambda _: None) -> Manifest:
    """Export, validate and write a bundle folder; nothing is left behind on failure.

    Large backbones are loaded and traced in a spawned child process: a script that
    calls this must guard its entry point with ``if __name__ == "__main__":``.

    Raises:
        ExportError: options, head, backbone or their fit are wrong.
        ParityError: the graph disagrees with the reference maths.
    """
    check_options(options)
    if options.quiet:
        quiet_libraries()
    if Path(options.output).exists() and not options.overwrite:
        raise ExportError(f"output folder {options.output} already exists: pass --overwrite to replace it")
    step(f"loading head {options.head}")
    head = load_head(options.head, options.head_revision, options.token)
    options = dataclasses.replace(options, **head_defaults(head, options.backbone, options.layer))
    step(f"resolving backbone {options.backbone}")
    src = inspect_backbone(options.backbone, options.layer, options.revision, options.token)
    mismatch = check_compatible(head, src, options.layer, options.allow_head_mismatch)
    if mismatch:
        step(f"warning: {mismatch}; exporting anyway (--allow-head-mismatch)")
    geometry = BandGeometry.for_head(head, options.max_span_tokens)
    with atomic_folder(options.output, options.overwrite) as tmp, \
            tempfile.TemporaryDirectory(prefix="tommer-export-") as scratch:
        tok_info = save_tokenizer(src, tmp)
        has_bos = tok_info.bos_rule == "bos_token" or (tok_info.bos_rule == "template"
                                                        and opens_with_bos(src.folder, tok_info))
        head = head.for_tokenizer(has_bos=has_bos)  # settles mask_bos: null
        if tok_info.template_before is not None:  # encoders: the closing tokens are keys, never span ends
            geometry = dataclasses.replace(geometry, closing=len(tok_info.after_ids), mask_opening=True)
        encodings = validation_encodings(BundleTokenizer(tmp / tok_info.file, tok_info.bos_token_id,
                                                         tok_info.pad_token_id), tok_info.max_tokens)
        encodings = close_encodings(encodings, tok_info.after_ids, tok_info.max_tokens)
        provider = validation_provider(options.dtype, options.quantize)
        stage = TorchStage(src=src, head=head, dtype=options.dtype, ids=[e.ids for e in encodings],
                           band_width=geometry.band_width, estimate=provider is None,
                           graph_path=Path(scratch) / "backbone.onnx", spec=spec, target=options.target,
                           quiet=options.quiet, closing=geometry.closing, mask_opening=geometry.mask_opening)
        isolate = src.weight_bytes > spec.isolate_torch_over_bytes
        step(f"loading blocks 0..{options.layer}, computing the reference, exporting in {options.dtype}"
             f"{' (in a child process)' if isolate else ''}")
        result = run_torch_stage_isolated(stage) if isolate else run_torch_stage(stage)
        model = ir.load(stage.graph_path)
        if options.quantize == "int8":
            counts = quantize_int8(model, spec)
            step(f"int8 linear layers: {counts['MatMulIntegerToFloat']} MatMuls, "
                 f"{counts['quantized_inputs']} activations quantized per row, "
                 f"{counts['rescales_left_out']} output rescales moved to the next quantizer")
        rewrites = dict(result.rewrites)
        if expands_kv_heads(options.dtype, options.quantize, options.target) and (n := expand_kv_heads(model)):
            rewrites["kv_heads_expanded"] = n  # fp32 on CUDA: memory-efficient attention, not S^2 scratch
        fused = fused_op_counts(model)
        step(f"graph for {options.target}: fused operators {fused or 'none'}"
             + (f"; rewrites: {rewrites}" if rewrites else ""))
        attach_head(model, head, geometry, spec)
        if options.target == "tensorrt":
            trt = _check_for_tensorrt(inline_head(model), step)
        else:
            trt = {"supported": False, "checked": False,
                   "reason": "target onnxruntime: opset-23 fused operators; export with --target tensorrt for TensorRT"}
        graph_info = GraphInfo(target=options.target, fused_ops=fused, rewrites=rewrites, tensorrt=trt)
        step("saving the graph")
        save_model(model, tmp / MODEL_NAME, spec)
        del model
        refs = ReferenceSet(encodings=encodings, bands=result.reference_bands)
        if result.estimate_bands is not None:
            step(f"no local provider runs {options.dtype} graphs: agreement measured with the {options.dtype} "
                 "weights in PyTorch")
            report = estimated_report(refs, result.estimate_bands, options.dtype, spec)
        else:
            step(f"validating the graph against the reference on onnxruntime-{provider}")
            report = validate_graph(tmp / MODEL_NAME, refs, tok_info.pad_token_id, options.dtype,
                                    options.quantize, spec, provider)
        manifest = write_manifest(tmp, _manifest(src, head, tok_info, geometry, options, spec, report, graph_info,
                                                          mismatch))
    return manifest
