"""What the inference of a chunk has done so far: the windows whose batches finished, and their hits.

Within a chunk, windows are planned from the chunk's tokens alone (``windows.plan_windows``)
and a window's hits do not depend on its batch companions (batch invariance, enforced at
export). So the work of an interrupted ``Annotator.infer`` is worth keeping: ``Partial``
holds the indices of the windows done (in plan order) with their hits, and a later ``infer``
of the same chunk given that ``Partial`` runs only the other windows and merges the two.
``plan`` ties a ``Partial`` to one window plan (and candidate floor): given another chunk,
it is ignored and every window runs.

The core only hands this state over (``Chunk.partial``); the engines store it
(``to_arrays``/``from_arrays``: plain numpy arrays, no pickle).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import numpy as np

from .batching import Batch
from .spans import Hits

HIT_FIELDS = ("doc", "start", "end", "score")


def plan_id(win: dict[str, np.ndarray], rows: int, floor: float) -> str:
    """A digest of a chunk's window plan (documents, starts, lengths), its row count and candidate floor."""
    digest = hashlib.sha256(f"{rows}:{floor!r}:".encode())
    for key in ("doc", "start", "length"):
        digest.update(np.ascontiguousarray(win[key], dtype=np.int64).tobytes())
    return digest.hexdigest()


@dataclass
class Partial:
    """The windows of one chunk done so far and their hits (spans above the candidate floor)."""

    plan: str  # plan_id of the chunk's windows
    windows: np.ndarray  # int64, ascending: indices of the windows done, in plan order
    hits: Hits  # the candidates of those windows
    total: int  # windows in the plan
    rows: int  # rows of the chunk
    rows_done: int  # rows whose every window is done (rows with no window, empty texts, included)

    @property
    def complete(self) -> bool:
        return len(self.windows) == self.total

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {f"hits_{k}": getattr(self.hits, k) for k in HIT_FIELDS}
        return {**arrays, "plan": np.array(self.plan), "windows": self.windows,
                "counts": np.array([self.total, self.rows, self.rows_done], dtype=np.int64)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Partial | None:
        """The ``Partial`` that ``to_arrays`` gave, or None if the arrays are not one."""
        try:
            total, rows, rows_done = (int(v) for v in arrays["counts"])
            hits = Hits(*(np.asarray(arrays[f"hits_{k}"]) for k in HIT_FIELDS))
            return cls(str(arrays["plan"]), np.asarray(arrays["windows"], dtype=np.int64), hits, total, rows,
                       rows_done)
        except (KeyError, ValueError, TypeError):
            return None


class Progress:
    """The windows of a chunk done so far, as ``Annotator.infer`` runs its batches."""

    def __init__(self, win: dict[str, np.ndarray], rows: int, floor: float, before: Partial | None):
        self.plan, self.doc, self.rows = plan_id(win, rows, floor), win["doc"], rows
        self.done = np.zeros(len(self.doc), dtype=bool)
        self.found: list[Hits] = []
        if before is not None and before.plan == self.plan and before.total == len(self.doc):
            self.done[before.windows] = True
            self.found.append(before.hits)

    def todo(self, batches: list[Batch], lengths: np.ndarray, exact: bool) -> list[Batch]:
        """The planned batches with the windows already done left out (a batch all done is dropped).

        A resume under the same batch options finds every batch done or not at all; otherwise a
        batch keeps its bucket shape (``exact`` False) or shrinks to the windows left (True).
        """
        out = []
        for batch in batches:
            left = batch.index[~self.done[batch.index]]
            if len(left) == len(batch.index):
                out.append(batch)
            elif len(left):
                out.append(replace(batch, index=left, rows=len(left), width=int(lengths[left].max())) if exact
                           else replace(batch, index=left))
        return out

    def add(self, windows: np.ndarray, hits: Hits) -> None:
        self.done[windows] = True
        self.found.append(hits)

    def partial(self) -> Partial:
        """What is done now, as a ``Partial`` (every window once the chunk is through)."""
        open_docs = np.unique(self.doc[~self.done])
        return Partial(self.plan, np.flatnonzero(self.done).astype(np.int64), Hits.concat(self.found),
                       len(self.doc), self.rows, self.rows - len(open_docs))
