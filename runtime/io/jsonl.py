"""JSON Lines in: plain or compressed, streamed in blocks, every line checked before anything is written.

A file is read as a stream of decompressed bytes (pyarrow's codecs: gzip, zstd, bz2), cut
into blocks of about ``BLOCK_BYTES`` that end at a line end; pyarrow's JSON reader parses
each block into Arrow. Memory holds a block (and the longest line), never the file.

A file is read twice. The first pass (``scan``) parses every line, counts the rows and
unifies the column types of all blocks (a column that is an integer in one block and a
float in another becomes a float; timestamps that pyarrow's inference sees in strings stay
strings, as they are in the JSON). A malformed line fails here, naming the file and the
line, before any output exists. The second pass (``tables``) parses with that one schema,
so every chunk has the same types and the output keeps them. Blank lines are skipped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import IO

import pyarrow as pa
import pyarrow.json as pj

from ..errors import InputError

BLOCK_BYTES = 4 << 20
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
CODECS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd", ".bz2": "bz2"}


def jsonl_codec(name: str) -> tuple[bool, str | None]:
    """(is JSON Lines, compression codec or None) from a file name: ``x.jsonl``, ``x.json.gz``, ..."""
    lower = name.lower()
    codec = next((c for s, c in CODECS.items() if lower.endswith(s)), None)
    base = lower[: lower.rindex(".")] if codec else lower
    return base.endswith(JSONL_SUFFIXES), codec


def jsonl_stem(name: str) -> str | None:
    """The name without its JSON Lines and compression suffixes, or None if it is not JSON Lines."""
    is_jsonl, codec = jsonl_codec(name)
    if not is_jsonl:
        return None
    base = name[: name.rindex(".")] if codec else name
    return base[: base.rindex(".")]


def _strings_for_timestamps(t: pa.DataType) -> pa.DataType:
    """pyarrow infers timestamps from date-like strings; JSON has strings only."""
    if pa.types.is_timestamp(t):
        return pa.string()
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(_strings_for_timestamps(f.type)) for f in t])
    if pa.types.is_list(t):
        return pa.list_(t.value_field.with_type(_strings_for_timestamps(t.value_type)))
    return t


class JsonLines:
    """One JSON Lines file, opened by ``opener`` (a callable giving a fresh binary file object)."""

    def __init__(self, name: str, opener: Callable[[], IO[bytes]], block_bytes: int = BLOCK_BYTES):
        self.name = name
        self.opener = opener
        self.codec = jsonl_codec(name)[1]
        self.block_bytes = block_bytes
        self.schema: pa.Schema | None = None
        self.rows = 0

    def _blocks(self) -> Iterator[tuple[int, bytes]]:
        """(first line number, bytes) of blocks that end at a line end."""
        raw = self.opener()
        stream = pa.CompressedInputStream(pa.PythonFile(raw, mode="r"), self.codec) if self.codec else raw
        line, tail = 1, b""
        try:
            while True:
                try:
                    data = stream.read(self.block_bytes)
                except (OSError, pa.ArrowException, EOFError) as exc:
                    raise InputError(f"{self.name}: cannot be decompressed as {self.codec} after line {line} ({exc})") from exc
                if not data:
                    break
                data = tail + data
                cut = data.rfind(b"\n") + 1
                if cut == 0:  # a line longer than a block: read on
                    tail = data
                    continue
                block, tail = data[:cut], data[cut:]
                yield line, block
                line += block.count(b"\n")
            if tail.strip():
                yield line, tail
        finally:
            stream.close()
            if stream is not raw:
                raw.close()

    def _parse(self, line: int, block: bytes, options: pj.ParseOptions | None) -> pa.Table:
        try:
            return pj.read_json(pa.BufferReader(block), parse_options=options)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise InputError(self._locate(line, block, str(exc))) from None

    def _locate(self, first: int, block: bytes, arrow_message: str) -> str:
        """The first bad line of a block that pyarrow refused, with what was expected and found."""
        seen: pa.Schema | None = None
        for number, text in enumerate(block.split(b"\n"), start=first):
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                hint = " (a JSON array: expected JSON Lines, one object per line)" if number == 1 and text.lstrip()[:1] == b"[" else ""
                detail = f"column {exc.colno}: {exc.msg}" if isinstance(exc, json.JSONDecodeError) else str(exc)
                return f"{self.name}: line {number}: malformed JSON, expected one object per line ({detail}){hint}"
            if not isinstance(value, dict):
                return f"{self.name}: line {number}: expected a JSON object, found {type(value).__name__}"
            try:
                schema = pj.read_json(pa.BufferReader(text)).schema
                seen = schema if seen is None else pa.unify_schemas([seen, schema], promote_options="permissive")
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                return f"{self.name}: line {number}: a field changes type from the lines before ({exc})"
        last = first + block.count(b"\n")
        return f"{self.name}: lines {first} to {last}: {arrow_message}"

    def scan(self, limit: int | None = None) -> JsonLines:
        """First pass: check every line (up to ``limit`` rows), count the rows, fix the schema."""
        schema, rows = None, 0
        for line, block in self._blocks():
            table, lines = self._parse(line, block, None), self._count(block)
            if table.num_rows != lines:  # e.g. two objects on one line
                raise InputError(self._locate(line, block, f"{table.num_rows} records in {lines} lines"))
            part = table.schema
            try:
                schema = part if schema is None else pa.unify_schemas([schema, part], promote_options="permissive")
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                last = line + block.count(b"\n")
                raise InputError(f"{self.name}: lines {line} to {last}: a field has another "
                                 f"type than in the lines before ({exc}); drop or fix it") from None
            rows += table.num_rows
            if limit is not None and rows >= limit:
                break
        schema = pa.schema([f.with_type(_strings_for_timestamps(f.type)) for f in schema or pa.schema([])])
        self.schema, self.rows = schema, rows if limit is None else min(rows, limit)
        return self

    @staticmethod
    def _count(block: bytes) -> int:
        return sum(1 for text in block.split(b"\n") if text.strip())

    def tables(self, columns: list[str], skip_rows: int = 0) -> Iterator[pa.Table]:
        """Second pass: tables of the ``columns`` with the scanned schema, from row ``skip_rows`` on."""
        if self.schema is None:
            raise RuntimeError("scan() first")
        wanted = pa.schema([self.schema.field(c) for c in columns])
        options = pj.ParseOptions(explicit_schema=wanted, unexpected_field_behavior="ignore")
        for line, block in self._blocks():
            n = self._count(block)
            if skip_rows >= n:
                skip_rows -= n
                continue
            table = self._parse(line, block, options)
            if table.num_rows != n:
                raise InputError(f"{self.name}: lines {line} on: {table.num_rows} rows parsed, {n} lines")
            yield table.slice(skip_rows)
            skip_rows = 0
