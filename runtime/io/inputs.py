"""Which files are the inputs, and where each one's output goes.

Inputs: one or several sources, each a file, a folder (every input file below it) or a glob;
several sources (an unquoted glob the shell expanded, or names listed) are one set of
inputs, like a quoted glob. Outputs are Parquet:

- one input file: ``--output NAME.parquet``, or a folder (``--output out/``, a name ending in
  ``/``, or a folder that exists) to write ``out/<name>.parquet``; any other name
  (``result.jsonl``, ``result.csv``, ``result``) is an error; without ``--output``,
  ``<name>.mentions.parquet`` beside the input;
- a folder, a glob or several sources: ``--output FOLDER`` (with or without the ``/``), one
  output per input with the same relative names; ``--output NAME.parquet`` only when they
  matched a single file.
"""

from __future__ import annotations

import glob
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from ..errors import InputError, collect_and_raise
from .jsonl import jsonl_stem
from .locations import Location, RemotePath, as_location, open_input
from .sources import FORMATS_HELP

OUTPUT_SUFFIX = ".mentions.parquet"
PARQUET_MAGIC = b"PAR1"
GLOB_CHARACTERS = "*?["
# Names that look like a data file rather than a folder (for --output of several inputs)
FILE_LIKE_SUFFIXES = (".csv", ".tsv", ".txt", ".json", ".jsonl", ".ndjson", ".gz", ".zst", ".bz2", ".arrow",
                      ".feather", ".html")


def _is_parquet(name: str) -> bool:
    return name.lower().endswith(".parquet")


def corpus_file(name: str) -> bool:
    """A file ``tommer-annotate`` reads: Parquet or JSON Lines (plain or compressed)."""
    return _is_parquet(name) or jsonl_stem(name) is not None


def _stem(name: str) -> str:
    """``x`` of ``x.parquet``, ``x.jsonl``, ``x.json.gz``, ...; other names unchanged."""
    stem = jsonl_stem(name)
    return stem if stem is not None else name.removesuffix(".parquet")


def _hidden(path: Location, root: Location) -> bool:
    """Hidden or underscore-prefixed below ``root`` (pyarrow's dataset convention: parts, _SUCCESS, ...)."""
    return any(part.startswith((".", "_")) for part in path.relative_to(root).parts)  # type: ignore[arg-type]


def _kinds(accept) -> str:
    return "Parquet (.parquet)" if accept is _is_parquet else FORMATS_HELP


def _posix(path: Location) -> PurePosixPath:
    """The sort key of inputs: local and remote paths alike."""
    return PurePosixPath(path.path if isinstance(path, RemotePath) else path.as_posix())


def _one_source(source: str, accept) -> tuple[list[Location], Location | None, str | None]:
    """The files of one source, the folder their relative names start from (None: one file), and
    why there are none (None when there are some)."""
    path = as_location(source)
    if path.is_file():
        return [path], None, None
    if path.is_dir():
        below: list[Location] = (list(path.files_below()) if isinstance(path, RemotePath)
                                 else [p for p in path.rglob("*") if p.is_file()])
        files = sorted((p for p in below if accept(p.name) and not _hidden(p, path)), key=_posix)
        why = (f"{source}: no {_kinds(accept)} file in this folder (hidden and _-prefixed files and folders are "
               "skipped)")
        return files, path, None if files else why
    if not any(c in source for c in GLOB_CHARACTERS):
        return [], None, f"{source}: does not exist (expected a {_kinds(accept)} file, a folder of them or a glob)"
    root: Location | None
    matched: list[Location]
    if isinstance(path, RemotePath):
        remote = sorted(path.glob(), key=_posix)
        root = RemotePath(path.fs, os.path.commonpath([p.parent.path for p in remote])) if remote else None
        matched = list(remote)
    else:
        local = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        root = Path(os.path.commonpath([str(p.parent) for p in local])) if local else None
        matched = list(local)
    files = [f for f in matched if root is None or not _hidden(f, root)]
    why = f"{source}: no file matches this pattern (hidden and _-prefixed files are skipped)"
    return files, root, None if files else why


def _common_root(roots: list) -> Path | RemotePath:
    """The folder every root lies in (several sources' relative names start there)."""
    if all(isinstance(r, RemotePath) for r in roots):
        if len({type(r.fs) for r in roots}) > 1:
            raise InputError(f"the inputs are on different filesystems ({', '.join(map(str, roots))}): annotate "
                             "each filesystem's files separately")
        return RemotePath(roots[0].fs, os.path.commonpath([r.path for r in roots]))
    if any(isinstance(r, RemotePath) for r in roots):
        raise InputError(f"the inputs mix local files and URLs ({', '.join(map(str, roots))}): annotate them "
                         "separately")
    try:
        return Path(os.path.commonpath([str(r) for r in roots]))
    except ValueError:  # absolute and relative names mixed
        return Path(os.path.commonpath([os.path.abspath(r) for r in roots]))


def resolve_inputs(source: str | Sequence[str], output: str | None = None,
                   accept=_is_parquet) -> tuple[list, Path | RemotePath | None]:
    """Input files (sorted) and the folder their relative output names start from (None: one input file).

    ``source``: one source or several (see the module's docstring); several are one set of
    inputs, their relative names starting from the folder they all lie in. A folder gives the
    files whose names ``accept`` takes (Parquet by default; ``corpus_file`` adds JSON Lines).

    Hidden and underscore-prefixed files and folders are skipped, and so is everything under
    ``output``: an output folder inside the input folder is never read back as input.

    Raises:
        InputError: naming every source that gives no file (does not exist, no match, an empty folder).
    """
    sources = [source] if isinstance(source, str) else list(source)
    if not sources:
        raise InputError("no input given: pass a file, a folder or a glob")
    found = [_one_source(s, accept) for s in sources]
    problems = [why for _, _, why in found if why]
    if len(sources) == 1 and problems:
        raise InputError(problems[0])
    collect_and_raise(problems, InputError, "cannot annotate")
    if len(sources) == 1:
        files, root, _ = found[0]
    else:
        absolute = len({os.path.isabs(str(f)) for fs, _, _ in found for f in fs if isinstance(f, Path)}) > 1
        unique: dict[str, Path | RemotePath] = {}
        for fs, _, _ in found:
            for f in fs:
                f = Path(os.path.abspath(f)) if absolute and isinstance(f, Path) else f
                unique.setdefault(str(f), f)
        roots = [r if r is not None else fs[0].parent for fs, r, _ in found]
        root = _common_root([Path(os.path.abspath(r)) if absolute and isinstance(r, Path) else r for r in roots])
        files = sorted(unique.values(), key=_posix)
    if output is not None:
        out = as_location(output).resolve()
        files = [f for f in files if f.resolve() != out and out not in f.resolve().parents]
        if not files:
            raise InputError(f"{' '.join(sources)}: no input left once the output location ({output}) is skipped")
    return files, root


def format_problem(path: Path | RemotePath) -> str | None:
    """Why ``path`` is no input ``tommer-annotate`` reads (not Parquet nor JSON Lines), with how to convert it;
    None if it is one. A Parquet file under another name (no ``.parquet``) is read: its first bytes tell."""
    if corpus_file(path.name):
        return None
    try:
        with open_input(path) as fh:
            if fh.read(len(PARQUET_MAGIC)) == PARQUET_MAGIC:
                return None
    except OSError:
        return None  # the reader says why it cannot be read
    name, lower = path.name, path.name.lower()
    target = f"{name.rsplit('.', 1)[0] if '.' in name else name}.parquet"
    if lower.endswith((".csv", ".tsv")):
        delimiter = ", parse_options=csv.ParseOptions(delimiter='\\t')" if lower.endswith(".tsv") else ""
        how = (f"python -c \"import pyarrow.csv as csv, pyarrow.parquet as pq; "
               f"pq.write_table(csv.read_csv('{name}'{delimiter}), '{target}')\"")
    elif lower.endswith(".txt"):
        how = (f"one text per line: python -c \"import pyarrow as pa, pyarrow.parquet as pq; "
               f"pq.write_table(pa.table({{'text': open('{name}', encoding='utf-8').read().splitlines()}}), "
               f"'{target}')\"")
    else:
        how = "pyarrow.parquet.write_table, or pandas' DataFrame.to_parquet"
    return f"{path}: not an input tommer-annotate reads; it reads {FORMATS_HELP}. Convert it first, e.g. {how}"


def _looks_like_a_file(name: str) -> bool:
    return name.lower().endswith(FILE_LIKE_SUFFIXES)


def output_paths(files: list, root: Path | RemotePath | None, output: str | None) -> list:
    """Where each input's output goes (rules in the module's docstring).

    ``root`` None: one input file; otherwise a folder, a glob or several sources, whose outputs keep
    their relative names under ``output``.

    Raises:
        InputError: an output name that is not Parquet for one input, one Parquet file for several,
            or two inputs that would share an output.
    """
    if output is None:
        if root is not None and len(files) > 1:
            raise InputError("several input files: pass --output FOLDER/ for their outputs")
        return [files[0].with_name(_stem(files[0].name) + OUTPUT_SUFFIX)]
    out = as_location(output)
    slash = output.endswith("/")
    if _is_parquet(out.name) and not slash:
        if len(files) == 1:
            return [out]
        raise InputError(f"--output {output} names one Parquet file, but there are {len(files)} input files "
                         f"({files[0]}, {files[1]}, ...): pass a folder for their outputs (--output out/)")
    if root is None:
        if not (slash or out.is_dir()):
            folder = _parquet_name(output).removesuffix(".parquet")
            raise InputError(f"--output {output}: outputs are Parquet: pass a file name ending in .parquet "
                             f"(--output {folder}.parquet) or a folder ending in / (--output {folder}/ writes "
                             f"{folder}/{_stem(files[0].name)}.parquet)")
        return [out / (_stem(files[0].name) + ".parquet")]
    if not slash and _looks_like_a_file(out.name) and not out.is_dir():
        raise InputError(f"--output {output} looks like a file name, but the outputs of a folder, a glob or "
                         "several inputs go in a folder, one Parquet file per input: pass a folder "
                         f"(--output {_parquet_name(output).removesuffix('.parquet')}/)")
    outs = [out / f.relative_to(root).with_name(_stem(f.name) + ".parquet") for f in files]
    clashes = sorted(str(o) for o, n in Counter(outs).items() if n > 1)
    if clashes:
        raise InputError(f"several inputs would be written to the same output ({', '.join(clashes)}): "
                         "give them distinct names or annotate them separately")
    return outs


def _parquet_name(output: str) -> str:
    """``result.jsonl`` -> ``result.parquet``; ``result`` -> ``result.parquet``."""
    name = output.rstrip("/")
    stem = jsonl_stem(name)
    if stem is None:
        head, _, tail = name.rpartition("/")
        stem = (head + "/" if head else "") + (tail.rsplit(".", 1)[0] if "." in tail else tail)
    return stem + ".parquet"
