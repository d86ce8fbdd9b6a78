"""The Hugging Face Hub side of models: references to local folders, head ids, the published heads.

- ``resolve_snapshot``: a local folder or a Hub id (``owner/name[/subfolder]``) to a local
  folder, with the repository and the commit it came from.
- Head ids: ``llm2ner/ToMMeR-<backbone>_L<layer>_R<rank>`` (where llm2ner publishes its
  heads), a bare ``ToMMeR-...`` name (the same, owner implied) and the model card's
  ``VictorMorand/ToMMeR/<name>`` (a placeholder of the reference's card template, an alias
  of ``llm2ner/<name>``).
- The published heads (``tommer-export --list``): from the Hub listing, or offline from the
  table in ``data/published_heads.json``.
- Backbone aliases (``phi-2`` -> ``microsoft/phi-2``): one table, ``data/backbone_aliases.json``.

Nothing here imports torch: ``--list`` and the id forms work in the runtime-only install.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..runtime.errors import ExportError

LOGIN_HINT = "log in with `hf auth login` or pass --token (or set HF_TOKEN)"
HEAD_OWNER = "llm2ner"
CARD_REPO = "VictorMorand/ToMMeR"  # the model card's form: repo/subfolder (a template placeholder)
DEFAULT_HEAD_BACKBONE = "Llama-3.2-1B"  # --layer N alone: the Llama-3.2-1B head at layer N
DEFAULT_HEAD_RANK = 64
HEAD_NAME = re.compile(r"^ToMMeR-(?P<backbone>.+)_L(?P<layer>\d+)_R(?P<rank>\d+)$")
COMMIT = re.compile(r"^[0-9a-f]{40}$")
DATA = Path(__file__).resolve().parent / "data"
PUBLISHED_TABLE = DATA / "published_heads.json"
ALIAS_TABLE = DATA / "backbone_aliases.json"
HEAD_CONFIG_FILES = ("experimaestro.json", "definition.json")  # the current layout first, then the legacy one


class RepoNotFound(ExportError):
    """The Hub says the repository does not exist (or is private to someone else)."""


class HubUnreachable(ExportError):
    """The Hub cannot be asked: HF_HUB_OFFLINE is set or the connection failed."""


def is_local(ref: str) -> bool:
    return Path(ref).expanduser().exists()


@dataclass(frozen=True)
class Snapshot:
    """A model reference resolved to a local folder."""

    folder: Path
    repo_id: str | None = None  # None: a local folder
    revision: str | None = None  # the snapshot's commit hash, when it came from the Hub


def resolve_snapshot(ref: str, *, revision: str | None, token: str | bool | None,
                     allow_patterns: list[str] | None, what: str) -> Snapshot:
    """Return a local folder for ``ref``: the folder itself, or a Hub snapshot.

    ``owner/name/sub/folder`` names a subfolder of the Hub repo ``owner/name``.
    Raises ExportError with an actionable message for gated, missing or offline repos
    (``RepoNotFound`` for a repository the Hub does not have).
    """
    if is_local(ref):
        return Snapshot(Path(ref).expanduser())
    parts = ref.strip("/").split("/")
    if len(parts) < 2 or _looks_like_path(ref):
        raise ExportError(f"{what} {ref!r} is neither an existing folder nor a Hub id of the form owner/name")
    repo_id, sub = "/".join(parts[:2]), "/".join(parts[2:])
    patterns = [f"{sub}/{p}" if sub else p for p in allow_patterns] if allow_patterns else None
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    try:
        root = Path(snapshot_download(repo_id, revision=revision, token=token, allow_patterns=patterns))
    except HFValidationError as exc:
        raise ExportError(f"{what} {ref!r} is neither an existing folder nor a valid Hub id ({exc})") from exc
    except GatedRepoError as exc:
        raise ExportError(f"{what} {repo_id} is gated: accept its licence on the Hub, then {LOGIN_HINT}") from exc
    except RepositoryNotFoundError as exc:
        raise RepoNotFound(f"{what} {repo_id} was not found on the Hub (or it is private: {LOGIN_HINT})") from exc
    except RevisionNotFoundError as exc:
        raise ExportError(f"{what} {repo_id}: revision {revision!r} does not exist") from exc
    except LocalEntryNotFoundError as exc:
        raise HubUnreachable(f"{what} {repo_id} is not in the local Hub cache and downloads are off or unreachable "
                             f"(HF_HUB_OFFLINE is honoured): download it once online, or pass a local folder") from exc
    commit = root.name if COMMIT.match(root.name) else None  # snapshots/<commit> in the Hub cache
    return Snapshot(root / sub if sub else root, repo_id=repo_id, revision=commit)


def _looks_like_path(ref: str) -> bool:
    return ref.startswith((".", "/", "~")) or "\\" in ref


def resolve_repo_folder(ref: str, *, revision: str | None, token: str | bool | None,
                        allow_patterns: list[str] | None, what: str) -> Path:
    """``resolve_snapshot``'s folder alone."""
    return resolve_snapshot(ref, revision=revision, token=token, allow_patterns=allow_patterns, what=what).folder


# ---- head ids -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeadName:
    """What a published head's name says: ``ToMMeR-<backbone>_L<layer>_R<rank>``."""

    backbone: str  # the last part of the head's llm_name (``Llama-3.2-1B``, ``phi-2``)
    layer: int
    rank: int


def default_head_id(layer: int) -> str:
    """``--layer N`` alone: the published Llama-3.2-1B head at layer N."""
    return f"{HEAD_OWNER}/ToMMeR-{DEFAULT_HEAD_BACKBONE}_L{layer}_R{DEFAULT_HEAD_RANK}"


def canonical_head_id(ref: str) -> str:
    """The Hub id a ``--head`` names (a local folder is returned as given).

    ``ToMMeR-...`` -> ``llm2ner/ToMMeR-...``; ``VictorMorand/ToMMeR/<name>`` -> ``llm2ner/<name>``;
    ``owner/name`` and ``owner/repo/subfolder`` stay as they are.
    """
    if is_local(ref):
        return ref
    if _looks_like_path(ref):
        raise ExportError(f"--head {ref!r}: no such folder (a head folder holds experimaestro.json + "
                          "model.safetensors, or definition.json + parameters)")
    parts = ref.strip().strip("/").split("/")
    if len(parts) == 1 and HEAD_NAME.match(parts[0]):
        return f"{HEAD_OWNER}/{parts[0]}"
    if len(parts) == 3 and "/".join(parts[:2]).lower() == CARD_REPO.lower():
        return f"{HEAD_OWNER}/{parts[2]}"
    if len(parts) >= 2 and all(parts):
        return "/".join(parts)
    raise ExportError(f"--head {ref!r} is neither an existing folder nor a head id: expected a local folder, "
                      f"{HEAD_OWNER}/ToMMeR-<backbone>_L<layer>_R<rank> (e.g. {default_head_id(6)}), a bare "
                      f"ToMMeR-<backbone>_L<layer>_R<rank> name, {CARD_REPO}/<name> or owner/name[/subfolder]")


def parse_head_name(ref: str) -> HeadName | None:
    """The backbone, layer and rank that a head id's last part names, if it follows llm2ner's naming."""
    match = HEAD_NAME.match(ref.rstrip("/").rsplit("/", 1)[-1])
    if not match:
        return None
    return HeadName(match["backbone"], int(match["layer"]), int(match["rank"]))


# ---- backbone aliases -----------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def backbone_aliases() -> dict[str, str]:
    """Alias (lower case) -> Hub id, from ``data/backbone_aliases.json``."""
    table = json.loads(ALIAS_TABLE.read_text())["aliases"]
    return {alias.lower(): repo for alias, repo in table.items()}


def alias_target(name: str) -> str | None:
    """The Hub id an alias names (case-insensitive, as TransformerLens matches), or None."""
    return backbone_aliases().get(name.strip().lower())


def resolve_backbone_name(llm_name: str) -> str:
    """The backbone a head names by its ``llm_name``: an alias's Hub id, or the Hub id itself.

    Raises:
        ExportError: an alias tommer does not know that is no Hub id either.
    """
    target = alias_target(llm_name)
    if target:
        return target
    parts = llm_name.strip().strip("/").split("/")
    if len(parts) == 2 and all(parts):
        return "/".join(parts)
    raise ExportError(f"the head names its backbone {llm_name!r}, an alias tommer's table does not know "
                      f"({ALIAS_TABLE.name}: {', '.join(sorted(json.loads(ALIAS_TABLE.read_text())['aliases']))}) "
                      "and not a Hub id of the form owner/name: pass --backbone with the Hub id or a local folder "
                      "of that model")


# ---- the published heads --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PublishedHead:
    """One row of ``tommer-export --list``."""

    id: str
    llm_name: str
    backbone: str | None  # the llm_name resolved to a Hub id (None: an alias tommer does not know)
    layer: int
    rank: int
    n_parameters: int | None
    gated_backbone: bool | None  # None: unknown


@lru_cache(maxsize=1)
def _table() -> dict[str, Any]:
    return json.loads(PUBLISHED_TABLE.read_text())


def offline_published_heads() -> list[PublishedHead]:
    """The published heads as tommer's table records them (the offline fallback of the listing)."""
    rows = []
    for h in _table()["heads"]:
        rows.append(PublishedHead(id=h["id"], llm_name=h["llm_name"], backbone=_backbone_or_none(h["llm_name"]),
                                  layer=int(h["layer"]), rank=int(h["rank"]), n_parameters=h.get("n_parameters"),
                                  gated_backbone=h.get("gated_backbone")))
    return rows


def _backbone_or_none(llm_name: str) -> str | None:
    try:
        return resolve_backbone_name(llm_name)
    except ExportError:
        return None


def _connection_errors() -> tuple[type[BaseException], ...]:
    """What a Hub call raises when the Hub cannot be reached (offline mode is a ConnectionError)."""
    errors: list[type[BaseException]] = [OSError]
    try:
        import httpx

        errors.append(httpx.TransportError)
    except ImportError:  # huggingface_hub < 1.0 goes through requests, whose errors are OSErrors
        pass
    return tuple(errors)


def _head_config_file(model: Any) -> str:
    names = {s.rfilename for s in (getattr(model, "siblings", None) or [])}
    for name in HEAD_CONFIG_FILES:
        if name in names:
            return name
    return HEAD_CONFIG_FILES[0] if not names else ""


def _hub_row(api: Any, model: Any, gated: dict[str, bool | None]) -> PublishedHead | None:
    """A listed repository as a row (None when it is no ToMMeR head)."""
    from .head_config import read_head_fields  # pure JSON parsing, no torch

    config_name = _head_config_file(model)
    if not config_name:
        return None
    path = Path(api.hf_hub_download(repo_id=model.id, filename=config_name, revision=getattr(model, "sha", None)))
    fields = read_head_fields(path)
    llm_name, layer, rank = str(fields["llm_name"]), int(fields["layer"]), int(fields["rank"])
    backbone = _backbone_or_none(llm_name)
    if backbone is not None and backbone not in gated:
        gated[backbone] = _is_gated(api, backbone)
    safetensors = getattr(model, "safetensors", None)
    n_parameters = getattr(safetensors, "total", None) or _table_parameters(model.id)
    return PublishedHead(id=model.id, llm_name=llm_name, backbone=backbone, layer=layer, rank=rank,
                         n_parameters=n_parameters, gated_backbone=gated.get(backbone) if backbone else None)


def _table_parameters(repo_id: str) -> int | None:
    return next((h.get("n_parameters") for h in _table()["heads"] if h["id"] == repo_id), None)


def _is_gated(api: Any, backbone: str) -> bool | None:
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return bool(api.model_info(backbone, expand=["gated"]).gated)
    except (HfHubHTTPError, *_connection_errors()):
        return next((h.get("gated_backbone") for h in _table()["heads"]
                     if _backbone_or_none(h["llm_name"]) == backbone), None)


def hub_published_heads(api: Any = None) -> list[PublishedHead]:
    """The heads llm2ner publishes, from the Hub: ``HfApi.list_models(author="llm2ner")`` and each repo's config.

    Raises:
        HubUnreachable: HF_HUB_OFFLINE is set, or the Hub could not be reached.
    """
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        raise HubUnreachable("HF_HUB_OFFLINE is set: the Hub listing is not asked")
    api = api or HfApi()
    gated: dict[str, bool | None] = {}
    try:
        models = list(api.list_models(author=HEAD_OWNER, expand=["sha", "siblings", "safetensors"]))
        rows = [_hub_row(api, m, gated) for m in models if parse_head_name(m.id)]
    except _connection_errors() as exc:
        raise HubUnreachable(f"the Hub could not be reached ({type(exc).__name__}: {exc})") from exc
    return sorted((r for r in rows if r is not None), key=lambda r: (r.backbone or r.llm_name, r.layer, r.rank))


def published_heads(api: Any = None) -> tuple[list[PublishedHead], str | None]:
    """The Hub listing, or tommer's table when the Hub cannot be asked; the second item says why (None: the Hub)."""
    try:
        return hub_published_heads(api), None
    except HubUnreachable as exc:
        return offline_published_heads(), (f"{exc}; showing tommer's table of published heads instead "
                                           f"(exporter/data/{PUBLISHED_TABLE.name}, may be out of date)")


def _source(offline: str | None) -> str:
    return "the Hub listing" if offline is None else f"offline: tommer's table exporter/data/{PUBLISHED_TABLE.name}"


def published_layers(backbone: str, rank: int | None = None, api: Any = None) -> tuple[list[int], str]:
    """Layers at which llm2ner publishes a head on ``backbone`` (a head name's backbone part), and the source."""
    heads, offline = published_heads(api)
    return _layers(heads, backbone, rank), _source(offline)


def _layers(heads: list[PublishedHead], backbone: str, rank: int | None) -> list[int]:
    names = [(parse_head_name(h.id), h) for h in heads]
    return sorted({h.layer for n, h in names if n and n.backbone.lower() == backbone.lower()
                   and (rank is None or h.rank == rank)})


def no_head_error(repo_id: str, name: HeadName, api: Any = None) -> ExportError:
    """The error for a head id that follows llm2ner's naming but does not exist: the layers that do."""
    heads, offline = published_heads(api)
    layers, source = _layers(heads, name.backbone, name.rank), _source(offline)
    if layers:
        listed = ", ".join(str(layer) for layer in layers)
        return ExportError(f"no published head {repo_id}: llm2ner publishes {name.backbone} heads of rank {name.rank} "
                           f"at layers {listed} (from {source}): pass --layer with one of them, or --head with "
                           "another head (tommer-export --list shows them all)")
    backbones = sorted({n.backbone for n in map(parse_head_name, (h.id for h in heads)) if n})
    return ExportError(f"no published head {repo_id}: llm2ner publishes no {name.backbone} head of rank {name.rank} "
                       f"(from {source}; backbones with heads: {', '.join(backbones)}): pass --head with a published "
                       "head (tommer-export --list) or a local folder")


def format_heads(rows: list[PublishedHead]) -> str:
    """The ``--list`` table."""
    header = ("id", "backbone", "layer", "rank", "parameters", "gated backbone")
    lines = [header] + [(r.id, r.backbone or f"{r.llm_name} (unknown alias)", str(r.layer), str(r.rank),
                         f"{r.n_parameters:,}" if r.n_parameters else "?",
                         {True: "yes", False: "no", None: "?"}[r.gated_backbone]) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)
