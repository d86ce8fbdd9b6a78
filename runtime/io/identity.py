"""What tells two versions of an input apart, and the message when a resume would mix them."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from .locations import RemotePath

# Fields that tell a file's content apart: a change of any of them refuses a resume. The
# modification time is recorded too, but a mere ``touch`` (same size and content hash) is not
# a new version of the file.
CONTENT_KEYS = ("size", "footer_sha256", "tail_sha256", "version")


def file_identity(path: Path | RemotePath) -> dict[str, Any]:
    """What tells two versions of an input apart, read cheaply whatever the file's size.

    Local Parquet: size, modification time and the sha256 of the footer (row group offsets,
    sizes and statistics: it changes whenever a writer rewrites the file with other rows).
    Local JSON Lines: size, modification time and the sha256 of the last MiB. Remote: size
    and the store's own version tag (ETag, mtime or last-modified), as fsspec reports them.
    """
    if isinstance(path, RemotePath):
        info = path.fs.info(path.path)
        tag = next((info[k] for k in ("ETag", "etag", "mtime", "LastModified", "last_modified", "last_commit")
                    if info.get(k) is not None), None)
        return {"size": info.get("size"), "version": str(tag) if tag is not None else None}
    st = path.stat()
    with open(path, "rb") as fh:
        if path.name.lower().endswith(".parquet") and st.st_size >= 12:
            fh.seek(-8, os.SEEK_END)
            footer = int.from_bytes(fh.read(4), "little")
            fh.seek(-8 - min(footer, st.st_size - 8), os.SEEK_END)
            return {"size": st.st_size, "mtime_ns": st.st_mtime_ns,
                    "footer_sha256": hashlib.sha256(fh.read(footer)).hexdigest()}
        fh.seek(max(0, st.st_size - (1 << 20)))
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "tail_sha256": hashlib.sha256(fh.read()).hexdigest()}


def identity_problem(path: Path | RemotePath, then: dict[str, Any] | None, now: dict[str, Any],
                     what: str) -> str | None:
    """A message naming ``path`` and what changed since ``what`` recorded it, or None if nothing did.

    Only the content keys count: a file whose modification time alone changed (``touch``, a
    copy that kept the bytes) is the same input.
    """
    if not then:
        return None
    changed = [k for k in CONTENT_KEYS if (k in then or k in now) and then.get(k) != now.get(k)]
    if not changed:
        return None
    told = ", ".join(f"{k} {then.get(k)} then, {now.get(k)} now" for k in changed)
    return (f"{path}: the input changed since {what} ({told}); resuming would mix two versions of the "
            "file: restore it, or pass --overwrite to annotate the new version from the start")
