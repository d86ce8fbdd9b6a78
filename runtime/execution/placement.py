"""Where a session really runs the graph, read from onnxruntime's own log (``tommer-annotate --check``).

onnxruntime says it at session creation when its log severity is VERBOSE (the wording below is
that of its sources, onnxruntime 1.2x-1.3x, and of the strings in onnxruntime-gpu 1.31.1's CUDA
library):

* ``core/framework/session_state.cc`` (``VerifyEachNodeIsAssignedToAnEp``), the session logger:
  ``Node placements``, then either `` All nodes placed on [P]. Number of nodes: N`` or, per
  provider, `` Node(s) placed on [P]. Number of nodes: N`` followed by one ``  OpType (name)``
  line per node;
* ``core/optimizer/transformer_memcpy.cc``, INFO: ``Add MemcpyFromHost after X for P`` /
  ``Add MemcpyToHost before X for P``, one per copy node inserted;
* ``core/framework/fallback_cpu_capability.cc``, the default logger, INFO: ``ORT optimization- Force
  fallback to CPU execution for node: X because the CPU execution path is deemed faster ...``:
  nodes of small CPU-side tensors (shape arithmetic) that a GPU provider could run and leaves to
  the CPU on purpose; not a fallback of the model's computation;
* the CUDA provider's ``GetCapability``, the default logger: ``CUDA kernel not found in registries
  for Op type: T node name: X`` and ``CUDA kernel not supported. Fallback to CPU execution provider
  for Op type: T node name: X``: the real fallbacks;
* ``core/providers/cuda/llm/attention.cc`` (the ONNX ``Attention`` of opset 23, when it runs):
  ``ONNX Attention: using Flash Attention``, ``... using Memory Efficient Attention``, ``... using
  cuDNN SDPA`` and ``Attention: using unified unfused path (is_gqa=...``; the contrib attention
  kernels print ``Operator=A Node=X DataType=bf16 SdpaKernel=FLASH_ATTENTION`` on stdout when
  ``ORT_ENABLE_ATTENTION_KERNEL_DEBUG_INFO=1``.

CUDA graphs: onnxruntime's ``inference_session.cc`` refuses to capture when any node is on a
provider other than CUDA or the CPU, or when any ``MemcpyFromHost``/``MemcpyToHost`` node exists
(CPU shape nodes without copies are allowed).

``parse_log`` and ``check`` are pure (text in, verdict out); ``observe`` turns the logging on
for the sessions opened inside it and captures what onnxruntime writes from C++ to the process's
file descriptors 1 and 2 (Python-level redirection never sees it), restoring both after.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

ATTENTION_DEBUG_ENV = "ORT_ENABLE_ATTENTION_KERNEL_DEBUG_INFO"
DEFAULT_LOG_SEVERITY = 2  # onnxruntime's default (WARNING); restored after ``observe``
ORT_PROVIDER_NAMES = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider",
                      "cpu": "CPUExecutionProvider"}
MEMCPY_OPS = ("MemcpyFromHost", "MemcpyToHost")

ANSI = re.compile(r"\x1b\[[0-9;]*m")
# "<date> <time> [V:onnxruntime:<log id>, <file>:<line> <function>] <message>"
PREFIX = re.compile(r"\[(?P<severity>[VIWEF]):onnxruntime:(?P<logid>[^,\]]*), (?P<where>[^\]]*)\] ?(?P<message>.*)$")
ALL_ON = re.compile(r"^\s*All nodes placed on \[(?P<provider>[^\]]+)\]\. Number of nodes: (?P<count>\d+)")
SOME_ON = re.compile(r"^\s*Node\(s\) placed on \[(?P<provider>[^\]]+)\]\. Number of nodes: (?P<count>\d+)")
NODE = re.compile(r"^  (?P<op>[^\s(]+) \((?P<name>.*)\)\s*$")
MEMCPY_ADDED = re.compile(r"Add (?P<op>MemcpyFromHost|MemcpyToHost) (?:after|before) (?P<arg>.+) for (?P<provider>\S+)\s*$")
ON_PURPOSE = re.compile(r"Force fallback to CPU execution for node: (?P<name>.*?) because the CPU execution path")
NOT_SUPPORTED = re.compile(r"(?P<ep>\w+) kernel not (?:found in registries|supported\. Fallback to CPU execution provider) "
                           r"for Op type: (?P<op>\S+) node name: (?P<name>.*?)\s*$")
ONNX_ATTENTION = re.compile(r"ONNX Attention: using (?P<kernel>cuDNN SDPA|Flash Attention|Memory Efficient Attention)")
UNFUSED_ATTENTION = re.compile(r"Attention: using unified unfused path(?: \((?P<detail>[^)]*)\)?)?")
SDPA_KERNEL = re.compile(r"Operator=(?P<op>\S+)(?: Node=(?P<node>\S+))?(?: DataType=(?P<dtype>\w+))? SdpaKernel=(?P<kernel>[A-Z_]+)")
CAPTURE_REFUSED = re.compile(r"cannot use the (?:graph capture|CUDA Graph) feature[^\n]*")
ATTENTION_NAMES = {"Flash Attention": "flash", "Memory Efficient Attention": "memory-efficient",
                   "cuDNN SDPA": "cudnn-sdpa", "FLASH_ATTENTION": "flash", "EFFICIENT_ATTENTION": "memory-efficient",
                   "CUDNN_FLASH_ATTENTION": "cudnn-sdpa", "MATH": "unfused", "LEAN_ATTENTION": "lean",
                   "TRT_FUSED_ATTENTION": "trt-fused", "TRT_FLASH_ATTENTION": "trt-flash",
                   "TRT_CROSS_ATTENTION": "trt-cross", "TRT_CAUSAL_ATTENTION": "trt-causal"}


@dataclass(frozen=True)
class Placement:
    """What one session's log says (``parse_log``)."""

    seen: bool = False  # a "Node placements" report was found (the log was verbose)
    counts: dict[str, int] = field(default_factory=dict)  # provider -> nodes on it
    nodes: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # provider -> (op type, name); empty when all on one
    memcpy_added: list[tuple[str, str, str]] = field(default_factory=list)  # (op, tensor, provider) per copy node inserted
    on_purpose: tuple[str, ...] = ()  # names the GPU provider left to the CPU on purpose (shape arithmetic)
    not_supported: list[tuple[str, str, str]] = field(default_factory=list)  # (provider, op type, name)
    attention: dict[str, int] = field(default_factory=dict)  # kernel path -> times logged
    capture_refused: tuple[str, ...] = ()  # onnxruntime's own refusal of CUDA graph capture


def _messages(text: str) -> Iterator[str]:
    """Each line's message: the part after onnxruntime's ``[S:onnxruntime:id, file:line function]``
    prefix (lines without one, like the attention debug lines on stdout, as they are)."""
    for raw in text.splitlines():
        line = ANSI.sub("", raw)
        match = PREFIX.search(line)
        yield match.group("message") if match else line


def parse_log(text: str) -> Placement:
    """A ``Placement`` from onnxruntime's log text (any mix of its lines and others)."""
    counts: dict[str, int] = {}
    nodes: dict[str, list[tuple[str, str]]] = {}
    memcpy, not_supported, refused = [], [], []
    on_purpose: dict[str, None] = {}
    attention: Counter = Counter()
    seen, current = False, None
    for message in _messages(text):
        if message.strip() == "Node placements":
            seen, current = True, None
            counts, nodes = {}, {}  # a later report (a second session) replaces an earlier one
            continue
        if match := ALL_ON.match(message):
            seen, current = True, None
            counts[match["provider"]] = int(match["count"])
            continue
        if match := SOME_ON.match(message):
            seen, current = True, match["provider"]
            counts[current] = int(match["count"])
            nodes[current] = []
            continue
        if current is not None and (match := NODE.match(message)):
            nodes[current].append((match["op"], match["name"]))
            continue
        current = None
        if match := MEMCPY_ADDED.search(message):
            memcpy.append((match["op"], match["arg"], match["provider"]))
        elif match := ON_PURPOSE.search(message):
            on_purpose[match["name"]] = None
        elif match := NOT_SUPPORTED.search(message):
            not_supported.append((match["ep"], match["op"], match["name"]))
        elif match := ONNX_ATTENTION.search(message):
            attention[ATTENTION_NAMES[match["kernel"]]] += 1
        elif UNFUSED_ATTENTION.search(message):
            attention["unfused"] += 1
        elif match := SDPA_KERNEL.search(message):
            attention[ATTENTION_NAMES.get(match["kernel"], match["kernel"].lower())] += 1
        elif match := CAPTURE_REFUSED.search(message):
            refused.append(match.group(0).strip())
    return Placement(seen=seen, counts=counts, nodes=nodes, memcpy_added=memcpy, on_purpose=tuple(on_purpose),
                     not_supported=not_supported, attention=dict(attention), capture_refused=tuple(refused))


@dataclass(frozen=True)
class Check:
    """The verdict on one session (``check``)."""

    provider: str  # the ORT name of the provider that loaded
    total_nodes: int
    on_provider: int
    off_provider: list[tuple[str, str, str]]  # (provider, op type, name) of every node not on it
    fell_back: list[tuple[str, str, str]]  # of those: the model's computation (not copies, not shape arithmetic)
    memcpy: int
    attention: dict[str, int]
    cuda_graphs: bool | None  # None: not a CUDA provider
    cuda_graphs_why: str
    seen: bool
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def check(placement: Placement, provider: str, cuda_graphs: bool = False) -> Check:
    """Judge ``placement`` for a session on ``provider`` (``cpu``, ``cuda``, ``tensorrt`` or an ORT
    name); ``cuda_graphs``: the run asks for them. ``problems`` lists what makes ``--check`` fail:
    a node of the model's computation off the provider (onnxruntime had no kernel for it there, or
    its log says so), no placement report at all, CUDA graphs asked for and impossible."""
    name = ORT_PROVIDER_NAMES.get(provider, provider)
    off: list[tuple[str, str, str]] = []
    for where, listed in placement.nodes.items():
        if where != name:
            off.extend((where, op, node) for op, node in listed)
    unlisted_off = sum(n for where, n in placement.counts.items() if where != name and where not in placement.nodes)
    on_purpose = set(placement.on_purpose)
    fell_back = [(where, op, node) for where, op, node in off if op not in MEMCPY_OPS and node not in on_purpose]
    # a kernel the GPU provider lacks, even where the node list was not printed
    seen_nodes = {node for _, _, node in fell_back}
    fell_back += [(f"not {ep}", op, node) for ep, op, node in placement.not_supported
                  if node not in seen_nodes and name.startswith(ep)]
    memcpy_nodes = sum(1 for listed_nodes in placement.nodes.values() for op, _ in listed_nodes if op in MEMCPY_OPS)
    memcpy = max(memcpy_nodes, len(placement.memcpy_added))
    problems = []
    if not placement.seen:
        problems.append("onnxruntime's placement report was not found in its log (was the session created "
                        "inside placement.observe()?)")
    if unlisted_off:
        problems.append(f"{unlisted_off} node(s) on other providers were not listed by onnxruntime")
    if fell_back:
        problems.append(f"{len(fell_back)} node(s) of the model fell back from {name}: "
                        + ", ".join(f"{op} ({node}) on {where}" for where, op, node in fell_back[:20])
                        + (" ..." if len(fell_back) > 20 else ""))
    graphs: bool | None
    if name != ORT_PROVIDER_NAMES["cuda"]:
        graphs, why = None, f"not applicable: the session runs on {name}, not CUDA"
    else:
        foreign = sorted(p for p in placement.counts if p not in (name, ORT_PROVIDER_NAMES["cpu"]))
        if placement.capture_refused:
            graphs, why = False, placement.capture_refused[0]
        elif memcpy:
            graphs, why = False, f"{memcpy} Memcpy node(s): onnxruntime refuses to capture a graph with copies"
        elif foreign:
            graphs, why = False, f"nodes on {', '.join(foreign)}"
        elif not placement.seen:
            graphs, why = None, "unknown (no placement report)"
        else:
            graphs, why = True, "no Memcpy node, every node on CUDA or CPU shape arithmetic"
    if cuda_graphs and graphs is not True:
        problems.append(f"--cuda-graphs asked for, but CUDA graphs are not possible: {why}")
    total = sum(placement.counts.values())
    return Check(provider=name, total_nodes=total, on_provider=placement.counts.get(name, 0), off_provider=off,
                 fell_back=fell_back, memcpy=memcpy, attention=dict(placement.attention), cuda_graphs=graphs,
                 cuda_graphs_why=why, seen=placement.seen, problems=problems)


def describe_attention(attention: dict[str, int], provider: str) -> str:
    if attention:
        return ", ".join(f"{kind} ({n} node runs)" for kind, n in sorted(attention.items(), key=lambda kv: -kv[1]))
    if ORT_PROVIDER_NAMES.get(provider, provider) == ORT_PROVIDER_NAMES["cpu"]:
        return "CPU Attention kernel (onnxruntime logs no kernel path on the CPU)"
    return "not logged (no Attention node ran, or this onnxruntime does not say)"


def report_lines(result: Check, on_purpose: int = 0) -> list[str]:
    """The ``--check`` printout."""
    lines = [f"provider: {result.provider} ({result.on_provider} of {result.total_nodes} nodes)"]
    if not result.off_provider:
        lines.append("nodes not on it: none")
    else:
        lines.append(f"nodes not on it: {len(result.off_provider)} ({len(result.fell_back)} of the model's "
                     f"computation fell back, {on_purpose} shape nodes onnxruntime left to the CPU on purpose)")
        lines += [f"  {op} ({node}) on {where}" for where, op, node in result.off_provider]
    lines.append(f"Memcpy nodes: {result.memcpy}")
    lines.append(f"attention kernel: {describe_attention(result.attention, result.provider)}")
    graphs = {True: "possible", False: "not possible", None: "-"}[result.cuda_graphs]
    lines.append(f"CUDA graphs: {graphs} ({result.cuda_graphs_why})")
    lines += [f"problem: {p}" for p in result.problems]
    lines.append("check: " + ("passed" if result.ok else "FAILED"))
    return lines


# ------------------------------------------------------------------------------------------ capture


class Captured:
    """What onnxruntime wrote to fd 1 and 2 inside ``observe`` (``text`` is set on exit)."""

    text: str = ""


_hooks: list = []  # session-options hooks ``open_session`` applies (see session.configure)


def configure(options) -> None:
    """Applied by ``session.open_session`` to every ``SessionOptions`` it makes: inside
    ``observe``, the session logs at VERBOSE (its placement report)."""
    for hook in _hooks:
        hook(options)


def _verbose(options) -> None:
    options.log_severity_level = 0
    options.log_verbosity_level = 1


@contextlib.contextmanager
def _redirected(fd: int, path: str) -> Iterator[None]:
    saved = os.dup(fd)
    target = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.dup2(target, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(target)


@contextlib.contextmanager
def observe(ort_module=None) -> Iterator[Captured]:
    """Sessions opened inside log where their nodes run; onnxruntime's fd 1 and fd 2 output in
    here is captured into the yielded ``Captured`` (and not shown), both restored after."""
    import sys

    if ort_module is None:
        import onnxruntime

        ort_module = onnxruntime
    captured = Captured()
    previous_env = os.environ.get(ATTENTION_DEBUG_ENV)
    os.environ[ATTENTION_DEBUG_ENV] = "1"
    fd, path = tempfile.mkstemp(prefix="tommer-ort-log-", suffix=".txt")
    os.close(fd)
    _hooks.append(_verbose)
    ort_module.set_default_logger_severity(0)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        with _redirected(1, path), _redirected(2, path):
            try:
                yield captured
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
    finally:
        ort_module.set_default_logger_severity(DEFAULT_LOG_SEVERITY)
        _hooks.remove(_verbose)
        if previous_env is None:
            os.environ.pop(ATTENTION_DEBUG_ENV, None)
        else:
            os.environ[ATTENTION_DEBUG_ENV] = previous_env
        with open(path, encoding="utf-8", errors="replace") as f:
            captured.text = f.read()
        os.unlink(path)
