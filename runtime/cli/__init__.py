"""Command-line faces: thin Typer commands that build the options once and call one engine.

May import every other layer; nothing imports it but the entry points (``exporter/cli.py``
and ``benchmarks/`` borrow ``common``)."""

from .common import choices

__all__ = ["choices"]
