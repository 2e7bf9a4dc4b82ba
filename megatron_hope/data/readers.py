"""Streaming readers for RedPajama-1T, RedPajama-V2 and plain JSONL, with per-record diagnostics.

Formats, chosen from the file name:

| file | records | text |
|---|---|---|
| `*.jsonl`, `.jsonl.gz`, `.jsonl.zst` | RedPajama-1T `{"text", "meta"}`, any | `--json-keys` |
| `*.json.gz` (RedPajama-V2 documents) | `{"raw_content", ...}` per line | `raw_content` |

Files are read in chunks and decompressed with `zlib`/`zstandard` decompression objects, never
whole, so memory does not grow with the file; a compressed stream that ends before its end marker
is reported as a truncated file (after every complete line before the cut has been read), not
taken for a short one. Every record that cannot become a document is yielded as a `BadRecord`
with its `file:line` and a reason from `BAD_REASONS`, so callers count and report instead of
crashing or dropping it silently.

Which files `--input` names, and their RedPajama-1T subsets: `data/inputs.py`.
"""

from __future__ import annotations

import contextlib
import json
import os
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

try:  # 3-10x faster than json on RedPajama lines; the stdlib parser is the fallback
    import orjson

    # RecursionError: the stdlib parser's answer to deeply nested JSON (orjson's is a
    # JSONDecodeError past 1024 levels).
    _JSON_ERRORS: tuple[type[Exception], ...] = (orjson.JSONDecodeError, ValueError,
                                                 RecursionError)
    _loads = orjson.loads
except ImportError:  # pragma: no cover - orjson is optional
    orjson = None
    _JSON_ERRORS = (ValueError, RecursionError)

    def _loads(line: bytes):
        return json.loads(line.decode("utf-8"))


CHUNK_BYTES = 1 << 20
"""Bytes read from disk per step: large enough for C-speed decompression, small for memory."""

UTF8_BOM = b"\xef\xbb\xbf"
"""The UTF-8 signature some editors put at the start of a file: not part of the JSON."""

V2_SUFFIX = ".json.gz"
V2_TEXT_KEY = "raw_content"

BAD_REASONS = (
    "malformed_json",
    "not_an_object",
    "missing_key",
    "not_a_string",
    "invalid_utf8",
    "empty_document",
    "truncated_file",
)
"""Why a record was skipped; the summary counts each."""

@dataclass(frozen=True)
class BadRecord:
    """A line that did not become a document."""

    path: str
    line: int
    """1-based line number in the (decompressed) file."""
    reason: str
    """One of `BAD_REASONS`."""
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


class InputFileError(ValueError):
    """An input file that cannot be read (gone, a directory, an I/O error); the message starts
    with the file's path. One str argument, so that it crosses from a worker process intact."""


@contextlib.contextmanager
def reading(path: str | os.PathLike) -> Iterator[None]:
    """Turn an OSError while reading `path` into an `InputFileError` naming it."""
    try:
        yield
    except OSError as error:
        raise InputFileError(f"{path}: cannot read it ({error.strerror or error}); did it "
                             "move or change while hope-preprocess ran?") from None


class BadRecordError(ValueError):
    """Raised for the first bad record when reading strictly; the message starts with file:line."""

    def __init__(self, record: BadRecord | str) -> None:
        # A str when unpickled from a worker process (exceptions pickle their args).
        super().__init__(str(record))
        self.record = record


def is_v2_documents(path: str | os.PathLike) -> bool:
    """RedPajama-V2 document files are `*.json.gz` with the text under `raw_content`."""
    return str(path).endswith(V2_SUFFIX)


class TruncatedStreamError(Exception):
    """The compressed stream ended before its end-of-stream marker."""


def _decompressor(path: str):
    name = path.lower()
    if name.endswith(".gz"):
        return lambda: zlib.decompressobj(wbits=31)
    if name.endswith((".zst", ".zstd")):
        import zstandard

        context = zstandard.ZstdDecompressor()
        return context.decompressobj
    return None


def _decompression_errors() -> tuple[type[Exception], ...]:
    errors: list[type[Exception]] = [zlib.error]
    try:
        import zstandard

        errors.append(zstandard.ZstdError)
    except ImportError:  # pragma: no cover - only .zst input needs it
        pass
    return tuple(errors)


def is_compressed(path: str | os.PathLike) -> bool:
    """gzip or zstd by the file name: such a file is read from its start, never seeked into."""
    return _decompressor(str(path)) is not None


def iter_blocks(
    path: str | os.PathLike, progress=None, start: int = 0, end: int | None = None
) -> Iterator[bytes]:
    """A file's (decompressed) bytes in blocks of about `CHUNK_BYTES`, streaming.

    Multi-member gzip and multi-frame zstd files are read to the end. Raises
    `TruncatedStreamError` after the last block when the stream is cut short or corrupt.

    Args:
        progress: called with the number of file (compressed) bytes in each chunk read.
        start, end: a byte range `[start, end)` of a plain (uncompressed) file.
    """
    path = str(path)
    make = _decompressor(path)
    if make is not None and (start or end is not None):
        raise ValueError(f"{path}: a compressed file has no byte ranges")
    errors = _decompression_errors()
    decompressor = make() if make else None
    fed = False  # whether the current decompressor has been given input
    remaining = None if end is None else end - start
    with reading(path), open(path, "rb", buffering=0) as raw:
        raw.seek(start)
        while chunk := raw.read(CHUNK_BYTES if remaining is None else min(CHUNK_BYTES, remaining)):
            if remaining is not None:
                remaining -= len(chunk)
            if progress is not None:
                progress(len(chunk))
            if decompressor is None:
                yield chunk
                continue
            while chunk:
                try:
                    data = decompressor.decompress(chunk)
                except errors as error:
                    raise TruncatedStreamError(f"corrupt compressed data ({error})") from error
                fed = True
                chunk = b""
                if decompressor.eof:  # next gzip member / zstd frame, if any
                    chunk = decompressor.unused_data
                    decompressor, fed = make(), False
                yield data
    if decompressor is not None and fed and not decompressor.eof:
        raise TruncatedStreamError("compressed stream ended before its end marker")


def iter_raw_lines(
    path: str | os.PathLike, progress=None, start: int = 0, end: int | None = None
) -> Iterator[bytes]:
    """The lines of a plain, gzip or zstd file (or of a plain file's byte range `[start, end)`)
    as bytes without their newline, streaming.

    Raises `TruncatedStreamError` after yielding every complete line when the stream is cut short
    or corrupt (the partial last line is not yielded: it is what the cut left, not a record).
    """
    # The unfinished line's pieces are joined once its end arrives: joining them block by
    # block would copy a line of n blocks n times (minutes for a 200 MB line).
    pending: list[bytes] = []
    for block in iter_blocks(path, progress, start, end):
        if b"\n" not in block:
            pending.append(block)
            continue
        lines = block.split(b"\n")
        if pending:
            lines[0] = b"".join([*pending, lines[0]])
        pending = [lines.pop()]
        yield from lines
    if pending and any(pending):
        yield b"".join(pending)


def iter_line_chunks(path: str | os.PathLike, min_bytes: int, progress=None) -> Iterator[bytes]:
    """A file's decompressed bytes in chunks of at least `min_bytes` that end at a line end (the
    last one at the end of the file), so that chunk k is the same for any reader of the file.

    Raises `TruncatedStreamError` as `iter_raw_lines` does, after the complete lines.
    """
    parts: list[bytes] = []
    size = 0
    try:
        for block in iter_blocks(path, progress):
            parts.append(block)
            size += len(block)
            if size >= min_bytes:
                data = b"".join(parts)
                # The first line end at or after min_bytes: the same cut for any block size.
                while (cut := data.find(b"\n", min_bytes - 1) + 1) > 0:
                    yield data[:cut]
                    data = data[cut:]
                parts, size = [data], len(data)
    except TruncatedStreamError:
        data = b"".join(parts)
        if b"\n" in data:
            yield data[: data.rfind(b"\n") + 1]
        raise
    data = b"".join(parts)
    if data:
        yield data


def split_lines(data: bytes) -> list[bytes]:
    """The lines of a chunk from `iter_line_chunks`, without their newlines."""
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    return lines


@dataclass(frozen=True)
class Document:
    """One record's texts, by JSON key, in the order of `json_keys`."""

    line: int
    texts: tuple[str, ...]


def iter_records(
    path: str | os.PathLike,
    json_keys: Sequence[str] = ("text",),
    skip_empty: bool = True,
    progress=None,
    on_first_record=None,
) -> Iterator[Document | BadRecord]:
    """Documents and bad records of one file, in line order; blank lines are neither.

    Args:
        json_keys: the fields to read; in RedPajama-V2 `*.json.gz` files `text` reads
            `raw_content`.
        skip_empty: an all-whitespace text is a `BadRecord` ("empty_document") instead of a
            document.
        progress: passed to `iter_raw_lines`.
        on_first_record: called with the first parsed JSON object (for the meta subset).
    """
    lines = CountedLines(iter_raw_lines(path, progress))
    try:
        yield from parse_records(lines, path, json_keys, 1, skip_empty, on_first_record)
    except TruncatedStreamError as error:
        yield BadRecord(str(path), lines.count + 1, "truncated_file", f"truncated file ({error})")


class CountedLines:
    """An iterator over lines that counts them (`count`: lines taken so far)."""

    def __init__(self, lines) -> None:
        self._lines = iter(lines)
        self.count = 0

    def __iter__(self) -> CountedLines:
        return self

    def __next__(self) -> bytes:
        line = next(self._lines)
        self.count += 1
        return line


def parse_records(
    lines,
    path: str | os.PathLike,
    json_keys: Sequence[str] = ("text",),
    first_line: int = 1,
    skip_empty: bool = True,
    on_first_record=None,
) -> Iterator[Document | BadRecord]:
    """`iter_records` over lines already read: `lines[0]` is line `first_line` of `path`."""
    where = str(path)
    lookup = [V2_TEXT_KEY if is_v2_documents(path) and key == "text" else key for key in json_keys]
    for line_number, line in enumerate(lines, start=first_line):
        if line.startswith(UTF8_BOM):  # a file's signature, or a BOM'd file concatenated in
            line = line[len(UTF8_BOM):]
        if not line.strip():
            continue
        try:
            record = _loads(line)
        except _JSON_ERRORS as error:
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as decode_error:
                yield BadRecord(
                    where, line_number, "invalid_utf8", f"not valid UTF-8 ({decode_error})"
                )
                continue
            yield BadRecord(where, line_number, "malformed_json", f"not valid JSON ({error})")
            continue
        if not isinstance(record, dict):
            yield BadRecord(
                where,
                line_number,
                "not_an_object",
                f"expected a JSON object, got {type(record).__name__}",
            )
            continue
        if on_first_record is not None:
            on_first_record(record)
            on_first_record = None
        item = _document(record, lookup, where, line_number, skip_empty)
        yield item


def _document(record: dict, lookup, where: str, line_number: int, skip_empty: bool):
    texts = []
    for field in lookup:
        if field not in record:
            return BadRecord(
                where,
                line_number,
                "missing_key",
                f"no {field!r} key (keys: {', '.join(map(repr, record))}); "
                f"pick the text field with json_key / --json-keys",
            )
        text = record[field]
        if not isinstance(text, str):
            return BadRecord(
                where,
                line_number,
                "not_a_string",
                f"{field!r} holds a {type(text).__name__}, expected a string",
            )
        if skip_empty and not text.strip():
            return BadRecord(where, line_number, "empty_document", f"{field!r} is empty")
        texts.append(text)
    return Document(line_number, tuple(texts))


def first_record(path: str | os.PathLike) -> dict | None:
    """The first JSON object in a file (for its meta), or None."""
    found: list[dict] = []
    for item in iter_records(path, json_keys=(), on_first_record=found.append):
        if found or isinstance(item, Document):
            break
    return found[0] if found else None
