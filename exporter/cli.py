"""``tommer-export``: a thin Typer command over ``export_bundle``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from ..runtime.cli.common import Command, choices, version_option
from ..runtime.errors import TommerError
from .spec import DTYPES, QUANTIZATIONS, TARGETS

DEFAULT_HEAD_BACKBONE = "meta-llama/Llama-3.2-1B"  # the backbone of the head --layer N alone names

app = typer.Typer(add_completion=False, rich_markup_mode=None, help="Fuse a layer-truncated LLM and a ToMMeR span head into one validated ONNX bundle.")


DType = choices("DType", DTYPES)
Quantization = choices("Quantization", QUANTIZATIONS)
Target = choices("Target", TARGETS)


def default_output(backbone: str | None, layer: int | None, dtype: str, quantize: str | None,
                   head: str | None = None) -> str:
    """``tommer-<backbone>-L<layer>-<dtype or int8>``; what is not given comes from the head's name, or
    from a local head folder's configuration (no download, no torch)."""
    if backbone is None or layer is None:
        from .hub import parse_head_name

        named = parse_head_name(head or "")
        if named is None and head and Path(head).is_dir():
            named = _local_head_name(Path(head))
        if named is not None:
            backbone, layer = backbone or named.backbone, named.layer if layer is None else layer
    name = Path((backbone or "").rstrip("/")).name or Path((head or "head").rstrip("/")).name
    return f"tommer-{name}" + (f"-L{layer}" if layer is not None else "") + f"-{quantize or dtype}"


def _local_head_name(folder: Path):
    from .head import LAYOUTS
    from .head_config import read_head_fields
    from .hub import HeadName

    for config_file, _ in LAYOUTS:
        if (folder / config_file).is_file():
            try:
                fields = read_head_fields(folder / config_file)
            except TommerError:
                return None  # the export reports it with its context
            return HeadName(str(fields["llm_name"]), int(fields["layer"]), int(fields["rank"]))
    return None


def list_heads() -> None:
    """``--list``: the published heads, from the Hub; offline, tommer's table, saying so."""
    from .hub import format_heads, published_heads

    rows, offline = published_heads()
    if offline:
        typer.echo(f"note: {offline}", err=True)
    typer.echo(format_heads(rows))


@app.command(cls=Command)
def export(
    layer: Optional[int] = typer.Option(None, "--layer", help="Backbone block whose output the head reads (0-based); blocks after it are never loaded. Alone, it names the published head llm2ner/ToMMeR-Llama-3.2-1B_L<layer>_R64 (backbone meta-llama/Llama-3.2-1B). [default: the layer the head was trained on]"),
    backbone: Optional[str] = typer.Option(None, help="Hugging Face decoder: Hub id or local folder. [default: the head's own, its llm_name (aliases such as phi-2 or mistral-7b resolved to their Hub ids)]"),
    head: Optional[str] = typer.Option(None, help="llm2ner head: a local folder (experimaestro.json + model.safetensors, or definition.json + parameters) or a Hub id: llm2ner/ToMMeR-<backbone>_L<layer>_R<rank>, a bare ToMMeR-<backbone>_L<layer>_R<rank> (owner llm2ner), the model card's VictorMorand/ToMMeR/<name> (an alias of llm2ner/<name>), or owner/name[/subfolder]. [default: llm2ner/ToMMeR-Llama-3.2-1B_L<layer>_R64]"),
    list_published: bool = typer.Option(False, "--list", help="List the published heads (id, backbone, layer, rank, parameters, gated backbone) from the Hub, and exit; offline, tommer's own table, saying so."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Bundle folder to write. [default: ./tommer-<backbone>-L<layer>-<dtype or int8>]"),
    dtype: DType = typer.Option(DType("fp32"), help="Precision of the backbone in the graph (fp16/bf16 for GPUs); the head always runs in fp32."),
    quantize: Optional[Quantization] = typer.Option(None, help="int8: the backbone's linear layers on onnxruntime's CPU integer GEMM (int8 weights per output column, activations int8 with one scale per token at run time; batch-invariant), for CPUs; needs --dtype fp32. [default: none]"),
    target: Target = typer.Option(Target("onnxruntime"), help="Runtime the graph is built for. onnxruntime: opset 23 with fused Attention (causal, no mask tensor), RMSNormalization and RotaryEmbedding kernels, for the CPU and CUDA providers. tensorrt: opset 20 standard operators, head inlined, checked against TensorRT 10.1's ONNX parser operator table (also runs on CUDA and CPU, unfused)."),
    max_span_tokens: int = typer.Option(32, help="Band width for heads trained without a sliding window (longest span scored, in tokens); windowed heads use window+1."),
    revision: Optional[str] = typer.Option(None, help="Backbone revision (branch, tag or commit) on the Hub. [default: main]"),
    head_revision: Optional[str] = typer.Option(None, help="Head revision on the Hub. [default: main]"),
    token: Optional[str] = typer.Option(None, envvar="HF_TOKEN", help="Hugging Face token for gated or private repos. [default: $HF_TOKEN or the cached login]"),
    overwrite: bool = typer.Option(False, help="Replace the output folder if it exists."),
    allow_head_mismatch: bool = typer.Option(False, "--allow-head-mismatch", help="Export even when the head's llm_name (the LLM it was trained on) does not name --backbone: for a copy or mirror of that LLM under another name. The mismatch is recorded in the manifest. Without it, a mismatch is an error."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only errors and the final summary line."),
    verbose: bool = typer.Option(False, "--verbose", help="Also show the libraries' warnings, progress bars and log lines (torch, transformers, onnxruntime) and the SHA-256 of the bundle's files. Without it: tommer's stages with their times, and the summary."),
    version: Optional[bool] = version_option(),
) -> None:
    """Export blocks 0..LAYER of BACKBONE and the span HEAD as one ONNX graph, validate it, write a bundle."""
    if list_published:
        list_heads()
        return
    if head is None and layer is None:
        typer.echo("error: pass --head (a published head, e.g. llm2ner/ToMMeR-pythia-70m_L1_R64, or a local folder; "
                   "tommer-export --list shows them) or --layer N (the published Llama-3.2-1B head at layer N)",
                   err=True)
        raise typer.Exit(code=2)
    if quiet and verbose:
        typer.echo("error: --quiet and --verbose contradict each other: pass one of them", err=True)
        raise typer.Exit(code=2)
    try:
        from ..exporter.export import export_bundle
        from ..exporter.spec import ExportOptions
    except ModuleNotFoundError as exc:
        typer.echo(f"error: tommer-export needs the export extra ({exc.name} is missing): "
                   "pip install 'tommer[export]'", err=True)
        raise typer.Exit(code=2) from None

    from .hub import default_head_id

    if head is None:  # --layer N alone: the Llama-3.2-1B head at that layer, on its backbone
        head, backbone = default_head_id(layer), backbone or DEFAULT_HEAD_BACKBONE
    out = output or Path(default_output(backbone, layer, dtype.value, quantize.value if quantize else None, head))
    options = ExportOptions(
        backbone=backbone, head=head, layer=layer, output=str(out),
        dtype=dtype.value, quantize=quantize.value if quantize else None, target=target.value,
        max_span_tokens=max_span_tokens,
        revision=revision, head_revision=head_revision, token=token, overwrite=overwrite,
        allow_head_mismatch=allow_head_mismatch, quiet=not verbose,  # quiet: the libraries
    )
    start = time.perf_counter()

    def step(message: str) -> None:
        if not quiet:
            typer.echo(f"[{time.perf_counter() - start:7.1f}s] {message}", err=True)

    try:
        manifest = export_bundle(options, step=step)
    except TommerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    except Exception as exc:
        from ..runtime.execution.session import describe_error, is_onnxruntime_error

        if not is_onnxruntime_error(exc):
            raise
        import onnxruntime

        typer.echo(f"error: onnxruntime {onnxruntime.__version__} failed on the exported graph ({describe_error(exc)}): "
                   "try the newest onnxruntime, or --target tensorrt for standard operators; if it persists, it is "
                   "a tommer-export bug: please report it with this message", err=True)
        raise typer.Exit(code=2) from None
    report = manifest.validation
    size = sum(p.stat().st_size for p in out.iterdir())
    typer.echo(
        f"wrote {out} ({size / 1e6:.1f} MB, {manifest.dtype}{'/' + manifest.quantization if manifest.quantization else ''}, "
        f"band {manifest.band_width}) in {time.perf_counter() - start:.1f}s; validation: max abs error "
        f"{report['max_abs_error']:.2e}, span exact-match {report['exact_match_rate']:.3f}, DICE {report['dice']:.3f} "
        f"over {report['texts']} texts"
    )
    if verbose:
        typer.echo(json.dumps({"files": manifest.files}, indent=2), err=True)


def main() -> None:
    app(prog_name="tommer-export")


if __name__ == "__main__":
    sys.exit(main())
