"""Load a ToMMeR span head in either of llm2ner's checkpoint layouts.

A head is a folder holding one of:

- ``experimaestro.json`` + ``model.safetensors``: the layout llm2ner publishes today. The
  JSON file is a list of experimaestro objects; the weights are read with ``safetensors``.
- ``definition.json`` + ``parameters`` (legacy): ``{"objects": [...]}`` and a torch zip
  archive of the state dict, read with ``torch.load(weights_only=True)``.

Nothing is ever unpickled. The configuration is always read from the file (the object of
type ``ToMMeR``): the class defaults of the reference code differ from the published checkpoints.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..runtime.bundle import HeadConfig
from ..runtime.errors import ExportError, collect_and_raise
from .head_config import _is_tommer, _read_objects, read_head_fields
from .hub import (
    CARD_REPO,
    HEAD_OWNER,
    LOGIN_HINT,
    HubUnreachable,
    RepoNotFound,
    canonical_head_id,
    default_head_id,
    no_head_error,
    parse_head_name,
    published_layers,
    resolve_snapshot,
)

if TYPE_CHECKING:
    import torch

XPM_FILE, SAFETENSORS_FILE = "experimaestro.json", "model.safetensors"
DEFINITION_FILE, PARAMETERS_FILE = "definition.json", "parameters"
LAYOUTS = ((XPM_FILE, SAFETENSORS_FILE), (DEFINITION_FILE, PARAMETERS_FILE))  # preferred first
HUB_PATTERNS = [XPM_FILE, "*.safetensors", DEFINITION_FILE, PARAMETERS_FILE]
EXPECTED_KEYS = ("W_Q", "W_K", "classifier.fc.weight", "classifier.fc.bias", "cl_w")
SUPPORTED_NORMALIZATIONS = ("",)


@dataclass(frozen=True)
class Head:
    """A loaded head: configuration, fp32 tensors and where it came from."""

    config: HeadConfig
    w_q: torch.Tensor  # (d, r)
    w_k: torch.Tensor  # (d, r)
    w_fc: torch.Tensor  # (1, d)
    b_fc: torch.Tensor  # (1,)
    cl_w: torch.Tensor  # (5,)
    source: str  # the Hub repo id it resolved to (``llm2ner/...``), or the folder's absolute path
    revision: str | None = None  # the snapshot's commit hash when it came from the Hub
    layout: str = DEFINITION_FILE  # the configuration file read: experimaestro.json or definition.json
    mask_bos_from_tokenizer: bool = False  # the checkpoint says mask_bos: null (see ``for_tokenizer``)

    @property
    def hidden_size(self) -> int:
        return int(self.w_q.shape[0])

    @property
    def n_parameters(self) -> int:
        return sum(int(t.numel()) for t in (self.w_q, self.w_k, self.w_fc, self.b_fc, self.cl_w))

    def for_tokenizer(self, has_bos: bool) -> Head:
        """Settle ``mask_bos: null``, as the reference does: true when the backbone's tokenizer has a BOS."""
        if not self.mask_bos_from_tokenizer:
            return self
        return dataclasses.replace(self, config=dataclasses.replace(self.config, mask_bos=bool(has_bos)),
                                   mask_bos_from_tokenizer=False)


def read_head_config(definition: Path) -> HeadConfig:
    """Parse the ``ToMMeR`` object of either configuration file into the manifest's ``HeadConfig``.

    ``mask_bos`` absent (every published head so far): true, as the reference's class sets it.
    ``null``: provisionally true; ``Head.for_tokenizer`` settles it against the backbone's tokenizer.
    """
    fields = read_head_fields(definition)
    mask_bos = fields.get("mask_bos", True)
    if mask_bos is not None and not isinstance(mask_bos, bool):
        raise ExportError(f"{definition}: mask_bos must be true, false or null, found {mask_bos!r}")
    config = HeadConfig(
        llm_name=str(fields["llm_name"]),
        layer=int(fields["layer"]),
        rank=int(fields["rank"]),
        causal=bool(fields.get("causal_mask", True)),
        sliding_window=int(fields.get("sliding_window", 0)),
        use_cosine=bool(fields.get("use_cosine", False)),
        normalize_scores=str(fields.get("normalize_scores", "") or ""),
        mask_bos=True if mask_bos is None else mask_bos,
    )
    if config.normalize_scores not in SUPPORTED_NORMALIZATIONS:
        raise ExportError(
            f"{definition}: normalize_scores={config.normalize_scores!r} is not supported "
            f"(supported: {SUPPORTED_NORMALIZATIONS}); no published checkpoint uses it"
        )
    if not config.causal and config.sliding_window <= 0:
        raise ExportError(
            f"{definition}: a non-causal head without a sliding window reads the whole row of "
            "the score matrix and cannot be computed exactly in a band; not supported"
        )
    return config


def _mask_bos_is_null(definition: Path) -> bool:
    fields = read_head_fields(definition)
    return "mask_bos" in fields and fields["mask_bos"] is None


def check_state(state: dict[str, Any], config: HeadConfig, path: Path) -> dict[str, torch.Tensor]:
    """Every expected tensor, no other, each of the head's shape; fp32 copies. Lists every problem at once."""
    import torch

    problems = [f"missing tensor {k!r}" for k in EXPECTED_KEYS if k not in state]
    problems += [f"unexpected tensor {k!r}" for k in sorted(state) if k not in EXPECTED_KEYS]
    problems += [f"{k!r} is a {type(v).__name__}, not a tensor" for k, v in state.items()
                 if k in EXPECTED_KEYS and not isinstance(v, torch.Tensor)]
    if "W_Q" in state and isinstance(state["W_Q"], torch.Tensor) and state["W_Q"].dim() == 2:
        d = int(state["W_Q"].shape[0])
        expected = {"W_Q": (d, config.rank), "W_K": (d, config.rank), "classifier.fc.weight": (1, d),
                    "classifier.fc.bias": (1,), "cl_w": (1, 5, 1, 1)}
        problems += [f"{k}: expected shape {s}, found {tuple(state[k].shape)}" for k, s in expected.items()
                     if isinstance(state.get(k), torch.Tensor) and tuple(state[k].shape) != s]
    elif "W_Q" in state:
        problems.append(f"W_Q: expected shape (hidden size, {config.rank}), found "
                        f"{tuple(getattr(state['W_Q'], 'shape', ()))}")
    collect_and_raise(problems, ExportError, f"{path}: not a ToMMeR head of rank {config.rank}")
    return {k: state[k].detach().to(torch.float32) for k in EXPECTED_KEYS}


def load_parameters(path: Path, config: HeadConfig) -> dict[str, torch.Tensor]:
    """Legacy ``parameters``: the state dict loaded safely (``weights_only=True``, on the CPU), then checked."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a bad archive
        raise ExportError(f"{path}: cannot load the head parameters safely ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict):
        raise ExportError(f"{path}: expected a state dict, found {type(state).__name__}")
    return check_state(state, config, path)


def load_safetensors(path: Path, config: HeadConfig) -> dict[str, torch.Tensor]:
    """``model.safetensors``: read with ``safetensors`` (no pickle at all), then checked."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ExportError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from exc
    return check_state(state, config, path)


def weights_file(folder: Path, config_file: str) -> Path:
    """The weights of a layout: for experimaestro.json, the file its loader object points to (a bare
    ``.safetensors`` name in the folder; ``model.safetensors`` when it names none)."""
    if config_file == DEFINITION_FILE:
        return folder / PARAMETERS_FILE
    names = [f["path"]["value"] for o in _read_objects(folder / XPM_FILE) if isinstance(o, dict) and not _is_tommer(o)
             for f in [o.get("fields") or {}] if isinstance(f.get("path"), dict) and "value" in f["path"]]
    name = names[0] if names else SAFETENSORS_FILE
    if Path(name).name != name or not name.endswith(".safetensors"):
        raise ExportError(f"{folder / XPM_FILE}: its weights file {name!r} is not a .safetensors file in the "
                          "head's folder (tommer reads no other weights in this layout)")
    return folder / name


def find_layout(folder: Path, head: str) -> tuple[Path, Path]:
    """The configuration and weights files of the folder's layout (the current one when both are present)."""
    for config_file, _ in LAYOUTS:
        if (folder / config_file).is_file():
            weights = weights_file(folder, config_file)
            if not weights.is_file():
                raise ExportError(f"head {head}: {folder} has {config_file} but not {weights.name}, its weights")
            return folder / config_file, weights
    layouts = " or ".join(f"{c} + {w}" for c, w in LAYOUTS)
    present = sorted(p.name for p in folder.iterdir())[:12] if folder.is_dir() else []
    raise ExportError(f"head {head}: {folder} holds no llm2ner head: expected {layouts}; found "
                      f"{present or 'nothing'}")


def _resolve_head(ref: str, revision: str | None, token: str | bool | None):
    """Resolve a ``--head`` to a snapshot (see ``hub.canonical_head_id`` for the id forms)."""
    repo = canonical_head_id(ref)
    try:
        return resolve_snapshot(repo, revision=revision, token=token, allow_patterns=HUB_PATTERNS, what="head")
    except (RepoNotFound, HubUnreachable) as exc:
        name = parse_head_name(repo)
        published = name is not None and repo.startswith(f"{HEAD_OWNER}/")
        if isinstance(exc, HubUnreachable):
            # offline: a head tommer's table does not list either is reported with the layers it does list
            if published and name.layer not in published_layers(name.backbone, name.rank)[0]:
                raise no_head_error(repo, name) from exc
            raise
        if published:
            raise no_head_error(repo, name) from exc
        raise ExportError(f"head {ref!r}: the Hub has no repository {repo} (or it is private: {LOGIN_HINT}); "
                          f"pass a published head ({HEAD_OWNER}/ToMMeR-<backbone>_L<layer>_R<rank>, e.g. "
                          f"{default_head_id(6)}; `tommer-export --list` shows them) or a local folder "
                          f"holding {' or '.join(f'{c} + {w}' for c, w in LAYOUTS)}") from exc


def load_head(head: str | os.PathLike[str], revision: str | None = None, token: str | bool | None = None) -> Head:
    """Load a head from a local folder or a Hub id.

    Hub ids: ``llm2ner/ToMMeR-<backbone>_L<layer>_R<rank>``, a bare ``ToMMeR-...`` name (owner
    llm2ner), the model card's ``VictorMorand/ToMMeR/<name>`` (an alias of ``llm2ner/<name>``), or
    any ``owner/name[/subfolder]``. Downloads go through huggingface_hub, so ``HF_HUB_OFFLINE``,
    the cache, revisions and tokens behave as everywhere else in the ecosystem.
    """
    snapshot = _resolve_head(str(head), revision, token)
    definition, weights = find_layout(snapshot.folder, str(head))
    config = read_head_config(definition)
    load = load_safetensors if weights.suffix == ".safetensors" else load_parameters
    state = load(weights, config)
    return Head(
        config=config,
        w_q=state["W_Q"], w_k=state["W_K"],
        w_fc=state["classifier.fc.weight"], b_fc=state["classifier.fc.bias"],
        cl_w=state["cl_w"].reshape(5),
        source=str(snapshot.folder.resolve()) if snapshot.repo_id is None else canonical_head_id(str(head)),
        revision=snapshot.revision or (revision if snapshot.repo_id else None),
        layout=definition.name, mask_bos_from_tokenizer=_mask_bos_is_null(definition),
    )


def head_defaults(head: Head, backbone: str | None, layer: int | None) -> dict[str, Any]:
    """``--backbone`` and ``--layer`` where the user left them out: the head's own.

    The backbone is the head's ``llm_name`` through the alias table (``phi-2`` -> ``microsoft/phi-2``);
    the layer is the one the head was trained on. A ``--layer`` that disagrees is an error.
    """
    from .hub import resolve_backbone_name

    if layer is not None and layer != head.config.layer:
        raise ExportError(f"head {head.source} was trained on layer {head.config.layer}, but --layer is {layer}: "
                          f"drop --layer (the head records its layer) or pass --layer {head.config.layer}, or a "
                          f"head trained on layer {layer}")
    return {"backbone": backbone or resolve_backbone_name(head.config.llm_name), "layer": head.config.layer}


__all__ = ["CARD_REPO", "Head", "head_defaults", "load_head", "read_head_config", "read_head_fields", "find_layout"]
