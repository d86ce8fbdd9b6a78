"""tommer: fast, exact entity-mention detection with ToMMeR over ONNX Runtime.

The public runtime API (no torch needed)::

    from tommer import Annotator, Mention
    Annotator.from_bundle("bundle").annotate(["John lives in New York City."])

``import tommer`` is light: the names below are imported on first use, so command-line
tools that need neither onnxruntime nor pyarrow (``tommer-export --help``, ``tommer-eval``
without a model) start without them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

_LAZY = {
    "AnnotateOptions": ".runtime.options", "Annotator": ".runtime.annotator",
    "Manifest": ".runtime.bundle", "read_manifest": ".runtime.bundle",
    "BundleError": ".runtime.errors", "ExportError": ".runtime.errors", "InputError": ".runtime.errors",
    "ParityError": ".runtime.errors", "TommerError": ".runtime.errors",
    "Mention": ".runtime.core.mentions", "RunOptions": ".runtime.options",
}

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load on first use
    from .runtime.annotator import Annotator
    from .runtime.bundle import Manifest, read_manifest
    from .runtime.core.mentions import Mention
    from .runtime.errors import BundleError, ExportError, InputError, ParityError, TommerError
    from .runtime.options import AnnotateOptions, RunOptions


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tommer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = ["__version__", *_LAZY]
