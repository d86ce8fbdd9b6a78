"""Loading llm2ner heads safely, from folders and from the Hub cache."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from tommer.exporter.head import load_head
from tommer.exporter.random_models import make_head
from tommer.runtime.errors import ExportError


class Boom:
    def __reduce__(self):
        return (print, ("code ran while loading",))


def test_config_comes_from_file_not_defaults(tmp_path):
    head = load_head(make_head(tmp_path, hidden_size=16, layer=3, rank=4, sliding_window=7, use_cosine=False))
    cfg = head.config
    assert (cfg.layer, cfg.rank, cfg.sliding_window, cfg.use_cosine) == (3, 4, 7, False)
    assert cfg.scale == pytest.approx(0.5)


def test_pickled_code_is_refused(tmp_path):
    folder = make_head(tmp_path, hidden_size=16, layer=0, rank=4)
    torch.save({"W_Q": Boom()}, folder / "parameters")
    with pytest.raises(ExportError, match="cannot load the head parameters safely"):
        load_head(folder)


def test_wrong_shapes_and_missing_tensors(tmp_path):
    folder = make_head(tmp_path, hidden_size=16, layer=0, rank=4)
    state = torch.load(folder / "parameters", weights_only=True)
    state["W_K"] = torch.zeros(16, 5)
    del state["cl_w"]
    torch.save(state, folder / "parameters")
    with pytest.raises(ExportError, match="missing tensor 'cl_w'"):
        load_head(folder)
    state["cl_w"] = torch.ones(1, 5, 1, 1)
    torch.save(state, folder / "parameters")
    with pytest.raises(ExportError, match=r"W_K: expected shape \(16, 4\), found \(16, 5\)"):
        load_head(folder)


def test_definition_problems(tmp_path):
    folder = make_head(tmp_path, hidden_size=16, layer=0, rank=4, causal=False, sliding_window=0)
    with pytest.raises(ExportError, match="non-causal head without a sliding window"):
        load_head(folder)
    (folder / "definition.json").write_text(json.dumps({"objects": [{"type": "Other", "fields": {}}]}))
    with pytest.raises(ExportError, match="expected exactly one object of type ToMMeR"):
        load_head(folder)
    (folder / "definition.json").unlink()
    with pytest.raises(ExportError, match=r"holds no llm2ner head: expected experimaestro.json \+ model.safetensors "
                                          r"or definition.json \+ parameters; found \['parameters'\]"):
        load_head(folder)


def fake_hub_cache(cache, repo_id, files_from, sub=""):
    """Lay out a huggingface_hub cache entry for ``repo_id`` at a fake commit."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit / sub
    snapshot.mkdir(parents=True)
    for f in files_from.iterdir():
        shutil.copy(f, snapshot / f.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


def test_hub_id_resolves_offline_from_cache(tmp_path, monkeypatch, real_head_dir):
    """A subfolder of any repo (owner/repo/subfolder) still resolves; the id forms are in test_head_ids.py."""
    cache = tmp_path / "hub"
    sub = "ToMMeR-Llama-3.2-1B_L6_R64"
    fake_hub_cache(cache, "someone/heads", real_head_dir, sub)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    head = load_head(f"someone/heads/{sub}")
    assert head.config.layer == 6 and head.source == f"someone/heads/{sub}"
    assert head.revision == "0123456789abcdef0123456789abcdef01234567"
    with pytest.raises(ExportError, match="not in the local Hub cache"):
        load_head("VictorMorand/absent-head")


def test_gated_repo_says_how_to_log_in(monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError

    def gated(*args, **kwargs):
        error = GatedRepoError.__new__(GatedRepoError)  # the Hub's error, without an HTTP response
        Exception.__init__(error, "401 gated repo")
        raise error

    monkeypatch.setattr(huggingface_hub, "snapshot_download", gated)
    with pytest.raises(ExportError, match="is gated.*hf auth login"):
        load_head("meta-llama/some-gated-model")


def test_missing_repo_says_how_to_pass_head(monkeypatch):
    """A repository the Hub does not have, outside llm2ner's naming: the error says which forms --head takes."""
    import huggingface_hub
    from huggingface_hub.errors import RepositoryNotFoundError

    asked = []

    def hub(repo_id, **kwargs):
        asked.append(repo_id)
        error = RepositoryNotFoundError.__new__(RepositoryNotFoundError)
        Exception.__init__(error, "404 repository not found")
        raise error

    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub)
    with pytest.raises(ExportError, match=r"the Hub has no repository someone/nothing.*"
                                          r"llm2ner/ToMMeR-Llama-3.2-1B_L6_R64.*tommer-export --list.*local folder"):
        load_head("someone/nothing")
    assert asked == ["someone/nothing"]  # one repository asked: no guessed variants
