"""Typed errors for failures a user can act on.

Every message says what was expected, what was found and what to do.
"""

from __future__ import annotations


class TommerError(Exception):
    """Base class of every error tommer raises on purpose."""


class BundleError(TommerError):
    """A bundle folder is missing, incomplete, tampered with or of another format."""


class ParityError(TommerError):
    """An exported graph disagrees with the reference maths beyond tolerance."""


class InputError(TommerError):
    """A user input (file, column, row, option) is not what it must be."""


class ExportError(TommerError):
    """A model cannot be exported as asked (architecture, layer, head, access)."""


class GraphRunError(TommerError):
    """onnxruntime failed while running the graph (out of memory, a provider error)."""


class Interrupted(KeyboardInterrupt):
    """A stop asked by a signal (SIGINT: Ctrl-C, SIGTERM: schedulers); ``kept`` says what finished work remains."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
        self.kept: list[str] = []


class Cancelled(TommerError):
    """The annotator was cancelled (``Annotator.cancel``) while it ran the graph."""


def collect_and_raise(problems: list[str], error: type[TommerError], title: str) -> None:
    """Raise ``error`` once with every problem listed, if there is any."""
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise error(f"{title}:\n{lines}")
