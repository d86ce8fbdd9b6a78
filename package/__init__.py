"""tommer: fast, exact entity-mention detection with ToMMeR over ONNX Runtime.

The public runtime API (no torch needed)::

    from tommer import Annotator, Mention
    Annotator.from_bundle("bundle").annotate(["John lives in New York City."])
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tommer")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

from .runtime.annotator import AnnotateOptions, Annotator  # noqa: E402
from .runtime.bundle import Manifest, read_manifest  # noqa: E402
from .runtime.errors import BundleError, ExportError, InputError, ParityError, TommerError  # noqa: E402
from .runtime.mentions import Mention  # noqa: E402

__all__ = ["__version__", "AnnotateOptions", "Annotator", "BundleError", "ExportError", "InputError", "Manifest",
           "Mention", "ParityError", "TommerError", "read_manifest"]
