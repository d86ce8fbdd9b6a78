"""Head ids, backbone aliases and the published-head listing, against a Hub cache and a faked HfApi."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest
import torch
from conftest import REPO
from hub_fakes import COMMIT, FakeHfApi, FakeRepo, cache_repo, offline_hub
from typer.testing import CliRunner

from tommer.exporter import hub
from tommer.exporter.cli import app, default_output
from tommer.exporter.export import backbone_mismatch, check_compatible
from tommer.exporter.head import head_defaults, load_head
from tommer.runtime.errors import ExportError

L6 = "ToMMeR-Llama-3.2-1B_L6_R64"


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch, real_head_safetensors_dir):
    """An offline Hub cache holding llm2ner/ToMMeR-Llama-3.2-1B_L6_R64 (the vendored head, current layout)."""
    cache = tmp_path / "hub"
    cache_repo(cache, f"llm2ner/{L6}", real_head_safetensors_dir)
    offline_hub(monkeypatch, cache)
    return cache


@pytest.mark.parametrize("ref,expected", [
    (f"llm2ner/{L6}", f"llm2ner/{L6}"),
    (L6, f"llm2ner/{L6}"),
    (f"VictorMorand/ToMMeR/{L6}", f"llm2ner/{L6}"),
    ("someone/heads/sub", "someone/heads/sub"),
    ("someone/head", "someone/head"),
])
def test_canonical_head_ids(ref, expected):
    assert hub.canonical_head_id(ref) == expected


def test_a_bare_name_outside_the_naming_is_refused():
    with pytest.raises(ExportError, match="neither an existing folder nor a head id.*llm2ner/ToMMeR-"):
        hub.canonical_head_id("my-head")


def test_layer_alone_names_the_llama_head():
    assert hub.default_head_id(13) == "llm2ner/ToMMeR-Llama-3.2-1B_L13_R64"
    assert hub.parse_head_name("llm2ner/ToMMeR-phi-1_5_L5_R64") == hub.HeadName("phi-1_5", 5, 64)


@pytest.mark.parametrize("ref", [f"llm2ner/{L6}", L6, f"VictorMorand/ToMMeR/{L6}"])
def test_every_id_form_resolves_offline_from_the_cache(hub_cache, ref, real_head_dir):
    head = load_head(ref)
    assert head.source == f"llm2ner/{L6}"  # the resolved repository, whatever form was given
    assert head.revision == COMMIT  # the snapshot's commit, not "main"
    assert head.layout == "experimaestro.json"
    legacy = load_head(real_head_dir)
    assert torch.equal(head.w_q, legacy.w_q) and head.config == legacy.config


def test_local_folder_is_recorded_as_its_absolute_path(real_head_dir, monkeypatch):
    monkeypatch.chdir(real_head_dir.parent)
    head = load_head(f"./{real_head_dir.name}")
    assert head.source == str(real_head_dir.resolve()) and head.revision is None


def test_missing_layer_offline_lists_the_table_layers(hub_cache):
    with pytest.raises(ExportError, match=r"no published head llm2ner/ToMMeR-Llama-3.2-1B_L5_R64: llm2ner publishes "
                                          r"Llama-3.2-1B heads of rank 64 at layers 2, 3, 6, 7, 13 "
                                          r"\(from offline: tommer's table"):
        load_head(hub.default_head_id(5))


def test_published_but_uncached_head_offline_says_download_it(hub_cache):
    with pytest.raises(ExportError, match="ToMMeR-Llama-3.2-1B_L7_R64 is not in the local Hub cache"):
        load_head(hub.default_head_id(7))


def _not_found(*args, **kwargs):
    from huggingface_hub.errors import RepositoryNotFoundError

    error = RepositoryNotFoundError.__new__(RepositoryNotFoundError)
    Exception.__init__(error, "404 repository not found")
    raise error


def test_missing_layer_online_lists_the_hub_layers(monkeypatch, tmp_path):
    """Online, the layers come from the Hub listing (here 4 and 9, which tommer's table does not have)."""
    import huggingface_hub

    api = FakeHfApi(tmp_path, {"llm2ner/ToMMeR-Llama-3.2-1B_L4_R64": FakeRepo("meta-llama/Llama-3.2-1B", 4),
                               "llm2ner/ToMMeR-Llama-3.2-1B_L9_R64": FakeRepo("meta-llama/Llama-3.2-1B", 9),
                               "llm2ner/ToMMeR-pythia-70m_L1_R64": FakeRepo("EleutherAI/pythia-70m", 1)})
    monkeypatch.setattr(huggingface_hub, "snapshot_download", _not_found)
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda *a, **k: api)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(ExportError, match=r"at layers 4, 9 \(from the Hub listing\): pass --layer"):
        load_head(hub.default_head_id(5))
    with pytest.raises(ExportError, match=r"publishes no phi-9 head of rank 64.*backbones with heads: "
                                          r"Llama-3.2-1B, pythia-70m"):
        load_head("ToMMeR-phi-9_L1_R64")


# ---- backbone aliases --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("llm_name,backbone", [
    ("phi-1_5", "microsoft/phi-1_5"), ("phi-2", "microsoft/phi-2"), ("phi-4", "microsoft/phi-4"),
    ("mistral-7b", "mistralai/Mistral-7B-v0.1"), ("Mistral-7B", "mistralai/Mistral-7B-v0.1"),
    ("pythia-70m", "EleutherAI/pythia-70m"), ("meta-llama/Llama-3.2-1B", "meta-llama/Llama-3.2-1B"),
])
def test_llm_name_resolves_through_the_alias_table(llm_name, backbone):
    assert hub.resolve_backbone_name(llm_name) == backbone


def test_unknown_alias_says_to_pass_backbone():
    with pytest.raises(ExportError, match=r"'gpt-9000', an alias tommer's table does not know.*pass --backbone"):
        hub.resolve_backbone_name("gpt-9000")


def test_every_published_llm_name_resolves():
    """The offline table's heads all name a backbone the alias table (or a Hub id) resolves."""
    rows = hub.offline_published_heads()
    assert len(rows) >= 16 and all(r.backbone for r in rows)
    assert {r.id for r in rows} >= {f"llm2ner/ToMMeR-Llama-3.2-1B_L{n}_R64" for n in (2, 3, 6, 7, 13)}
    for r in rows:
        name = hub.parse_head_name(r.id)
        assert name and name.layer == r.layer and name.rank == r.rank
        assert r.llm_name.rsplit("/", 1)[-1] == name.backbone  # the reference names repos by llm_name's last part


def fake_head(llm_name: str, layer: int = 5, hidden: int = 64):
    return SimpleNamespace(config=SimpleNamespace(llm_name=llm_name, layer=layer), source=f"head-{llm_name}",
                           hidden_size=hidden)


def fake_backbone(source: str, hidden: int = 64):
    return SimpleNamespace(source=source, config=SimpleNamespace(_name_or_path=source), model_type="mistral",
                           hidden_size=hidden)


def test_mismatch_check_uses_the_alias_table():
    head = fake_head("mistral-7b")
    assert backbone_mismatch(head, fake_backbone("mistralai/Mistral-7B-v0.1")) is None
    assert backbone_mismatch(head, fake_backbone("/models/Mistral-7B-v0.1")) is None  # a local copy
    assert "trained on 'mistral-7b'" in backbone_mismatch(head, fake_backbone("someone/other-7b"))
    with pytest.raises(ExportError, match="pass --backbone mistralai/Mistral-7B-v0.1 "):
        check_compatible(head, fake_backbone("someone/other-7b"), 5)


def test_head_defaults_fill_backbone_and_layer():
    assert head_defaults(fake_head("phi-2", layer=5), None, None) == {"backbone": "microsoft/phi-2", "layer": 5}
    assert head_defaults(fake_head("phi-2", layer=5), "./phi2", 5) == {"backbone": "./phi2", "layer": 5}
    with pytest.raises(ExportError, match="trained on layer 5, but --layer is 6: drop --layer"):
        head_defaults(fake_head("phi-2", layer=5), None, 6)
    with pytest.raises(ExportError, match="pass --backbone"):
        head_defaults(fake_head("unknown-model"), None, None)


def test_default_output_from_the_head_name(real_head_dir):
    assert default_output(None, None, "fp32", None, "llm2ner/ToMMeR-pythia-70m_L1_R64") == "tommer-pythia-70m-L1-fp32"
    assert default_output("meta-llama/Llama-3.2-1B", 6, "fp32", "int8") == "tommer-Llama-3.2-1B-L6-int8"
    assert default_output(None, None, "fp16", None, str(real_head_dir)) == "tommer-Llama-3.2-1B-L6-fp16"


# ---- --list --------------------------------------------------------------------------------------------------------


def test_list_from_the_faked_hub(monkeypatch, tmp_path):
    import huggingface_hub

    api = FakeHfApi(tmp_path, {
        "llm2ner/ToMMeR-Llama-3.2-1B_L6_R64": FakeRepo("meta-llama/Llama-3.2-1B", 6, parameters=264_198),
        "llm2ner/ToMMeR-phi-2_L5_R64": FakeRepo("phi-2", 5, legacy=True),
        "llm2ner/ToMMeR-pythia-70m_L1_R64": FakeRepo("EleutherAI/pythia-70m", 1, parameters=66_054),
        "llm2ner/ToMMeR-pythia-12b_L9_R32": FakeRepo("EleutherAI/pythia-12b", 9, rank=32),
    }, gated={"meta-llama/Llama-3.2-1B": "manual"}, others=("llm2ner/README-space",))
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda *a, **k: api)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    result = CliRunner().invoke(app, ["--list"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:]}
    assert set(lines) == {"llm2ner/ToMMeR-Llama-3.2-1B_L6_R64", "llm2ner/ToMMeR-phi-2_L5_R64",
                          "llm2ner/ToMMeR-pythia-70m_L1_R64", "llm2ner/ToMMeR-pythia-12b_L9_R32"}
    assert lines["llm2ner/ToMMeR-Llama-3.2-1B_L6_R64"][1:] == ["meta-llama/Llama-3.2-1B", "6", "64", "264,198", "yes"]
    # a legacy repo (no safetensors total): its parameter count from tommer's table; its alias resolved
    assert lines["llm2ner/ToMMeR-phi-2_L5_R64"][1:] == ["microsoft/phi-2", "5", "64", "330,246", "no"]
    # a head the table does not know: what the Hub says, and "?" for what nobody says
    assert lines["llm2ner/ToMMeR-pythia-12b_L9_R32"][1:] == ["EleutherAI/pythia-12b", "9", "32", "?", "no"]
    assert ("list_models", "llm2ner", ("sha", "siblings", "safetensors")) in api.calls
    assert ("hf_hub_download", "llm2ner/ToMMeR-phi-2_L5_R64", "definition.json", "a" * 40) in api.calls
    assert sum(c[0] == "model_info" for c in api.calls) == 4  # one per backbone
    assert "note:" not in result.output


def test_list_offline_says_so_and_shows_the_table(monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda *a, **k: pytest.fail("offline: the Hub must not be asked"))
    result = CliRunner().invoke(app, ["--list"])
    assert result.exit_code == 0
    assert "HF_HUB_OFFLINE is set" in result.stderr and "tommer's table" in result.stderr
    assert re.search(r"llm2ner/ToMMeR-pythia-70m_L1_R64\s+EleutherAI/pythia-70m\s+1\s+64\s+66,054\s+no", result.stdout)
    assert re.search(r"llm2ner/ToMMeR-mistral-7b_L5_R64\s+mistralai/Mistral-7B-v0.1\s+5\s+64\s+528,390\s+yes",
                     result.stdout)


def test_list_connection_error_falls_back_to_the_table(monkeypatch, tmp_path):
    import httpx
    import huggingface_hub

    class Unreachable(FakeHfApi):
        def list_models(self, **kwargs):
            raise httpx.ConnectError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(huggingface_hub, "HfApi", lambda *a, **k: Unreachable(tmp_path, {}))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    rows, note = hub.published_heads()
    assert "could not be reached (ConnectError" in note and "tommer's table" in note
    assert rows == hub.offline_published_heads()


def test_layer_and_head_both_absent_is_an_error():
    result = CliRunner().invoke(app, [])
    assert result.exit_code == 2 and "pass --head" in result.stderr and "--layer N" in result.stderr


def test_tables_are_valid_json():
    for path in (hub.PUBLISHED_TABLE, hub.ALIAS_TABLE):
        json.loads(path.read_text())


def test_readme_first_command_needs_no_account():
    """The README's first command exports a published head whose backbone is not gated (no token needed)."""
    readme = (REPO / "README.md").read_text()  # the checkout's, whatever the install
    section = readme.split("## On a fresh machine", 1)[1]
    first = section.split("```bash\n", 1)[1].split("```", 1)[0]
    head = re.search(r"tommer-export --head (\S+)", first)
    assert head, "the first command names its head"
    rows = {r.id: r for r in hub.offline_published_heads()}
    assert rows[hub.canonical_head_id(head[1])].gated_backbone is False
    assert "tommer-annotate examples/sample.parquet" in first and "--token" not in first


def test_a_missing_folder_is_named_as_a_folder(tmp_path):
    with pytest.raises(ExportError, match=r"--head '\./absent-head': no such folder"):
        load_head("./absent-head")
    with pytest.raises(ExportError, match="neither an existing folder nor a Hub id"):
        hub.resolve_snapshot(str(tmp_path / "absent" / "backbone"), revision=None, token=None, allow_patterns=None,
                             what="backbone")
