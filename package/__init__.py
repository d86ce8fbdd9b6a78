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
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("tommer")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

_LAZY = {
    "AnnotateOptions": ".runtime.annotator", "Annotator": ".runtime.annotator",
    "Manifest": ".runtime.bundle", "read_manifest": ".runtime.bundle",
    "BundleError": ".runtime.errors", "ExportError": ".runtime.errors", "InputError": ".runtime.errors",
    "ParityError": ".runtime.errors", "TommerError": ".runtime.errors",
    "Mention": ".runtime.mentions",
}

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load on first use
    from .runtime.annotator import AnnotateOptions, Annotator
    from .runtime.bundle import Manifest, read_manifest
    from .runtime.errors import BundleError, ExportError, InputError, ParityError, TommerError
    from .runtime.mentions import Mention


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tommer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = ["__version__", *_LAZY]
