"""``tommer-export --head <published id>`` as a user runs it, from a Hub cache laid out as a download leaves it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import TINY_LAYER
from hub_fakes import COMMIT, cache_repo


def test_head_id_alone_exports_its_own_backbone_and_layer(tiny_factory, tmp_path):
    """No --backbone, no --layer: the head's llm_name (random/backbone) and layer; both recorded with their commits."""
    backbone, head = tiny_factory("llama")
    cache = tmp_path / "hub"
    cache_repo(cache, "random/backbone", backbone, commit="1" * 40)
    cache_repo(cache, f"llm2ner/ToMMeR-backbone_L{TINY_LAYER}_R16", head)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}

    def export(*args):
        return subprocess.run([sys.executable, "-m", "tommer.exporter.cli", *args], capture_output=True, text=True,
                              env=env, cwd=tmp_path)

    out = export("--head", f"VictorMorand/ToMMeR/ToMMeR-backbone_L{TINY_LAYER}_R16", "--quiet")
    assert out.returncode == 0, out.stderr
    bundle = tmp_path / f"tommer-backbone-L{TINY_LAYER}-fp32"  # the default name, from the head's name
    manifest = json.loads((bundle / "tommer.json").read_text())
    assert manifest["head"]["source"] == f"llm2ner/ToMMeR-backbone_L{TINY_LAYER}_R16"
    assert manifest["head"]["revision"] == COMMIT
    assert manifest["backbone"]["source"] == "random/backbone"
    assert manifest["backbone"]["num_layers_kept"] == TINY_LAYER + 1
    assert manifest["validation"]["passed"] is True
    wrong = export("--head", f"ToMMeR-backbone_L{TINY_LAYER}_R16", "--layer", "1", "--output", "x")
    assert wrong.returncode == 2 and f"trained on layer {TINY_LAYER}, but --layer is 1: drop --layer" in wrong.stderr
    missing = export("--head", "ToMMeR-backbone_L3_R16", "--output", "y")
    assert missing.returncode == 2
    assert "no published head llm2ner/ToMMeR-backbone_L3_R16: llm2ner publishes no backbone head" in missing.stderr
