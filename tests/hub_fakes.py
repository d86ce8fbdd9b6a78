"""A Hugging Face Hub cache laid out as a download leaves it, and a faked ``HfApi``, for the Hub-side tests."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

COMMIT = "5f0c8e1d2b3a49687766554433221100ffeeddcc"


def cache_repo(cache: Path, repo_id: str, files_from: Path, commit: str = COMMIT) -> Path:
    """``models--<owner>--<name>/{blobs/<hash>, snapshots/<commit>/<file> -> ../../blobs/<hash>, refs/main}``.

    As huggingface_hub writes it: one blob per file content, named by its hash; the snapshot holds
    relative symlinks to the blobs; ``refs/main`` holds the commit. Returns the snapshot folder.
    """
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    blobs, snapshot = repo / "blobs", repo / "snapshots" / commit
    blobs.mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for f in sorted(files_from.rglob("*")):
        if not f.is_file():
            continue
        data = f.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        link = snapshot / f.relative_to(files_from)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("../" * (len(f.relative_to(files_from).parts) + 1)) / "blobs" / digest)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def offline_hub(monkeypatch, cache: Path) -> None:
    """``HF_HUB_OFFLINE=1`` and ``HF_HUB_CACHE=cache``, for this process (huggingface_hub reads them at import)."""
    import huggingface_hub.constants as constants

    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def head_config(llm_name: str, layer: int, rank: int = 64, legacy: bool = False) -> str:
    tommer = {"id": 1, "module": "llm2ner.models.tommer", "type": "ToMMeR", "typename": "llm2ner.models.tommer.ToMMeR",
              "fields": {"llm_name": llm_name, "layer": layer, "rank": rank, "causal_mask": True,
                         "sliding_window": 25, "use_cosine": True, "normalize_scores": ""}}
    if legacy:
        return json.dumps({"objects": [tommer]})
    loader = {"id": 2, "module": "xpm_torch.module", "type": "SimpleModuleLoader",
              "fields": {"value": {"type": "python", "value": 1},
                         "path": {"type": "path.serialized", "value": "model.safetensors", "is_folder": False}}}
    return json.dumps([tommer, loader])


@dataclass
class FakeRepo:
    llm_name: str
    layer: int
    rank: int = 64
    legacy: bool = False
    parameters: int | None = None  # safetensors total, as the Hub reports it (None: legacy layout)


@dataclass
class FakeHfApi:
    """The three calls ``--list`` makes: list_models, hf_hub_download, model_info."""

    root: Path
    repos: dict[str, FakeRepo]
    gated: dict[str, object] = field(default_factory=dict)
    others: tuple[str, ...] = ()  # listed repositories that are no ToMMeR head
    calls: list[tuple] = field(default_factory=list)

    def list_models(self, *, author=None, expand=None, **kwargs):
        self.calls.append(("list_models", author, tuple(expand or ())))
        for repo_id, repo in self.repos.items():
            config = "definition.json" if repo.legacy else "experimaestro.json"
            weights = "parameters" if repo.legacy else "model.safetensors"
            yield SimpleNamespace(id=repo_id, sha="a" * 40,
                                  siblings=[SimpleNamespace(rfilename=n) for n in (config, weights, "README.md")],
                                  safetensors=SimpleNamespace(total=repo.parameters) if repo.parameters else None)
        for repo_id in self.others:
            yield SimpleNamespace(id=repo_id, sha="b" * 40, siblings=[SimpleNamespace(rfilename="README.md")],
                                  safetensors=None)

    def hf_hub_download(self, repo_id, filename, revision=None, **kwargs):
        self.calls.append(("hf_hub_download", repo_id, filename, revision))
        repo = self.repos[repo_id]
        path = self.root / repo_id / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(head_config(repo.llm_name, repo.layer, repo.rank, repo.legacy))
        return str(path)

    def model_info(self, repo_id, expand=None, **kwargs):
        self.calls.append(("model_info", repo_id))
        return SimpleNamespace(id=repo_id, gated=self.gated.get(repo_id, False))
