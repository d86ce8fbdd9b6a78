"""Load a ToMMeR span head in the llm2ner checkpoint format.

A head is a folder with ``definition.json`` (an experimaestro file whose object of
type ``ToMMeR`` holds the configuration) and ``parameters`` (a torch zip archive of
the state dict). The configuration is always read from the file: the class
defaults of the reference code differ from the published checkpoints.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..runtime.bundle import HeadConfig
from ..runtime.errors import ExportError
from .hub import LOGIN_HINT, RepoNotFound, is_local, resolve_repo_folder

DEFINITION_FILE = "definition.json"
PARAMETERS_FILE = "parameters"
DEFAULT_HEAD_REPO = "VictorMorand/ToMMeR/ToMMeR-Llama-3.2-1B_L{layer}_R64"  # the model card's form: repo/subfolder
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
    source: str
    revision: str | None = None

    @property
    def hidden_size(self) -> int:
        return int(self.w_q.shape[0])

    @property
    def n_parameters(self) -> int:
        return sum(int(t.numel()) for t in (self.w_q, self.w_k, self.w_fc, self.b_fc, self.cl_w))


def read_head_config(definition: Path) -> HeadConfig:
    """Parse the ``ToMMeR`` object of an experimaestro ``definition.json``."""
    try:
        objects = json.loads(definition.read_text())["objects"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ExportError(f"{definition}: not a readable llm2ner definition file ({exc})") from exc
    found = [o for o in objects if o.get("type") == "ToMMeR" or str(o.get("typename", "")).endswith(".ToMMeR")]
    if len(found) != 1:
        kinds = sorted({str(o.get("type")) for o in objects})
        raise ExportError(f"{definition}: expected exactly one object of type ToMMeR, found {len(found)} (types present: {kinds})")
    fields = found[0].get("fields", {})
    missing = [k for k in ("llm_name", "layer", "rank") if k not in fields]
    if missing:
        raise ExportError(f"{definition}: the ToMMeR object lacks {missing}")
    config = HeadConfig(
        llm_name=str(fields["llm_name"]),
        layer=int(fields["layer"]),
        rank=int(fields["rank"]),
        causal=bool(fields.get("causal_mask", True)),
        sliding_window=int(fields.get("sliding_window", 0)),
        use_cosine=bool(fields.get("use_cosine", False)),
        normalize_scores=str(fields.get("normalize_scores", "") or ""),
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


def load_parameters(path: Path, config: HeadConfig) -> dict[str, torch.Tensor]:
    """Load the state dict safely (``weights_only=True``, on the CPU) and check shapes."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a bad archive
        raise ExportError(f"{path}: cannot load the head parameters safely ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict):
        raise ExportError(f"{path}: expected a state dict, found {type(state).__name__}")
    problems = [f"missing tensor {k!r}" for k in EXPECTED_KEYS if k not in state]
    if not problems:
        d = state["W_Q"].shape[0]
        expected = {"W_Q": (d, config.rank), "W_K": (d, config.rank), "classifier.fc.weight": (1, d),
                    "classifier.fc.bias": (1,), "cl_w": (1, 5, 1, 1)}
        problems = [f"{k}: expected shape {s}, found {tuple(state[k].shape)}"
                    for k, s in expected.items() if tuple(state[k].shape) != s]
    if problems:
        raise ExportError(f"{path}: not a ToMMeR head of rank {config.rank}: " + "; ".join(problems))
    return {k: state[k].detach().to(torch.float32) for k in EXPECTED_KEYS}


def hub_forms(ref: str) -> list[str]:
    """The Hub forms a head id may take: as given, then ``owner/name`` <-> ``owner/ToMMeR/name``.

    The heads are published both as repositories of their own and as subfolders of
    ``owner/ToMMeR`` (the form the model card documents).
    """
    parts = ref.strip("/").split("/")
    if len(parts) == 2:
        return [ref, f"{parts[0]}/ToMMeR/{parts[1]}"]
    if len(parts) == 3 and parts[1] == "ToMMeR":
        return [ref, f"{parts[0]}/{parts[2]}"]
    return [ref]


def _resolve_head_folder(ref: str, revision: str | None, token: str | bool | None) -> Path:
    tried = []
    for form in ([ref] if is_local(ref) else hub_forms(ref)):
        try:
            return resolve_repo_folder(form, revision=revision, token=token,
                                       allow_patterns=[DEFINITION_FILE, PARAMETERS_FILE], what="head")
        except RepoNotFound:
            tried.append(form)
    raise ExportError(f"head {ref!r}: the Hub has no repository for any of the forms tried ({', '.join(tried)}), "
                      f"or they are private ({LOGIN_HINT}); pass --head owner/repo/subfolder (the model card's "
                      f"form, e.g. {DEFAULT_HEAD_REPO.format(layer=6)}) or a local folder holding "
                      f"{DEFINITION_FILE} and {PARAMETERS_FILE}")


def load_head(head: str | os.PathLike[str], revision: str | None = None, token: str | bool | None = None) -> Head:
    """Load a head from a local folder or a Hub repo id (``owner/name[/subfolder]``).

    Hub downloads go through huggingface_hub, so ``HF_HUB_OFFLINE``, the cache,
    revisions and tokens behave as everywhere else in the ecosystem.
    """
    folder = _resolve_head_folder(str(head), revision, token)
    definition, parameters = folder / DEFINITION_FILE, folder / PARAMETERS_FILE
    for f in (definition, parameters):
        if not f.is_file():
            raise ExportError(f"head {head}: {f.name} not found in {folder} (an llm2ner head has {DEFINITION_FILE} and {PARAMETERS_FILE})")
    config = read_head_config(definition)
    state = load_parameters(parameters, config)
    return Head(
        config=config,
        w_q=state["W_Q"], w_k=state["W_K"],
        w_fc=state["classifier.fc.weight"], b_fc=state["classifier.fc.bias"],
        cl_w=state["cl_w"].reshape(5),
        source=str(folder.resolve()) if is_local(str(head)) else str(head), revision=revision,
    )
