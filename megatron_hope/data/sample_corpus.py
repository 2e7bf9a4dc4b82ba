"""RedPajama-style JSONL corpora: a reader for any, and a writer for the offline sample corpus.

The sample corpus is the Python standard library's own `.py` sources. It is real, mostly English
text (docstrings, comments, identifiers) that every machine running this project already has, that
this project did not write, and that needs no network. Each source file becomes one document in the
RedPajama-1T layout, one JSON object per line:

    {"text": "<file contents>", "meta": {"source": "python-stdlib", "path": "json/decoder.py",
     "python_version": "3.11"}}

The corpus depends only on the running Python's stdlib, so it is byte-identical on every machine
with the same Python build; different Python minor versions give different corpora.
"""

from __future__ import annotations

import json
import os
import sys
import sysconfig
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MAX_BYTES = 12_000_000
"""Text bytes in the default sample corpus: about 3.4M tokens with a 4096-entry BPE, which trains
and encodes in about 10 s on 2 cores. Python 3.11's stdlib holds about 12.6 MB of eligible sources,
so the budget, not the stdlib, sets the size, and it stays similar across Python versions."""

CORPUS_SOURCE = "python-stdlib"
"""The `meta.source` value of every sample document."""

SKIPPED_DIRECTORIES = frozenset(
    {"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test"}
)
"""Directory names whose files never enter the corpus: installed third-party packages, bytecode,
and the stdlib's test suites (huge, repetitive, and full of deliberately odd text)."""


@dataclass(frozen=True)
class CorpusStats:
    """What `write_sample_corpus` wrote."""

    path: Path
    """The JSONL file."""

    num_documents: int
    """Lines written, one per source file."""

    num_bytes: int
    """UTF-8 bytes of document text (not counting the JSON framing)."""

    num_undecodable: int
    """Source files skipped because they are not valid UTF-8."""

    python_version: str
    """`major.minor` of the Python whose stdlib was read."""


def python_minor_version() -> str:
    """The running Python as `major.minor`, the granularity at which the stdlib changes."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def stdlib_source_paths(stdlib_dir: Path | None = None) -> list[Path]:
    """Eligible `.py` files under the stdlib, sorted by their posix relative path.

    Sorting the relative path strings (not `rglob` order, which follows the file system) is what
    makes the corpus deterministic.
    """
    root = Path(sysconfig.get_paths()["stdlib"]) if stdlib_dir is None else Path(stdlib_dir)
    eligible = []
    for directory, subdirectories, file_names in os.walk(root):
        # Pruning in place keeps os.walk out of the skipped trees (the test suites are most of
        # the stdlib's files). Build-configuration directories (`config-3.x-*/`) and modules
        # (`_sysconfigdata_*.py`) hold this machine's compiler flags and paths: they would make
        # the corpus differ between installs of the same Python.
        subdirectories[:] = [
            name
            for name in subdirectories
            if name not in SKIPPED_DIRECTORIES and not name.startswith("config-")
        ]
        relative_directory = Path(directory).relative_to(root)
        eligible.extend(
            relative_directory / name
            for name in file_names
            if name.endswith(".py") and not name.startswith("_sysconfigdata")
        )
    return [root / relative for relative in sorted(eligible, key=lambda p: p.as_posix())]


def write_sample_corpus(
    output_path: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES
) -> CorpusStats:
    """Write the stdlib sample corpus as RedPajama JSONL, at most `max_bytes` of text.

    Documents are written in sorted path order until the next one would pass `max_bytes`; empty
    files (many `__init__.py`) are skipped because they teach nothing. The file appears under its
    final name only when complete: it is written as `<output_path>.tmp-<pid>` and renamed.
    """
    if max_bytes <= 0:
        raise ValueError(
            f"max_bytes ({max_bytes}) must be positive; the default is {DEFAULT_MAX_BYTES}"
        )
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    stdlib_dir = Path(sysconfig.get_paths()["stdlib"])
    version = python_minor_version()
    num_documents = num_bytes = num_undecodable = 0
    temporary_path = output_path.with_name(f"{output_path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary_path, "w", encoding="utf-8", newline="\n") as corpus:
            for source_path in stdlib_source_paths(stdlib_dir):
                try:
                    text = source_path.read_bytes().decode("utf-8")
                except UnicodeDecodeError:
                    num_undecodable += 1
                    continue
                if not text.strip():
                    continue
                text_bytes = len(text.encode("utf-8"))
                if num_bytes + text_bytes > max_bytes:
                    break
                meta = {
                    "source": CORPUS_SOURCE,
                    "path": source_path.relative_to(stdlib_dir).as_posix(),
                    "python_version": version,
                }
                # ensure_ascii=False keeps the file close to the text's own size; json still
                # escapes every newline, so one document stays one line.
                corpus.write(json.dumps({"text": text, "meta": meta}, ensure_ascii=False) + "\n")
                num_documents += 1
                num_bytes += text_bytes
        if num_documents == 0:
            raise ValueError(
                f"max_bytes ({max_bytes}) is smaller than the first stdlib source file; "
                f"raise it (the default is {DEFAULT_MAX_BYTES})"
            )
        os.replace(temporary_path, output_path)
    finally:
        temporary_path.unlink(missing_ok=True)
    return CorpusStats(output_path, num_documents, num_bytes, num_undecodable, version)


def iter_jsonl_texts(
    jsonl_paths: str | os.PathLike | Iterable[str | os.PathLike], json_key: str = "text"
) -> Iterator[str]:
    """Yield `record[json_key]` for every non-blank line of the JSONL files, in order, streaming.

    Reads what `hope-preprocess` reads (`.jsonl`, `.jsonl.gz`, `.jsonl.zst`, RedPajama-V2
    `.json.gz`) through `megatron_hope.data.readers`, but strictly: raises ValueError naming
    `file:line` for a line that is not a JSON object, lacks the key, holds a non-string under it
    or is not UTF-8, and for a truncated compressed file, so a bad shard is found without
    bisecting it by hand. Empty texts are yielded (they are documents here).
    """
    from megatron_hope.data.readers import BadRecordError, Document, iter_records

    if isinstance(jsonl_paths, (str, os.PathLike)):
        jsonl_paths = [jsonl_paths]
    for jsonl_path in jsonl_paths:
        for item in iter_records(jsonl_path, (json_key,), skip_empty=False):
            if not isinstance(item, Document):
                raise BadRecordError(item)
            yield item.texts[0]
