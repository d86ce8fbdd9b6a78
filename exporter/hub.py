"""Resolve a model reference (local folder or Hugging Face Hub id) to a local folder."""

from __future__ import annotations

from pathlib import Path

from ..runtime.errors import ExportError

LOGIN_HINT = "log in with `hf auth login` or pass --token (or set HF_TOKEN)"


class RepoNotFound(ExportError):
    """The Hub says the repository does not exist (or is private to someone else)."""


def is_local(ref: str) -> bool:
    return Path(ref).expanduser().exists()


def resolve_repo_folder(ref: str, *, revision: str | None, token: str | bool | None,
                        allow_patterns: list[str] | None, what: str) -> Path:
    """Return a local folder for ``ref``: the folder itself, or a Hub snapshot.

    ``owner/name/sub/folder`` names a subfolder of the Hub repo ``owner/name``.
    Raises ExportError with an actionable message for gated, missing or offline repos.
    """
    if is_local(ref):
        return Path(ref).expanduser()
    parts = ref.strip("/").split("/")
    if len(parts) < 2:
        raise ExportError(f"{what} {ref!r} is neither an existing folder nor a Hub id of the form owner/name")
    repo_id, sub = "/".join(parts[:2]), "/".join(parts[2:])
    patterns = [f"{sub}/{p}" if sub else p for p in allow_patterns] if allow_patterns else None
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (GatedRepoError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)
    try:
        root = snapshot_download(repo_id, revision=revision, token=token, allow_patterns=patterns)
    except GatedRepoError as exc:
        raise ExportError(f"{what} {repo_id} is gated: accept its licence on the Hub, then {LOGIN_HINT}") from exc
    except RepositoryNotFoundError as exc:
        raise RepoNotFound(f"{what} {repo_id} was not found on the Hub (or it is private: {LOGIN_HINT})") from exc
    except RevisionNotFoundError as exc:
        raise ExportError(f"{what} {repo_id}: revision {revision!r} does not exist") from exc
    except LocalEntryNotFoundError as exc:
        raise ExportError(f"{what} {repo_id} is not in the local Hub cache and downloads are off or unreachable "
                          f"(HF_HUB_OFFLINE is honoured): download it once online, or pass a local folder") from exc
    return Path(root) / sub if sub else Path(root)
