"""Static check that TensorRT's ONNX parser can read a graph, without TensorRT or a GPU.

The data is onnx-tensorrt's supported-operator table (``docs/operators.md``) for one
TensorRT version, kept in ``exporter/data`` as JSON (operator -> supported, data types,
restrictions). After the local functions are inlined and shapes inferred, every node
must be an ONNX-domain operator the table marks supported, its data input of a type the
table lists, and every input the restrictions require to be an initializer (``axes``,
``K``, ...) a constant; the graph's opset must be in the parser's range. No local
function may be named like an ONNX operator (the parser matches functions by name).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import onnx
import onnx_ir as ir

TENSORRT_VERSION = "10.1"
DATA = Path(__file__).parent / "data" / f"tensorrt-{TENSORRT_VERSION}-operators.json"
TYPE_NAMES = {
    ir.DataType.FLOAT: "FP32", ir.DataType.FLOAT16: "FP16", ir.DataType.BFLOAT16: "BF16",
    ir.DataType.INT32: "INT32", ir.DataType.INT64: "INT64", ir.DataType.INT8: "INT8", ir.DataType.UINT8: "UINT8",
    ir.DataType.BOOL: "BOOL", ir.DataType.DOUBLE: "DOUBLE", ir.DataType.INT4: "INT4",
    ir.DataType.FLOAT8E4M3FN: "FP8",
}
TYPED_BY_OUTPUT = {"ConstantOfShape"}  # the table's types are those of the output
_CONSTANT_INPUTS = re.compile(r"((?:`\w+`[ ,and]*)+)(?:input )?must be (?:an? )?(?:initializers?|(?:build-time )?constant)")


@dataclass(frozen=True)
class OperatorTable:
    version: str
    source: str
    opset_min: int
    opset_max: int
    operators: dict[str, dict]

    def constant_inputs(self, op_type: str) -> tuple[str, ...]:
        """Names of the inputs the restrictions require to be initializers or constants."""
        text = self.operators.get(op_type, {}).get("restrictions", "")
        return tuple(n for m in _CONSTANT_INPUTS.finditer(text) for n in re.findall(r"`(\w+)`", m.group(1)))


@cache
def operator_table(path: Path = DATA) -> OperatorTable:
    data = json.loads(Path(path).read_text())
    return OperatorTable(version=data["tensorrt"], source=data["source"], opset_min=data["opset_min"],
                         opset_max=data["opset_max"], operators=data["operators"])


@dataclass
class TensorrtReport:
    """The check's result, as recorded in the manifest."""

    tensorrt: str
    problems: list[str] = field(default_factory=list)
    nodes: int = 0
    operators: dict[str, int] = field(default_factory=dict)

    @property
    def supported(self) -> bool:
        return not self.problems

    def as_dict(self, limit: int = 20) -> dict:
        return {"parser": f"TensorRT {self.tensorrt} (onnx-tensorrt docs/operators.md)", "supported": self.supported,
                "nodes": self.nodes, "operators": self.operators, "problems": self.problems[:limit],
                "problems_total": len(self.problems)}


def _is_constant(value: ir.Value | None) -> bool:
    if value is None:
        return True
    if value.const_value is not None or value.is_initializer():
        return True
    producer = value.producer()
    return producer is not None and producer.op_type == "Constant" and producer.domain in ("", "ai.onnx")


def _input_names(op_type: str, opset: int) -> list[str]:
    try:
        return [i.name for i in onnx.defs.get_schema(op_type, opset).inputs]
    except onnx.defs.SchemaError:
        return []


def check_tensorrt(model: ir.Model, table: OperatorTable | None = None) -> TensorrtReport:
    """Check ``model`` (inlined and shape-inferred in place first) against TensorRT's parser table."""
    import onnx_ir.passes.common as common_passes

    table = table or operator_table()
    report = TensorrtReport(tensorrt=table.version)
    for function in model.functions.values():
        if onnx.defs.has(function.name):
            report.problems.append(f"local function {function.domain}.{function.name} is named like the ONNX operator "
                                   f"{function.name}: TensorRT's parser matches functions by name and would take it "
                                   "for that operator")
    common_passes.InlinePass()(model)
    common_passes.ShapeInferencePass()(model)
    opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx", 0))
    if not table.opset_min <= opset <= table.opset_max:
        report.problems.append(f"the graph's ONNX opset is {opset}; TensorRT {table.version}'s parser reads opsets "
                               f"{table.opset_min} to {table.opset_max}")
    for node in model.graph.all_nodes():
        report.nodes += 1
        where = f"node {node.name or '?'} ({node.domain + '.' if node.domain else ''}{node.op_type})"
        report.operators[node.op_type] = report.operators.get(node.op_type, 0) + 1
        if node.domain not in ("", "ai.onnx"):
            report.problems.append(f"{where}: operator domain {node.domain!r} is not ONNX's; TensorRT parses "
                                   "ONNX-domain operators only")
            continue
        row = table.operators.get(node.op_type)
        if row is None or not row["supported"]:
            report.problems.append(f"{where}: {node.op_type} is {'not supported' if row else 'not listed'} by "
                                   f"TensorRT {table.version}'s parser")
            continue
        typed = node.outputs[0] if node.op_type in TYPED_BY_OUTPUT else (node.inputs[0] if node.inputs else None)
        dtype = typed.dtype if typed is not None else None
        if dtype is not None and row["types"] and TYPE_NAMES.get(dtype, dtype.name) not in row["types"]:
            report.problems.append(f"{where}: data type {TYPE_NAMES.get(dtype, dtype.name)} not supported "
                                   f"(TensorRT {table.version} takes {', '.join(row['types'])})")
        names = _input_names(node.op_type, opset)
        for name in table.constant_inputs(node.op_type):
            if name in names and names.index(name) < len(node.inputs):
                if not _is_constant(node.inputs[names.index(name)]):
                    report.problems.append(f"{where}: input {name!r} must be an initializer or constant for "
                                           f"TensorRT ({row['restrictions']})")
    report.operators = dict(sorted(report.operators.items()))
    return report
