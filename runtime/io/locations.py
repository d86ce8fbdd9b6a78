"""Local paths and URLs behind one small Path-like API, and writes that never leave half a file.

A local path (or a ``file://`` URL) is a ``pathlib.Path``. Any other URL (``s3://``,
``gs://``, ``hf://``, ``memory://``, anything fsspec knows) is a ``RemotePath``: a
filesystem from ``fsspec.core.url_to_fs`` and a path on it, with the few ``Path`` methods
the readers and the part store use. ``hf://`` is huggingface_hub's ``HfFileSystem``
(``hf://datasets/owner/name@revision/path``; the token from ``HF_TOKEN`` or ``hf auth
login``).

Atomic writes (``atomic_writer``): locally, a temporary name then ``os.replace``. On an
object store there is no rename, but an object appears only when its upload completes
(S3, GCS, the Hub's commits), so a file is written under its final name and an upload
that fails is discarded (fsspec's ``discard``); a killed process never completes its
upload. What is not atomic there: removing the parts folder after the output is written
is several deletes (an interruption then leaves parts beside a complete output, which
``--resume`` skips), and on the Hub every part is a commit.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO, Any, Union
from urllib.parse import unquote, urlparse

# Where a file or folder is: a local ``Path`` or a ``RemotePath`` (fsspec). Both give the same few
# methods (name, parent, ``/``, with_name, exists, is_file, is_dir, mkdir, read_text, resolve,
# relative_to); what only one of them has is reached after an ``isinstance`` check.
Location = Union[Path, "RemotePath"]


def is_remote(location: str) -> bool:
    return "://" in location and not location.startswith("file://")


def local_path(location: str) -> str:
    """``file:///a/b`` -> ``/a/b``; anything else unchanged."""
    return unquote(urlparse(location).path) if location.startswith("file://") else location


def as_location(location: str) -> Path | RemotePath:
    """A ``Path`` for local files (``file://``, ``local://`` included), else a ``RemotePath``."""
    if not is_remote(location):
        return Path(local_path(location))
    remote = RemotePath.from_url(location)
    if "local" in getattr(remote.fs, "protocol", ()):  # fsspec's LocalFileSystem: rename works
        return Path(remote.path)
    return remote


class RemotePath:
    """A file or folder on an fsspec filesystem, with the ``Path`` methods tommer uses."""

    def __init__(self, fs: Any, path: str):
        self.fs, self.path = fs, path.rstrip("/")

    @classmethod
    def from_url(cls, url: str) -> RemotePath:
        from fsspec.core import url_to_fs

        from ..errors import InputError

        try:
            fs, path = url_to_fs(url)
        except ImportError as exc:
            raise InputError(f"{url}: {exc} (s3:// and gs://: pip install 'tommer[remote]')") from None
        except ValueError as exc:
            raise InputError(f"{url}: {exc}") from None
        return cls(fs, path)

    def __str__(self) -> str:
        return self.fs.unstrip_protocol(self.path)

    __repr__ = __str__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemotePath) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __truediv__(self, other: str | PurePosixPath) -> RemotePath:
        return RemotePath(self.fs, f"{self.path}/{PurePosixPath(other).as_posix()}")

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.path).suffix

    @property
    def parent(self) -> RemotePath:
        return RemotePath(self.fs, str(PurePosixPath(self.path).parent))

    @property
    def parents(self) -> list[RemotePath]:
        return [RemotePath(self.fs, str(p)) for p in PurePosixPath(self.path).parents]

    def with_name(self, name: str) -> RemotePath:
        return RemotePath(self.fs, str(PurePosixPath(self.path).with_name(name)))

    def relative_to(self, other: RemotePath) -> PurePosixPath:
        return PurePosixPath(self.path).relative_to(other.path)

    def resolve(self) -> RemotePath:
        return self

    def exists(self) -> bool:
        return self.fs.exists(self.path)

    def is_file(self) -> bool:
        return self.fs.isfile(self.path)

    def is_dir(self) -> bool:
        return self.fs.isdir(self.path)

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        self.fs.makedirs(self.path, exist_ok=True)

    def read_text(self) -> str:
        return self.fs.cat_file(self.path).decode()

    def files_below(self) -> list[RemotePath]:
        return [RemotePath(self.fs, p) for p in self.fs.find(self.path)]

    def glob(self) -> list[RemotePath]:
        """The files this path, read as a glob pattern, matches."""
        return [RemotePath(self.fs, p) for p in self.fs.glob(self.path) if self.fs.isfile(p)]


def open_input(path: Path | RemotePath) -> IO[bytes]:
    return path.fs.open(path.path, "rb") if isinstance(path, RemotePath) else open(path, "rb")


@contextmanager
def atomic_writer(target: Path | RemotePath) -> Iterator[IO[bytes]]:
    """A binary file that appears at ``target`` whole, or not at all."""
    if isinstance(target, RemotePath):
        fh = target.fs.open(target.path, "wb")
        try:
            yield fh
        except BaseException:
            if hasattr(fh, "discard"):
                fh.discard()  # abort the upload: the object never appears
            raise
        fh.close()
        return
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        with open(tmp, "wb") as fh:
            yield fh
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_tree(folder: Path | RemotePath) -> None:
    if isinstance(folder, RemotePath):
        if folder.fs.exists(folder.path):
            folder.fs.rm(folder.path, recursive=True)
    else:
        shutil.rmtree(folder, ignore_errors=True)
