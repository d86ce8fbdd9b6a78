"""tommer: fast, exact entity-mention detection with ToMMeR over ONNX Runtime."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tommer")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
