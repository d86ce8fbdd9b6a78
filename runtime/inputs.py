"""Which files are the inputs, and where each one's output goes."""

from __future__ import annotations

import glob
import os
from pathlib import Path

from .errors import InputError

OUTPUT_SUFFIX = ".mentions.parquet"


def _hidden(path: Path, root: Path) -> bool:
    """Hidden or underscore-prefixed below ``root`` (pyarrow's dataset convention: parts, _SUCCESS, ...)."""
    return any(part.startswith((".", "_")) for part in path.relative_to(root).parts)


def resolve_inputs(source: str, output: str | None = None) -> tuple[list[Path], Path | None]:
    """Input files (sorted) and the folder their relative output names start from (None: one file).

    Hidden and underscore-prefixed files and folders are skipped, and so is everything under
    ``output``: an output folder inside the input folder is never read back as input.
    """
    path = Path(source)
    if path.is_file():
        return [path], None
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.parquet") if p.is_file() and not _hidden(p, path))
        root: Path | None = path
    else:
        files = sorted(Path(p) for p in glob.glob(source, recursive=True) if Path(p).is_file())
        root = Path(os.path.commonpath([str(p.parent) for p in files])) if files else None
        files = [f for f in files if not _hidden(f, root)]
    if output is not None:
        out = Path(output).resolve()
        files = [f for f in files if f.resolve() != out and out not in f.resolve().parents]
    if not files:
        raise InputError(f"{source}: no Parquet file found (expected a file, a folder of *.parquet or a glob; "
                         "hidden and _-prefixed files and the output location are skipped)")
    return files, root


def output_paths(files: list[Path], root: Path | None, output: str | None) -> list[Path]:
    """Where each input's output goes; a folder input keeps relative names under ``output``.

    A folder or glob that matched exactly one file is treated like that file.
    """
    if len(files) == 1:
        root = None
    if output is None:
        if root is not None:
            raise InputError("several input files: pass --output FOLDER for their outputs")
        return [files[0].with_name(files[0].name.removesuffix(".parquet") + OUTPUT_SUFFIX)]
    out = Path(output)
    if root is None and out.suffix == ".parquet":
        return [out]
    if root is None:
        return [out / files[0].name]
    return [out / f.relative_to(root) for f in files]
