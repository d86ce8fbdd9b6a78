"""ONNX Runtime sessions for a bundle's graph."""

from __future__ import annotations

import functools
import platform
import warnings
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ..errors import BundleError, GraphRunError, InputError
from ..options import GPU_PROVIDERS
from . import denormals, placement
from .providers import Settings, candidates, check_loaded, profile

# onnxruntime's error types that say the graph itself cannot be loaded (whatever the provider):
# a damaged or truncated file, a graph or an operator this onnxruntime does not know.
GRAPH_LOAD_ERRORS = ("InvalidProtobuf", "InvalidGraph", "NoSuchFile", "NoModel", "NotImplemented")
OUT_OF_MEMORY_SIGNS = ("out of memory", "failed to allocate", "bad_alloc", "bad allocation", "alloc_failed",
                       "cudaerrormemoryallocation", "cuda_error_out_of_memory", "std::bad_alloc")


# CPU flags whose integer dot products accumulate in 32 bits (no uint8 x int8 saturation)
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> list[str]:
    """The CPU's feature flags as Linux lists them; OSError where that file cannot be read."""
    with open(cpuinfo, encoding="utf-8", errors="replace") as f:
        return next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])


@functools.lru_cache(maxsize=1)
def int8_needs_exact_mode(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether int8 graphs must run onnxruntime's exact uint8 x uint8 GEMM on this CPU.

    x86 CPUs without VNNI multiply uint8 by int8 with ``vpmaddubsw``, whose 16-bit pair sums
    saturate with full-range int8 weights; onnxruntime's ``session.x64quantprecision``
    switches those weights to the uint8 x uint8 kernel. It is asked only where needed: on a
    CPU with AMX, onnxruntime applies it too and the int8 GEMM then ran 2x slower (measured
    on a Xeon with AMX). A CPU whose flags cannot be read is treated as lacking VNNI (exact,
    maybe slower). Not x86: never needed.
    """
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return False
    try:
        flags = cpu_flags(cpuinfo)
    except OSError:
        return True
    return not any(flag in flags for flag in VNNI_FLAGS)


def is_onnxruntime_error(exc: BaseException) -> bool:
    """An exception onnxruntime raised: its own types (``onnxruntime.capi.onnxruntime_pybind11_state``:
    Fail, InvalidArgument, RuntimeException, ...), matched by module since they share no base class."""
    return type(exc).__module__.split(".")[0] == "onnxruntime"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0][:500].rstrip(".")


def describe_error(exc: BaseException) -> str:
    """``Type: first line of the message`` (onnxruntime's messages can run over many lines)."""
    return f"{type(exc).__name__}: {_first_line(exc)}"


def is_graph_load_error(exc: BaseException) -> bool:
    """onnxruntime could not read the graph (not a provider failing to start)."""
    if not is_onnxruntime_error(exc):
        return False
    return type(exc).__name__ in GRAPH_LOAD_ERRORS or "load model" in str(exc).lower()


def graph_load_error(model_path: str | Path, exc: BaseException, exported_with: str | None = None) -> BundleError:
    """A graph onnxruntime cannot load, said with what to do (``exported_with``: the onnxruntime
    version of the export, from the manifest)."""
    here = ort.__version__
    if exported_with and exported_with != here:
        todo = (f"the bundle was exported and validated with onnxruntime {exported_with}: install that version or a "
                "newer one (pip install -U onnxruntime), or re-export the bundle with tommer-export under this one")
    else:
        todo = ("re-export the bundle with tommer-export (the graph file is damaged or was changed after export; "
                "its checksum in tommer.json was rewritten too)" if exported_with else
                "re-export it with tommer-export, or check that this onnxruntime is the newest")
    return BundleError(f"{model_path}: onnxruntime {here} cannot load this graph ({describe_error(exc)}): {todo}")


def graph_run_error(exc: BaseException, shape: tuple[int, ...], provider: str, batch_tokens: int | None = None) -> GraphRunError:
    """onnxruntime failed while running a batch: out of memory (with the options that shrink what one run
    holds) or anything else (with the batch and provider), instead of onnxruntime's traceback."""
    message = _first_line(exc)
    rows, width = (tuple(shape) + (0, 0))[:2]
    batch = f"a batch of {rows} x {width} tokens on the {provider} provider"
    if isinstance(exc, MemoryError) or any(sign in str(exc).lower() for sign in OUT_OF_MEMORY_SIGNS):
        budget = f" (now {batch_tokens})" if batch_tokens else ""
        return GraphRunError(f"out of memory running {batch} ({message}): lower --batch-tokens{budget} to run "
                             "smaller batches, --chunk-rows to hold fewer rows at once, or --max-tokens for shorter "
                             "windows; on a GPU, also check that no other process holds its memory")
    return GraphRunError(f"onnxruntime failed running {batch}: {describe_error(exc)}. Try --provider cpu "
                         "to tell a provider problem from a graph problem; re-export the bundle with tommer-export "
                         "if it persists")


_PRELOADED: list[bool] = []


def preload_gpu_libraries() -> bool:
    """Load the CUDA and cuDNN libraries that pip installed (onnxruntime-gpu's ``cuda`` and ``cudnn``
    extras), once per process, before the first GPU session.

    onnxruntime-gpu's CUDA provider library has no run path to the ``nvidia-*`` wheels' folders:
    without this, the provider fails to load unless they are on ``LD_LIBRARY_PATH``, and an
    ``auto`` session would fall back to the CPU. Returns whether ``onnxruntime.preload_dlls`` ran
    (onnxruntime-gpu 1.21 and later have it; the CPU package does not).
    """
    if not _PRELOADED:
        preload = getattr(ort, "preload_dlls", None)
        ran = False
        if preload is not None:
            try:
                preload(cuda=True, cudnn=True, msvc=False)
                ran = True
            except Exception as exc:  # the provider check then says what is missing and what to install
                warnings.warn(f"onnxruntime.preload_dlls failed ({describe_error(exc)}): the CUDA provider may not load",
                              RuntimeWarning, stacklevel=2)
        _PRELOADED.append(ran)
    return _PRELOADED[0]


def open_session(model_path: str | Path, provider: str = "auto", threads: int | Callable[[str], int] = 0,
                 low_memory: bool = False, kind: str | None = None, settings: Settings | None = None,
                 tensorrt_ready: bool = True, exported_with: str | None = None) -> tuple[ort.InferenceSession, str]:
    """A session on ``provider`` (``auto``: the first of tensorrt, cuda, cpu that really loads), and its name.

    ``kind`` (``fp32``, ``fp16``, ``bf16``, ``int8``; from the bundle's manifest) restricts the
    providers to those the graph suits. After creation the session's providers are checked:
    a named GPU provider that did not load raises ``InputError`` saying why; ``auto`` moves on
    to the next provider. ``low_memory`` skips the pre-packed copies of the weights.
    ``threads``: intra-op threads (0: onnxruntime's default), or a function of the provider
    tried (``cpu``, ``cuda``, ``tensorrt``) that gives them.

    A graph onnxruntime cannot load (damaged file, unknown operator or opset) raises
    ``BundleError`` at once, naming the file and what to do; ``exported_with`` is the
    onnxruntime version the bundle was exported with, for that message.
    """
    names = candidates(provider, ort.get_available_providers(), kind, tensorrt_ready)
    failures = []
    for name in names:
        if name in GPU_PROVIDERS:
            preload_gpu_libraries()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if low_memory:
            options.add_session_config_entry("session.disable_prepacking", "1")
        if int8_needs_exact_mode():  # int8 graphs on x86 CPUs without VNNI: see the function
            options.add_session_config_entry("session.x64quantprecision", "1")
        intra = threads(name) if callable(threads) else threads
        if intra > 0:
            options.intra_op_num_threads = intra
        options.add_session_config_entry("session.set_denormal_as_zero", "1")  # its intra-op threads: denormals.py
        placement.configure(options)  # inside placement.observe() (tommer-annotate --check): verbose placement log
        try:
            with denormals.kept():  # the first session of a process would set this thread's modes for good
                session = ort.InferenceSession(str(model_path), sess_options=options,
                                               providers=profile(name).providers(settings))
            check_loaded(name, session.get_providers())
            return session, name
        except InputError as exc:
            if provider != "auto":
                raise
            failures.append(str(exc))
        except Exception as exc:  # onnxruntime raises its own types for a provider that fails to start
            if is_graph_load_error(exc) or (name == "cpu" and is_onnxruntime_error(exc)):
                raise graph_load_error(model_path, exc, exported_with) from exc  # no provider reads it
            if provider != "auto" or name == "cpu":
                raise InputError(f"{model_path}: onnxruntime could not create a {name} session: "
                                 f"{describe_error(exc)}") from exc
            failures.append(f"{name}: {exc}")
    raise InputError("no provider could run the graph:\n" + "\n".join(f"  - {f}" for f in failures))


def create_session(model_path: str | Path, provider: str = "cpu", threads: int = 0,
                   low_memory: bool = False) -> ort.InferenceSession:
    """An inference session on ``provider`` (see ``open_session``)."""
    return open_session(model_path, provider, threads, low_memory)[0]


def run_band(session: ort.InferenceSession, input_ids: np.ndarray, attention_mask: np.ndarray,
             run_options: ort.RunOptions | None = None) -> np.ndarray:
    """Span probabilities (batch, seq, band_width) as fp32.

    ``run_options.terminate = True``, set from another thread, stops a run in flight.
    """
    (band,) = session.run(None, {"input_ids": input_ids, "attention_mask": attention_mask}, run_options)
    return np.asarray(band, dtype=np.float32)


class GraphRunner:
    """Runs the graph on padded ``(rows, width)`` batches, through IO binding.

    Buffers are made once per batch shape and reused: on the CPU the output band is a
    pre-allocated array the graph writes into; on CUDA the inputs and the output live on
    the device (one host-to-device copy of the ids and mask, one device-to-host copy of
    the band per batch). With ``cuda_graphs`` (the session must have been created with
    CUDA graphs on), each shape listed in ``graph_shapes`` gets its own ``gpu_graph_id``,
    captured on its first runs and replayed after; other shapes run without a graph.
    The returned band is only valid until the next call with the same shape.

    Shapes without a graph keep their buffers in a least-recently-used cache of
    ``max_shapes`` entries (unbucketed batches have a shape each: an unbounded cache would
    grow with the corpus); a CUDA graph's buffers are never dropped (its replay reads
    their addresses).
    """

    def __init__(self, session: ort.InferenceSession, provider: str, io_binding: bool = True,
                 cuda_graphs: bool = False, graph_shapes: list[tuple[int, int]] | None = None,
                 input_names: tuple[str, str] = ("input_ids", "attention_mask"), max_shapes: int = 32):
        self.session = session
        self.provider = provider
        self.io_binding = io_binding or cuda_graphs
        self.device = "cuda" if provider in GPU_PROVIDERS else "cpu"
        self.cuda_graphs = cuda_graphs and self.device == "cuda"
        self.input_names = input_names
        if self.io_binding:
            self.output_name = session.get_outputs()[0].name
            self.band_width = session.get_outputs()[0].shape[-1]
        self._graph_ids = {tuple(s): i for i, s in enumerate(graph_shapes or [])} if self.cuda_graphs else {}
        self._buffers: OrderedDict[tuple[int, int], dict] = OrderedDict()
        self.max_shapes = max_shapes
        self._plain_options = ort.RunOptions()
        self._terminated = False

    def _all_run_options(self) -> list[ort.RunOptions]:
        return [self._plain_options, *(b["run_options"] for b in self._buffers.values())]

    def terminate(self) -> None:
        """Stop the run in flight (from another thread) and every later one, until ``reset``."""
        self._terminated = True
        for options in self._all_run_options():
            options.terminate = True

    def reset(self) -> None:
        self._terminated = False
        for options in self._all_run_options():
            options.terminate = False

    def _buffers_for(self, shape: tuple[int, int]) -> dict:
        buf = self._buffers.get(shape)
        if buf is None:
            band_shape = (*shape, int(self.band_width))
            binding = self.session.io_binding()
            run_options = ort.RunOptions()
            run_options.terminate = self._terminated
            buf = {"binding": binding, "run_options": run_options}
            if self.device == "cuda":
                ids = ort.OrtValue.ortvalue_from_shape_and_type(shape, np.int64, "cuda", 0)
                mask = ort.OrtValue.ortvalue_from_shape_and_type(shape, np.int64, "cuda", 0)
                out = ort.OrtValue.ortvalue_from_shape_and_type(band_shape, np.float32, "cuda", 0)
                binding.bind_ortvalue_input(self.input_names[0], ids)
                binding.bind_ortvalue_input(self.input_names[1], mask)
                binding.bind_ortvalue_output(self.output_name, out)
                buf.update(ids=ids, mask=mask, out=out)
                if self.cuda_graphs:
                    run_options.add_run_config_entry("gpu_graph_id", str(self._graph_ids.get(shape, -1)))
            else:
                out = np.empty(band_shape, dtype=np.float32)
                binding.bind_output(self.output_name, "cpu", 0, np.float32, list(band_shape), out.ctypes.data)
                buf.update(out=out)
            self._buffers[shape] = buf
            evictable = [k for k in self._buffers if k not in self._graph_ids]
            for old in evictable[: max(0, len(evictable) - self.max_shapes)]:
                del self._buffers[old]
        else:
            self._buffers.move_to_end(shape)
        return buf

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Span probabilities (rows, width, band_width) as fp32."""
        if self.device == "cpu":
            with denormals.flushed():  # the graph runs on this thread: see denormals.py
                return self._run(input_ids, attention_mask)
        return self._run(input_ids, attention_mask)

    def _run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        if not self.io_binding:
            return run_band(self.session, input_ids, attention_mask, self._plain_options)
        rows, width = (int(d) for d in input_ids.shape)
        buf = self._buffers_for((rows, width))
        binding = buf["binding"]
        if self.device == "cuda":
            buf["ids"].update_inplace(np.ascontiguousarray(input_ids))
            buf["mask"].update_inplace(np.ascontiguousarray(attention_mask))
            self.session.run_with_iobinding(binding, buf["run_options"])
            return buf["out"].numpy()
        input_ids = np.ascontiguousarray(input_ids)
        attention_mask = np.ascontiguousarray(attention_mask)
        binding.bind_cpu_input(self.input_names[0], input_ids)
        binding.bind_cpu_input(self.input_names[1], attention_mask)
        self.session.run_with_iobinding(binding, buf["run_options"])
        return buf["out"]
