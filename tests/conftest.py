"""Shared fixtures: the published head vendored in tests/data, tiny random backbones and heads."""

from __future__ import annotations

import ast
import functools
import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
REAL_HEAD = DATA / "heads" / "ToMMeR-Llama-3.2-1B_L6_R64"
REAL_HEAD_SAFETENSORS = DATA / "heads" / "ToMMeR-Llama-3.2-1B_L6_R64-safetensors"
GOLDEN = DATA / "fixtures" / "head_golden.npz"
TESTED_ARCHITECTURES = ("llama", "mistral", "qwen2", "gpt_neox", "phi", "phi3")
TESTED_ENCODERS = ("bert", "roberta", "modernbert")  # tests/exporter/test_encoders.py
TINY_LAYER = 2


# Tests marked `export` need torch (they export a model or load a head with it): the fixtures below
# and every test in a module that imports torch or the exporter. `pytest -m "not export and not
# slow"` is the fast loop, and it also runs where torch is not installed: those modules are then
# not collected at all.
EXPORT_FIXTURES = {"tiny_factory", "tiny_bundle", "tiny_trt_bundle", "real_head_dir", "real_head_safetensors_dir"}
TORCH_MODULES = ("torch", "transformers", "tommer.exporter", "tommer.benchmarks")


@functools.cache
def _needs_torch(path: Path) -> bool:
    """Whether a test module imports torch, transformers, the exporter or the benchmarks at module level."""
    names = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return any(n == m or n.startswith(m + ".") for n in names for m in TORCH_MODULES)


HAVE_TORCH = importlib.util.find_spec("torch") is not None
_HERE = Path(__file__).parent
collect_ignore = [] if HAVE_TORCH else [str(p.relative_to(_HERE)) for p in _HERE.rglob("test_*.py") if _needs_torch(p)]


def pytest_collection_modifyitems(config, items):
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & EXPORT_FIXTURES or _needs_torch(Path(item.fspath)):
            item.add_marker(pytest.mark.export)


def _vendored(path: Path) -> Path:
    """A file of tests/data; the tests that need one fail (never skip) without it, the others run."""
    if not path.exists():
        pytest.fail(f"the vendored test data is missing: expected {path} (tests/data ships with the repository)",
                    pytrace=False)
    return path


@pytest.fixture(scope="session")
def real_head_dir() -> Path:
    return _vendored(REAL_HEAD)


@pytest.fixture(scope="session")
def real_head_safetensors_dir() -> Path:
    return _vendored(REAL_HEAD_SAFETENSORS)


@pytest.fixture(scope="session")
def golden():
    import numpy as np

    return dict(np.load(_vendored(GOLDEN)))


@pytest.fixture(scope="session")
def tiny_factory(tmp_path_factory):
    """Build (once per session) a tiny random backbone of an architecture, and a head for it."""
    from tommer.exporter.random_models import make_backbone, make_head

    cache: dict[str, tuple[Path, Path]] = {}

    def build(arch: str = "llama") -> tuple[Path, Path]:
        if arch not in cache:
            root = tmp_path_factory.mktemp(f"tiny-{arch}")
            backbone = make_backbone(root / "backbone", arch, num_layers=4)
            head = make_head(root / "head", hidden_size=64, layer=TINY_LAYER)
            cache[arch] = (backbone, head)
        return cache[arch]

    return build


@pytest.fixture(scope="session")
def tiny_bundle(tiny_factory, tmp_path_factory):
    """A fp32 bundle of the tiny Llama, exported once per session."""
    from tommer.exporter.export import export_bundle
    from tommer.exporter.spec import ExportOptions

    backbone, head = tiny_factory("llama")
    out = tmp_path_factory.mktemp("bundles") / "tiny-llama"
    export_bundle(ExportOptions(backbone=str(backbone), head=str(head), layer=TINY_LAYER, output=str(out)))
    return out


@pytest.fixture(scope="session")
def tiny_trt_bundle(tiny_factory, tmp_path_factory):
    """A fp32 bundle of the tiny Llama exported for TensorRT (opset 20, head inlined, parser check passed)."""
    from tommer.exporter.export import export_bundle
    from tommer.exporter.spec import ExportOptions

    backbone, head = tiny_factory("llama")
    out = tmp_path_factory.mktemp("bundles") / "tiny-llama-trt"
    export_bundle(ExportOptions(backbone=str(backbone), head=str(head), layer=TINY_LAYER, output=str(out),
                                target="tensorrt"))
    return out
