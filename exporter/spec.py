"""The export described as data: names, axes, opset, shapes, tolerances."""

from __future__ import annotations

from dataclasses import dataclass

from ..runtime.bundle import GRAPH_TARGETS, INPUT_NAMES, OUTPUT_NAME

DTYPES = ("fp32", "fp16", "bf16")
QUANTIZATIONS = ("int8",)
# onnxruntime: opset-23 fused operators (Attention, RMSNormalization, RotaryEmbedding) for the
# CPU and CUDA providers; tensorrt: standard operators of the opsets TensorRT's parser reads,
# head inlined, checked against its supported-operator list.
TARGETS = GRAPH_TARGETS


@dataclass(frozen=True)
class ExportSpec:
    """Fixed facts of every tommer graph (one place, no magic numbers in functions)."""

    opset: int = 23  # target onnxruntime: the opset of Attention, RMSNormalization, RotaryEmbedding
    tensorrt_opset: int = 20  # target tensorrt: the newest opset its pinned parser reads
    input_names: tuple[str, ...] = INPUT_NAMES
    output_name: str = OUTPUT_NAME
    hidden_name: str = "hidden_states"
    dynamic_axes: tuple[str, str] = ("batch", "sequence")
    trace_shape: tuple[int, int] = (2, 11)  # validation runs at other shapes
    external_data_over_bytes: int = 1_500_000_000  # protobuf stops at 2 GB
    isolate_torch_over_bytes: int = 1_000_000_000  # run the torch stage in a child process above this
    fp32_max_abs_error: float = 5e-4  # span probabilities, graph vs reference (6.5e-5 seen at 1B geometry)
    # batch invariance: a text's probabilities whatever the batch and padding around it. fp32 and
    # int8 on the CPU: 0 on the test models; reductions whose length follows the padded length
    # may differ in the last bits (1.5e-6 was seen at the 1B geometry), never in decoded spans.
    invariance_max_abs_diff: float = 1e-5
    # fp16/bf16: kernels may change with the batch shape; bounded, and spans nearly the same
    low_precision_invariance_max_abs_diff: float = 0.05
    low_precision_invariance_min_dice: float = 0.9
    low_precision_min_dice: float = 0.5  # below this a fp16/bf16/int8 export is broken, not just lossy
    # --quantize int8: weight levels per side (127: full int8; 63 would be 7 bits). On the demo
    # model, span DICE vs fp32 was 0.966 with 127 and 0.948 with 63 (benchmarks/results/int8_kernels.md)
    int8_weight_max: int = 127
    threshold: float = 0.5  # decoding threshold for span-level agreement
    # validation: texts longer than this (the one near the window) are batched with one short text,
    # not padded into the batch of all texts
    long_text_over_tokens: int = 512

    def opset_for(self, target: str) -> int:
        return self.tensorrt_opset if target == "tensorrt" else self.opset


@dataclass(frozen=True)
class ExportOptions:
    """What the user asked for."""

    backbone: str | None  # None: the head's own (its llm_name through the alias table)
    head: str
    layer: int | None  # None: the layer the head was trained on
    output: str
    dtype: str = "fp32"
    quantize: str | None = None
    target: str = "onnxruntime"
    max_span_tokens: int = 32
    revision: str | None = None
    head_revision: str | None = None
    token: str | bool | None = None
    overwrite: bool = False
    allow_head_mismatch: bool = False  # export a head onto a backbone other than its llm_name
    quiet: bool = False  # keep the libraries' warnings, progress bars and logs off the terminal
