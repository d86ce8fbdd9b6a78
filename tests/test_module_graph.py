"""The runtime's modules import each other without cycles; the annotator owns no file I/O."""

from __future__ import annotations

import ast
from pathlib import Path

RUNTIME = Path(__file__).resolve().parents[1] / "runtime"


def _imports(path: Path) -> set[str]:
    """Runtime modules imported by ``path``, at any depth, except under ``if TYPE_CHECKING:``."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            return
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(a.name for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def test_runtime_import_graph_has_no_cycle():
    graph = {p.stem: _imports(p) & {q.stem for q in RUNTIME.glob("*.py")} for p in RUNTIME.glob("*.py")}
    assert graph["annotator"] and "parquet_io" in graph, "the walk found the modules"
    state: dict[str, int] = {}

    def walk(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            assert state.get(nxt) != 1, f"import cycle: {' -> '.join(trail + [node, nxt])}"
            if nxt not in state:
                walk(nxt, trail + [node])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module, [])


def test_columns_and_inputs_need_no_annotator():
    for module in ("columns", "inputs", "chunk", "parquet_io"):
        assert "annotator" not in _imports(RUNTIME / f"{module}.py"), module
