"""Which files are the inputs, and where each one's output goes."""

from __future__ import annotations

import glob
import os
from collections import Counter
from pathlib import Path, PurePosixPath

from ..errors import InputError
from .jsonl import jsonl_stem
from .locations import RemotePath, as_location

OUTPUT_SUFFIX = ".mentions.parquet"


def _is_parquet(name: str) -> bool:
    return name.lower().endswith(".parquet")


def corpus_file(name: str) -> bool:
    """A file ``tommer-annotate`` reads: Parquet or JSON Lines (plain or compressed)."""
    return _is_parquet(name) or jsonl_stem(name) is not None


def _stem(name: str) -> str:
    """``x`` of ``x.parquet``, ``x.jsonl``, ``x.json.gz``, ...; other names unchanged."""
    stem = jsonl_stem(name)
    return stem if stem is not None else name.removesuffix(".parquet")


def _hidden(path: Path, root: Path) -> bool:
    """Hidden or underscore-prefixed below ``root`` (pyarrow's dataset convention: parts, _SUCCESS, ...)."""
    return any(part.startswith((".", "_")) for part in path.relative_to(root).parts)


def resolve_inputs(source: str, output: str | None = None,
                   accept=_is_parquet) -> tuple[list[Path], Path | None]:
    """Input files (sorted) and the folder their relative output names start from (None: one file).

    A folder gives the files whose names ``accept`` takes (Parquet by default; ``corpus_file``
    adds JSON Lines).

    Hidden and underscore-prefixed files and folders are skipped, and so is everything under
    ``output``: an output folder inside the input folder is never read back as input.
    """
    path = as_location(source)
    remote = isinstance(path, RemotePath)
    order = (lambda p: PurePosixPath(p.path)) if remote else None
    if path.is_file():
        return [path], None
    if path.is_dir():
        below = path.files_below() if remote else (p for p in path.rglob("*") if p.is_file())
        files = sorted((p for p in below if accept(p.name) and not _hidden(p, path)), key=order)
        root: Path | RemotePath | None = path
    else:
        if remote:
            files = sorted(path.glob(), key=order)
            root = RemotePath(path.fs, os.path.commonpath([p.parent.path for p in files])) if files else None
        else:
            files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
            root = Path(os.path.commonpath([str(p.parent) for p in files])) if files else None
        files = [f for f in files if not _hidden(f, root)]
    if output is not None:
        out = as_location(output).resolve()
        files = [f for f in files if f.resolve() != out and out not in f.resolve().parents]
    if not files:
        kinds = "*.parquet" if accept is _is_parquet else "*.parquet, *.jsonl, *.ndjson or *.json (.gz, .zst, .bz2)"
        raise InputError(f"{source}: no Parquet file found (expected a file, a folder of {kinds} or a glob; "
                         "hidden and _-prefixed files and the output location are skipped)")
    return files, root


def output_paths(files: list[Path], root: Path | None, output: str | None) -> list[Path]:  # or RemotePath
    """Where each input's output goes; a folder input keeps relative names under ``output``.

    A folder or glob that matched exactly one file is treated like that file.
    """
    if len(files) == 1:
        root = None
    if output is None:
        if root is not None:
            raise InputError("several input files: pass --output FOLDER for their outputs")
        return [files[0].with_name(_stem(files[0].name) + OUTPUT_SUFFIX)]
    out = as_location(output)
    if root is not None and out.suffix == ".parquet":
        raise InputError(f"--output {output} names one Parquet file, but there are {len(files)} input files "
                         f"({files[0]}, {files[1]}, ...): pass a folder for their outputs")
    if root is None and out.suffix == ".parquet":
        return [out]
    if root is None:
        return [out / (_stem(files[0].name) + ".parquet")]
    outs = [out / f.relative_to(root).with_name(_stem(f.name) + ".parquet") for f in files]
    clashes = sorted(str(o) for o, n in Counter(outs).items() if n > 1)
    if clashes:
        raise InputError(f"several inputs would be written to the same output ({', '.join(clashes)}): "
                         "give them distinct names or annotate them separately")
    return outs
