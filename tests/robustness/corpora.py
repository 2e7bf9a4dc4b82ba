"""Hostile inputs for hope-preprocess, written by the tests that use them (nothing committed).

Each writer fills a directory and returns what a correct run reports: how many documents, and
how many records it must skip (by reason where the reason is certain). Every non-blank line is
a record, so `documents + skipped == records` is the "no silent drop" check.
"""

from __future__ import annotations

import gzip
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

UTF8_BOM = b"\xef\xbb\xbf"
WORDS = b"the quick brown fox jumps over a lazy dog while def return import class "


@dataclass(frozen=True)
class Expected:
    documents: int
    skipped: dict[str, int] = field(default_factory=dict)
    """Exact counts by reason; with `any_skipped`, only the total is certain."""
    any_skipped: int | None = None
    """For random bytes: this many skipped records, reasons as the bytes fall."""

    @property
    def skipped_total(self) -> int:
        return self.any_skipped if self.any_skipped is not None else sum(self.skipped.values())


def _record(text: str, **extra) -> bytes:
    return json.dumps({"text": text, **extra}).encode() + b"\n"


def _records(count: int, prefix: str) -> bytes:
    return b"".join(_record(f"{prefix} number {i}: " + "words to read " * (i % 7 + 1))
                    for i in range(count))


def random_bytes(directory: Path) -> Expected:
    """1 MB of seeded random bytes named .jsonl: every non-blank line is a skipped record."""
    data = random.Random(14).randbytes(1 << 20)
    (directory / "random.jsonl").write_bytes(data)
    lines = [line for line in data.split(b"\n") if line.removeprefix(UTF8_BOM).strip()]
    return Expected(documents=0, any_skipped=len(lines))


def deeply_nested(directory: Path) -> Expected:
    """Nesting past the JSON parser's limit in a record, as a JSON string in the first record's
    meta (read for its RedPajama subset), and just inside the limit."""
    deep = 100_000
    nested_string = "[" * deep + "]" * deep
    lines = [
        _record("meta holds a deeply nested JSON string", meta=nested_string),
        b'{"text": "too deep", "meta": ' + b"[" * deep + b"]" * deep + b"}\n",
        b'{"text": "deep but fine", "meta": ' + b"[" * 500 + b"]" * 500 + b"}\n",
        b'{"text": "an object too deep", "meta": ' + b'{"a": ' * deep + b"1" + b"}" * deep
        + b"}\n",
    ]
    (directory / "nested.jsonl").write_bytes(b"".join(lines))
    return Expected(documents=2, skipped={"malformed_json": 2})


def mixed_encodings(directory: Path) -> Expected:
    """Latin-1 bytes in a UTF-8 file, a whole Latin-1 file, a UTF-16 file, and UTF-8 files
    with a byte order mark (one concatenated from two such files: a BOM mid-file)."""
    mixed = _record("plain ascii") + '{"text": "café olé"}\n'.encode("latin-1") + _record("ok")
    (directory / "mixed.jsonl").write_bytes(mixed)
    (directory / "latin1.jsonl").write_bytes(
        '{"text": "naïve"}\n{"text": "façade"}\n'.encode("latin-1"))
    # UTF-16: each newline is 0a 00, so the lines split mid-character; 3 non-blank fragments.
    (directory / "utf16.jsonl").write_bytes('{"text": "one"}\n{"text": "two"}\n'.encode("utf-16"))
    bom = UTF8_BOM + _record("first") + _record("second")
    (directory / "bom.jsonl").write_bytes(bom + bom)
    # invalid_utf8: the café line, both Latin-1 lines, UTF-16's first fragment (BOM ff fe);
    # malformed_json: UTF-16's other fragments (they start with a NUL byte).
    return Expected(documents=2 + 4, skipped={"invalid_utf8": 1 + 2 + 1, "malformed_json": 2})


def truncated_archives(directory: Path) -> Expected:
    """A .gz and a .zst cut in the middle, and bytes that are no archive at all: each counted
    as one truncated record, after the complete lines before the cut (documents)."""
    import zlib

    import zstandard

    whole = _records(20_000, "archived")
    gz = gzip.compress(whole, mtime=0)
    gz = gz[: len(gz) // 2]
    zst = zstandard.ZstdCompressor().compress(whole)
    zst = zst[: len(zst) // 2]
    (directory / "cut.jsonl.gz").write_bytes(gz)
    (directory / "cut.jsonl.zst").write_bytes(zst)
    (directory / "noise.jsonl.gz").write_bytes(random.Random(1).randbytes(4096))
    (directory / "noise.jsonl.zst").write_bytes(random.Random(2).randbytes(4096))
    # What the cut leaves, decompressed in one call: its complete lines are the documents.
    readable = (zlib.decompressobj(wbits=31).decompress(gz)
                + zstandard.ZstdDecompressor().decompressobj().decompress(zst))
    return Expected(documents=readable.count(b"\n"), skipped={"truncated_file": 4})


def empty_files(directory: Path) -> Expected:
    """Empty and blank files, plain and compressed: nothing to read, nothing to skip."""
    (directory / "empty.jsonl").write_bytes(b"")
    (directory / "blank.jsonl").write_bytes(b"\n  \n\t\n")
    (directory / "empty.jsonl.gz").write_bytes(b"")
    (directory / "empty-member.jsonl.gz").write_bytes(gzip.compress(b"", mtime=0))
    return Expected(documents=0)


def only_broken_archives(directory: Path) -> Expected:
    """Nothing readable at all: an empty .zst and a .gz of noise (no shard to merge but
    their own empty ones)."""
    (directory / "empty.jsonl.zst").write_bytes(b"")
    (directory / "noise.jsonl.gz").write_bytes(random.Random(3).randbytes(4096))
    return Expected(documents=0, skipped={"truncated_file": 1})


def one_long_line(path: Path, megabytes: int) -> int:
    """A single JSON record whose text is `megabytes` MB of words, written in 1 MB pieces (the
    test never holds it); returns the text's length in bytes."""
    block = WORDS * ((1 << 20) // len(WORDS))
    with open(path, "wb") as stream:
        stream.write(b'{"text": "')
        for _ in range(megabytes):
            stream.write(block)
        stream.write(b'"}\n')
    return len(block) * megabytes


CORPORA = {
    "random_bytes": random_bytes,
    "deeply_nested": deeply_nested,
    "mixed_encodings": mixed_encodings,
    "truncated_archives": truncated_archives,
    "empty_files": empty_files,
    "only_broken_archives": only_broken_archives,
}
