"""Flush denormal floats to zero on the threads that run the graph on the CPU.

Why: the causal attention of the backbone gives its masked scores onnxruntime's mask
value, and the softmax of those rows makes subnormal (denormal) floats. x86 CPUs handle
subnormals in microcode, about 100 times slower than normal floats: onnxruntime's CPU
``Attention`` ran 1.9x slower on 64-token windows because of them, and a ``Softmax`` over
causally masked rows 4.5x slower than over the same rows unmasked
(``benchmarks/experiments/denormals.py``). With the CPU's flush-to-zero (FTZ) and
denormals-are-zero (DAZ) modes, values under 1.2e-38 count as 0, which changes no span.

onnxruntime's ``session.set_denormal_as_zero`` sets the modes on its own intra-op
threads, and on the thread that creates the first session of the process (once). It
never sets them on a thread that calls ``run`` later. With one intra-op thread per stream
(``providers.stream_threads``), the graph runs on tommer's stream threads, so we set the
modes around each run, and restore what the thread had before.

The modes live in the MXCSR register of x86-64 CPUs. We read and write the thread's
floating-point environment with the C library's ``fegetenv``/``fesetenv`` (glibc's
``fenv_t`` on x86-64 is 32 bytes, MXCSR in its last 4). Elsewhere (other C libraries,
other CPUs) ``supported()`` is False and nothing is changed: results are the same, only
slower where subnormals occur.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import platform
import sys
from collections.abc import Iterator

import numpy as np

FTZ_DAZ = 0x8040  # MXCSR bits: flush to zero (15), denormals are zero (6)
_FENV_WORDS = 16  # glibc x86-64 fenv_t is 8 words (x87 environment, 28 bytes, then MXCSR); room to spare
_MXCSR_WORD = 7


@functools.cache
def _libm() -> ctypes.CDLL | None:
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return None
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        libm = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
    except OSError:
        return None
    env = (ctypes.c_uint32 * _FENV_WORDS)()
    if libm.fegetenv(env) != 0:
        return None
    return libm


def _checked_libm() -> ctypes.CDLL:
    libm = _libm()
    if libm is None:
        raise RuntimeError("the floating-point environment cannot be read here (no glibc x86-64 libm)")
    return libm


def _get() -> ctypes.Array:
    env = (ctypes.c_uint32 * _FENV_WORDS)()
    _checked_libm().fegetenv(env)
    return env


def _set(env: ctypes.Array) -> None:
    _checked_libm().fesetenv(env)


def _set_flushing(saved: ctypes.Array) -> None:
    """Set ``saved`` (this thread's environment) with FTZ and DAZ on."""
    env = type(saved).from_buffer_copy(saved)
    env[_MXCSR_WORD] |= FTZ_DAZ
    _set(env)


def _flushes() -> bool:
    """Whether this thread now flushes: a subnormal input reads as 0 (DAZ)."""
    tiny = np.array([1e-39], dtype=np.float32)  # subnormal
    return bool((tiny * np.float32(1.0))[0] == 0.0)


@functools.cache
def supported() -> bool:
    """Whether this platform's floating-point modes can be set here (checked once, then restored)."""
    if _libm() is None:
        return False
    saved = _get()
    try:
        _set_flushing(saved)
        works = _flushes()
    finally:
        _set(saved)
    return works and not _flushes()


@contextlib.contextmanager
def flushed() -> Iterator[bool]:
    """Flush denormals to zero on this thread inside the block; yields whether it could."""
    if not supported():
        yield False
        return
    saved = _get()
    _set_flushing(saved)
    try:
        yield True
    finally:
        _set(saved)


@contextlib.contextmanager
def kept() -> Iterator[None]:
    """Restore this thread's floating-point modes after the block (onnxruntime's first session
    sets FTZ/DAZ on the thread that creates it, for good: the caller's own numbers keep theirs)."""
    if not supported():
        yield
        return
    saved = _get()
    try:
        yield
    finally:
        _set(saved)
