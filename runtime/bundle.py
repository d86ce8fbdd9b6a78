"""The bundle manifest: the only contract between the exporter and the runtime.

A bundle is a folder holding ``model.onnx`` (plus ``model.onnx.data`` when the
weights are stored outside the graph), ``tokenizer.json`` and ``tommer.json``,
the manifest below. The exporter writes it; the runtime reads and checks it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BundleError, collect_and_raise

FORMAT_VERSION = 1
MANIFEST_NAME = "tommer.json"
MODEL_NAME = "model.onnx"
TOKENIZER_NAME = "tokenizer.json"
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "span_probs"
HEAD_DOMAIN = "tommer"


@dataclass(frozen=True)
class HeadConfig:
    """The span head as trained: the fields of the checkpoint's ``ToMMeR`` object (never defaulted
    from the reference code's class, whose defaults differ from the published checkpoints)."""

    llm_name: str
    layer: int
    rank: int
    causal: bool
    sliding_window: int
    use_cosine: bool
    normalize_scores: str = ""
    mask_bos: bool = True  # not stored in checkpoints: always true in the reference

    @property
    def scale(self) -> float:
        return 1.0 if self.use_cosine else 1.0 / self.rank**0.5


@dataclass(frozen=True)
class HeadInfo(HeadConfig):
    """The head in the manifest: its trained configuration, where it came from, and whether
    it was exported onto a backbone other than the one it names (``--allow-head-mismatch``)."""

    source: str = ""
    n_parameters: int = 0
    revision: str | None = None
    backbone_mismatch: str | None = None  # why the head's llm_name did not match, when allowed

    @property
    def config(self) -> HeadConfig:
        return HeadConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(HeadConfig)})


@dataclass(frozen=True)
class BackboneInfo:
    """The layer-truncated backbone inside the graph."""

    source: str
    architecture: str
    hidden_size: int
    num_layers_total: int
    num_layers_kept: int
    vocab_size: int
    max_positions: int
    revision: str | None = None


@dataclass(frozen=True)
class TokenizerInfo:
    """What the runtime needs to feed the graph exactly as the exporter validated it.

    The runtime tokenizes without special tokens and prepends ``bos_token_id``
    to every text (and to every window of a long text); position 0 never starts a span.
    ``bos_token`` is that token, ``bos_rule`` where it comes from: ``bos_token`` (the backbone
    tokenizer's BOS, which the reference's ``add_bos_token=True`` loader prepends, GPT-NeoX and
    Phi included) or ``eos_token`` (a tokenizer with no BOS: its EOS opens the text). Both are
    None in bundles written before they were recorded (the id was chosen by the same rule).
    """

    file: str
    bos_token_id: int
    pad_token_id: int
    max_tokens: int
    bos_token: str | None = None
    bos_rule: str | None = None
    # the text template, as the backbone's tokenizer wraps a text by default (encoders: [CLS] x [SEP],
    # <s> x </s>; bos_rule "template"): ids before and after every text and every window. None in
    # decoder bundles and in bundles written before the field: before = [bos_token_id], after = [].
    # The runtime feeds exactly one opening token (bos_token_id = before[0]); the closing tokens are
    # real inputs (keys of the head, f5's next token at the last text token), never inside a mention.
    template_before: list[int] | None = None
    template_after: list[int] | None = None

    @property
    def before_ids(self) -> tuple[int, ...]:
        return tuple(self.template_before) if self.template_before is not None else (self.bos_token_id,)

    @property
    def after_ids(self) -> tuple[int, ...]:
        return tuple(self.template_after or ())


GRAPH_TARGETS = ("onnxruntime", "tensorrt")


@dataclass(frozen=True)
class GraphInfo:
    """How the graph was built: for which runtime, which fused kernels it holds, TensorRT's verdict.

    ``target`` ``onnxruntime``: opset-23 fused operators (Attention, RMSNormalization,
    RotaryEmbedding) for the CPU and CUDA providers. ``tensorrt``: standard operators of
    the opsets TensorRT's parser reads, head inlined, checked against its operator table
    (``tensorrt``: the check's report; TensorRT runs only bundles whose check passed).
    ``rewrites``: how many times each export-time graph rewrite applied (onnxscript's
    onnxruntime fusions, ``attention_3d``: attention on the (batch, seq, heads * dim) layout).
    """

    target: str = "onnxruntime"
    fused_ops: dict[str, int] = field(default_factory=dict)
    rewrites: dict[str, int] = field(default_factory=dict)
    tensorrt: dict[str, Any] = field(default_factory=dict)

    @property
    def tensorrt_ready(self) -> bool:
        return bool(self.tensorrt.get("supported"))


@dataclass(frozen=True)
class Manifest:
    """``tommer.json``: everything needed to run, check and reproduce a bundle."""

    format_version: int
    tommer_version: str
    backbone: BackboneInfo
    head: HeadInfo
    tokenizer: TokenizerInfo
    band_width: int
    dtype: str
    quantization: str | None
    opset: int
    input_names: tuple[str, ...] = INPUT_NAMES
    output_name: str = OUTPUT_NAME
    files: dict[str, str] = field(default_factory=dict)
    library_versions: dict[str, str] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    graph: GraphInfo = field(default_factory=GraphInfo)

    @property
    def max_span_tokens(self) -> int:
        """Longest span the graph scores (the band width, in tokens)."""
        return self.band_width

    @property
    def bundle_id(self) -> str:
        """A short identity of the bundle: the sha256 prefix of its graph file."""
        return self.files.get(MODEL_NAME, "unknown")[:16]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        data = dict(data)
        data["backbone"] = BackboneInfo(**data["backbone"])
        data["head"] = HeadInfo(**data["head"])
        data["tokenizer"] = TokenizerInfo(**data["tokenizer"])
        data["input_names"] = tuple(data.get("input_names", INPUT_NAMES))
        data["graph"] = GraphInfo(**data.get("graph", {}))
        return cls(**data)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def hash_files(folder: Path) -> dict[str, str]:
    """sha256 of every file of a bundle folder except the manifest itself."""
    return {
        p.name: sha256_file(p)
        for p in sorted(Path(folder).iterdir())
        if p.is_file() and p.name != MANIFEST_NAME
    }


def read_manifest(folder: str | os.PathLike[str], verify: bool = True) -> Manifest:
    """Load ``tommer.json`` from a bundle folder and check it.

    Args:
        folder: the bundle folder.
        verify: also recompute the sha256 of every file listed in the manifest.

    Raises:
        BundleError: listing every problem found (missing files, hash
            mismatches, unknown format version, unreadable manifest).
    """
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not folder.is_dir():
        raise BundleError(f"bundle folder {folder} does not exist (expected a folder made by tommer-export)")
    if not path.is_file():
        raise BundleError(f"{folder} is not a tommer bundle: {MANIFEST_NAME} is missing (make one with tommer-export)")
    try:
        data = json.loads(path.read_text())
        manifest = Manifest.from_dict(data)
    except (ValueError, TypeError, KeyError) as exc:
        raise BundleError(f"{path} is not a valid tommer manifest: {exc}") from exc
    if manifest.format_version != FORMAT_VERSION:
        raise BundleError(
            f"{path}: bundle format version {manifest.format_version}, this tommer reads version "
            f"{FORMAT_VERSION}: re-export the bundle with this version of tommer-export"
        )
    problems: list[str] = []
    for name in (MODEL_NAME, manifest.tokenizer.file):
        if name not in manifest.files:
            problems.append(f"{name} is not listed in the manifest's files")
    for name, expected in manifest.files.items():
        file = folder / name
        if not file.is_file():
            problems.append(f"{name} is missing")
        elif verify and sha256_file(file) != expected:
            problems.append(f"{name}: sha256 does not match the manifest (file changed or corrupt)")
    collect_and_raise(problems, BundleError, f"bundle {folder} failed its checks")
    return manifest


@contextmanager
def atomic_folder(target: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; rename it to ``target`` on success.

    On any exception the temporary folder is removed and ``target`` is untouched,
    so a crash never leaves a half-written bundle that looks whole.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise BundleError(f"output folder {target} already exists: pass --overwrite to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    umask = os.umask(0)  # mkdtemp makes 0700; a bundle gets the mode of any folder the user makes
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


def write_manifest(folder: Path, manifest: Manifest) -> Manifest:
    """Hash the folder's files into the manifest and write ``tommer.json``."""
    manifest = dataclasses.replace(manifest, files=hash_files(folder))
    (folder / MANIFEST_NAME).write_text(manifest.to_json() + "\n")
    return manifest
