"""What every command-line face shares (``tommer-annotate``, ``tommer-eval``, ``tommer-show``,
``tommer-export``, ``tommer-bench``, ``tommer-bench-feed``): Typer choices from the runtime's
constants, ``--version``, and a usage line that names arguments the way the help does."""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import Enum
from typing import Any, Optional

import typer
from typer.core import TyperCommand


def choices(name: str, values: Iterable[str]) -> type[Enum]:
    """A ``str`` Enum of ``values`` for a Typer option, so the CLI's choices are the runtime's constants."""
    return Enum(name, {v: v for v in values}, type=str, module=__name__)  # type: ignore[return-value]


def version_text() -> str:
    """``tommer <version>``: what ``--version`` prints."""
    from tommer._version import __version__

    return f"tommer {__version__}"


def _print_version(value: Optional[bool]) -> None:
    if value:
        typer.echo(version_text())
        raise typer.Exit()


def version_option() -> Any:
    """The ``--version`` flag of every command: eager, so it works without the required arguments."""
    return typer.Option(None, "--version", callback=_print_version, is_eager=True,
                        help="Print tommer's version and exit.")


class Command(TyperCommand):
    """A Typer command whose usage line reads ``[OPTIONS] SOURCE`` (Typer writes ``{source}``)."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        def plain(piece: str) -> str:
            m = re.fullmatch(r"\{(.+)\}(\.\.\.)?", piece)
            return m.group(1).upper() + (m.group(2) or "") if m else piece

        return [plain(p) for p in super().collect_usage_pieces(ctx)]
