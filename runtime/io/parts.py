"""The part store of one output: numbered Parquet parts in a hidden folder, then the output.

Input rows ``[k * chunk_rows, (k + 1) * chunk_rows)`` go to part k, written under a
temporary name and renamed when complete, in a hidden folder beside the output with a small
progress manifest (``progress.json``) holding the run's fingerprint (the options that shape
the output) and the input's identity. When every part is there, they are joined into the
output (again through a temporary name) and the folder is removed. A resume continues after
the last complete part; the chunking does not depend on the interruption and a row's
mentions do not depend on its batch, so the result equals an uninterrupted run.

An interrupted run also leaves, for a chunk whose part it did not write, the model work it
had done as ``part-000012.partial.npz`` (numpy arrays, written whole or not at all: the
windows whose batches finished and their hits, see ``core/partial.py``); a resume runs only
the other windows of that chunk. Both live under the same ``progress.json``, so the same
fingerprint and input checks cover them.

``fingerprint_problem`` is the one check of a resume against what an earlier run used, for
parts and for finished outputs alike.
"""

from __future__ import annotations

import json
import re
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..options import FLAGS, flag_value
from .identity import identity_problem
from .locations import RemotePath, atomic_writer, open_input, remove_tree

PROGRESS_NAME = "progress.json"
PART_DIGITS = 6


def part_name(index: int) -> str:
    """The name of part ``index`` (both engines: ``part-000012.parquet``)."""
    return f"part-{index:0{PART_DIGITS}d}.parquet"


def partial_name(index: int) -> str:
    """The name of the kept batches of chunk ``index`` (``part-000012.partial.npz``)."""
    return f"part-{index:0{PART_DIGITS}d}.partial.npz"


_PARTIAL = re.compile(r"part-(\d+)\.partial\.npz")


def fingerprint_problem(where: Path | RemotePath, then: dict[str, Any] | None, now: dict[str, Any],
                        what: str) -> str | None:
    """Why a run with fingerprint ``now`` cannot continue or keep what ``what`` wrote with ``then``.

    Every differing option is named with its flag and both values. ``then`` None (an output
    written before fingerprints were recorded) is a problem too: nothing says how it was made.
    """
    if then is None:
        return (f"{where}: cannot resume, {what} recorded no options (written by an older tommer): pass "
                "--overwrite to redo it")
    diff = [k for k in now if then.get(k) != now[k]]
    if not diff:
        return None
    used = ", ".join(f"{FLAGS.get(k, k)} {flag_value(then.get(k))} (now {flag_value(now[k])})" for k in diff)
    return (f"{where}: cannot resume, {what} used {used}: pass the same values to continue, or --overwrite "
            "to start again")


class PartStore:
    """The hidden folder of an output's parts, and its progress manifest."""

    def __init__(self, output: Path | RemotePath, fingerprint: dict[str, Any],
                 identity: dict[str, Any] | None = None):
        self.output = output
        self.folder = output.with_name(f".{output.name}.parts")
        self.fingerprint = fingerprint
        self.identity = identity

    @property
    def started(self) -> bool:
        """Whether an earlier run left a progress manifest (and maybe parts)."""
        return (self.folder / PROGRESS_NAME).is_file()

    def resume_problem(self, source: Path | RemotePath) -> str | None:
        """Why the interrupted run's parts cannot be continued (other options, changed input), or None."""
        if not self.started:
            return None
        saved = json.loads((self.folder / PROGRESS_NAME).read_text())
        return (fingerprint_problem(self.output, saved.get("fingerprint", {}), self.fingerprint,
                                    "the interrupted run")
                or identity_problem(source, saved.get("input"), self.identity or {}, "the interrupted run started"))

    def start(self, resume: bool) -> int:
        """Prepare the folder; returns how many parts are complete (0 unless resuming)."""
        if resume and self.started:
            return self.finished_parts()
        remove_tree(self.folder)
        self.folder.mkdir(parents=True)
        write_atomic(self.folder / PROGRESS_NAME, json.dumps(
            {"fingerprint": self.fingerprint, "input": self.identity, "started": time.time()}, indent=2))
        return 0

    def finished_parts(self) -> int:
        """How many consecutive parts, from part 0, are complete and readable with the expected rows.

        A part is renamed into place only when written whole, so a present part is complete; its
        footer and row count are still checked (cheap: metadata only), and a part that fails is
        redone with every later one.
        """
        rows = self.fingerprint.get("chunk_rows")
        done = 0
        while (self.folder / part_name(done)).is_file():
            try:
                with open_input(self.folder / part_name(done)) as fh:
                    n = pq.read_metadata(fh).num_rows
            except (pa.ArrowException, OSError):
                break
            if rows is not None and n > rows:
                break
            done += 1
            if rows is not None and n < rows:  # a short part is the file's last one
                break
        return done

    def discard(self) -> None:
        """Remove the parts folder (a run killed after renaming the output, before this removal)."""
        remove_tree(self.folder)

    def write(self, index: int, table: pa.Table) -> None:
        with atomic_writer(self.folder / part_name(index)) as fh:
            pq.write_table(table, fh)

    def write_partial(self, index: int, arrays: dict[str, np.ndarray]) -> Path | RemotePath:
        """Keep the model work done on chunk ``index`` (arrays, no pickle); returns the file's path."""
        path = self.folder / partial_name(index)
        with atomic_writer(path) as fh:
            payload: dict[str, Any] = {"chunk": np.int64(index), **arrays}
            np.savez(fh, **payload)
        return path

    def read_partial(self, index: int) -> dict[str, np.ndarray] | None:
        """The arrays kept for chunk ``index``, or None if there are none or they cannot be read (then the
        chunk is redone whole)."""
        path = self.folder / partial_name(index)
        try:
            with open_input(path) as fh, np.load(fh, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):
            return None
        chunk = arrays.pop("chunk", None)
        return arrays if chunk is not None and int(chunk) == index else None

    def partial_indices(self) -> set[int]:
        """The chunks that have kept batches in the folder."""
        if isinstance(self.folder, RemotePath):
            names = [p.name for p in self.folder.files_below()] if self.folder.is_dir() else []
        else:
            names = [p.name for p in self.folder.iterdir()] if self.folder.is_dir() else []
        return {int(m.group(1)) for m in map(_PARTIAL.fullmatch, names) if m}

    def drop_partial(self, index: int) -> None:
        """Remove the kept batches of chunk ``index`` (its part is written)."""
        path = self.folder / partial_name(index)
        if isinstance(path, RemotePath):
            if path.exists():
                path.fs.rm(path.path)
        else:
            path.unlink(missing_ok=True)

    def finalize(self, schema: pa.Schema, parts: int) -> None:
        """Join the parts, in order, into the output (through a temporary name)."""
        with atomic_writer(self.output) as fh, pq.ParquetWriter(fh, schema) as writer:
            for k in range(parts):
                with open_input(self.folder / part_name(k)) as part:
                    for batch in pq.ParquetFile(part).iter_batches(batch_size=65536):
                        writer.write_batch(batch)
        remove_tree(self.folder)


def write_atomic(path: Path | RemotePath, text: str) -> None:
    with atomic_writer(path) as fh:
        fh.write(text.encode())
