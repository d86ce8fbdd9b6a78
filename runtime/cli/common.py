"""What every command-line face shares (``tommer-annotate``, ``tommer-eval``, ``tommer-show``,
``tommer-export``, ``tommer-bench``): Typer choices from the runtime's constants."""

from __future__ import annotations

from enum import Enum
from typing import Iterable


def choices(name: str, values: Iterable[str]) -> type[Enum]:
    """A ``str`` Enum of ``values`` for a Typer option, so the CLI's choices are the runtime's constants."""
    return Enum(name, {v: v for v in values}, type=str, module=__name__)  # type: ignore[return-value]
