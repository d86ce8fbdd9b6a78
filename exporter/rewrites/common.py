"""Helpers the rewrite passes share."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir


def only_consumer(value: ir.Value, outputs: set[ir.Value]) -> ir.Node | None:
    """The one node reading ``value``, or None (several readers, or ``value`` is a graph output)."""
    uses = value.uses()
    return uses[0].node if len(uses) == 1 and value not in outputs else None



def initializer(graph: ir.Graph, name: str, array: np.ndarray, dtype: type | None = None) -> ir.Value:
    """Register ``array`` (cast to ``dtype`` when given) as an initializer of ``graph``."""
    value = ir.Value(name=name, const_value=ir.tensor(np.ascontiguousarray(array, dtype=dtype), name=name))
    graph.register_initializer(value)
    return value
