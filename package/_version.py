"""The installed tommer version, in a leaf module that every layer may import."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tommer")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"
