"""The runtime's layers and their may-import rules (docs/design.md, "Layers"), and no import cycle
anywhere in the package.

Every import is seen: at module level, inside functions and under ``if TYPE_CHECKING:``,
relative or absolute.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

from conftest import REPO

ROOT = REPO
FOLDERS = {"package": "tommer", "runtime": "tommer.runtime", "exporter": "tommer.exporter",
           "benchmarks": "tommer.benchmarks"}
BASE = {"errors", "bundle", "options", "fields"}
# layer -> the runtime layers it may import (itself included)
MAY_IMPORT = {
    "errors": set(), "bundle": {"errors"}, "options": {"errors", "bundle"}, "fields": {"errors"},
    "execution": BASE | {"execution"},
    "core": BASE | {"core", "execution"},
    "io": BASE | {"io"},
    "quality": BASE | {"quality", "io"},
    "engines": BASE | {"engines", "execution", "core", "io"},
    "integrations": BASE | {"integrations", "core", "io"},
    "annotator": BASE | {"annotator", "core", "engines", "integrations"},
    "cli": BASE | {"cli", "execution", "core", "io", "quality", "engines", "integrations", "annotator"},
}
# third-party modules a layer may not import
FORBIDDEN_LIBRARIES = {layer: {"torch", "transformers", "onnx", "onnxscript"} for layer in MAY_IMPORT}
for layer in MAY_IMPORT:
    if layer not in {"execution", "cli"}:  # the CLI reports onnxruntime's version and errors
        FORBIDDEN_LIBRARIES[layer].add("onnxruntime")


def modules(root: Path) -> dict[str, Path]:
    """Dotted name -> file, for every module of the package under ``root``."""
    found = {}
    for folder, package in FOLDERS.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = list(path.relative_to(root / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def imports(name: str, path: Path) -> set[str]:
    """Every module ``path`` imports, as absolute dotted names, wherever the import stands."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names)  # `from pkg import module`
    return found


def layer_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == ["tommer", "runtime"] else None


def graph(root: Path) -> dict[str, set[str]]:
    mods = modules(root)
    return {name: {m for m in imports(name, path) if m in mods and m != name} for name, path in mods.items()}


def violations(root: Path) -> list[str]:
    """Every broken may-import rule and every import cycle of the package under ``root``."""
    problems = []
    mods = modules(root)
    edges = graph(root)
    for name, path in mods.items():
        layer = layer_of(name)
        if layer is None:
            continue
        for target in sorted(imports(name, path)):
            top = target.split(".")[0]
            if top in FORBIDDEN_LIBRARIES[layer]:
                problems.append(f"{name} imports {target}: layer {layer} may not import {top}")
            target_layer = layer_of(target)
            if target in mods and target_layer and target_layer not in MAY_IMPORT[layer]:
                problems.append(f"{name} imports {target}: layer {layer} may not import layer {target_layer}")
    state: dict[str, int] = {}

    def walk(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycle = trail[trail.index(nxt):] if nxt in trail else trail
                problems.append("import cycle: " + " -> ".join(cycle + [node, nxt]))
            elif nxt not in state:
                walk(nxt, trail + [node])
        state[node] = 2

    for name in sorted(edges):
        if name not in state:
            walk(name, [])
    return problems


def test_every_runtime_module_belongs_to_a_layer():
    names = [n for n in modules(ROOT) if n.startswith("tommer.runtime.")]
    assert len(names) > 30, names  # the walk found the package
    assert {layer_of(n) for n in names} <= set(MAY_IMPORT), sorted({layer_of(n) for n in names} - set(MAY_IMPORT))


def test_the_runtime_keeps_its_layers_and_the_package_has_no_cycle():
    assert violations(ROOT) == []


def _planted(tmp_path: Path, where: str, old: str, new: str) -> Path:
    root = tmp_path / "tree"
    for folder in FOLDERS:
        shutil.copytree(ROOT / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__", "data"))
    path = root / where
    text = path.read_text()
    assert old in text, (where, old)
    path.write_text(text.replace(old, new, 1))
    return root


def test_a_planted_lazy_import_of_the_core_from_io_is_caught(tmp_path):
    root = _planted(tmp_path, "runtime/io/locations.py", "def is_remote(location: str) -> bool:\n",
                    "def is_remote(location: str) -> bool:\n    from ..core import annotator  # planted\n")
    found = violations(root)
    assert any("tommer.runtime.io.locations imports tommer.runtime.core" in p and "layer io" in p for p in found), found


def test_a_planted_type_checking_import_and_its_cycle_are_caught(tmp_path):
    root = _planted(tmp_path, "runtime/core/chunk.py", "if TYPE_CHECKING:\n",
                    "if TYPE_CHECKING:\n    from ..engines.local import annotate_files  # planted\n")
    found = violations(root)
    assert any("layer core may not import layer engines" in p for p in found), found
    assert any(p.startswith("import cycle:") and "tommer.runtime.core.chunk" in p for p in found), found


def test_a_planted_onnxruntime_import_in_quality_is_caught(tmp_path):
    root = _planted(tmp_path, "runtime/quality/show.py", "import html\n", "import html\n\nimport onnxruntime\n")
    assert any("layer quality may not import onnxruntime" in p for p in violations(root))
