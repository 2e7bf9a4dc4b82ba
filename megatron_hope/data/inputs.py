"""Which files `--input` names, and which RedPajama-1T subset each belongs to.

The subset comes from the path (`common_crawl/2019-30/...jsonl.zst`, `arxiv/arxiv_x.jsonl`, ...)
or, failing that, from the first record's `meta` (`redpajama_set_name`, as in the RedPajama-1T
sample). The file order is fixed here, which is what makes outputs of different runs
byte-identical.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
from collections.abc import Sequence
from pathlib import Path

INPUT_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".jsonl.zstd", ".json.gz")
"""File names a directory `--input` picks up."""

REDPAJAMA_SUBSETS = (
    "common_crawl",
    "c4",
    "github",
    "book",
    "arxiv",
    "wikipedia",
    "stackexchange",
)
"""RedPajama-1T's seven subsets, named as its directories are."""

_SUBSET_ALIASES = {
    "commoncrawl": "common_crawl",
    "common_crawl": "common_crawl",
    "redpajamacommoncrawl": "common_crawl",
    "c4": "c4",
    "redpajamac4": "c4",
    "github": "github",
    "redpajamagithub": "github",
    "book": "book",
    "books": "book",
    "redpajamabook": "book",
    "arxiv": "arxiv",
    "redpajamaarxiv": "arxiv",
    "wikipedia": "wikipedia",
    "wiki": "wikipedia",
    "redpajamawikipedia": "wikipedia",
    "stackexchange": "stackexchange",
    "redpajamastackexchange": "stackexchange",
}


def normalize_subset(name: str) -> str | None:
    """`RedPajamaCommonCrawl`, `common_crawl`, `CommonCrawl` -> `common_crawl`; None if unknown."""
    return _SUBSET_ALIASES.get(name.replace("-", "").replace(" ", "").lower().strip("_"))


def subset_from_path(path: str | os.PathLike, root: str | os.PathLike | None = None) -> str | None:
    """The RedPajama-1T subset a path lies under (the nearest known directory name), if any."""
    parts = Path(path).parts
    if root is not None:
        with contextlib.suppress(ValueError):
            parts = Path(path).relative_to(root).parts
    for part in reversed(parts[:-1]):
        subset = normalize_subset(part)
        if subset is not None:
            return subset
    # Single-file subsets of the 1T release: book/book.jsonl, wikipedia/wiki.jsonl, ...
    stem = Path(path).name.split(".")[0].split("_")[0].split("-")[0]
    return normalize_subset(stem) if stem in {"book", "wiki", "stackexchange", "arxiv"} else None


def subset_from_meta(record: dict) -> str | None:
    meta = record.get("meta")
    if isinstance(meta, str):  # some RedPajama-1T dumps store meta as a JSON string
        try:
            meta = json.loads(meta)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the stack
            return None
    if not isinstance(meta, dict):
        return None
    for key in ("redpajama_set_name", "red_pajama_subset", "subset", "source"):
        value = meta.get(key)
        if isinstance(value, str) and normalize_subset(value):
            return normalize_subset(value)
    return None


class NoInputError(ValueError):
    """`--input` names nothing that exists, or no input file."""


def discover_inputs(inputs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """The files `--input` names (files, directories searched recursively, globs), sorted.

    Sorting by the posix path string, not file system order, fixes the document order of the
    output on every machine, which is what makes outputs of different runs byte-identical.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    found: set[Path] = set()
    for item in inputs:
        item = str(item)
        path = Path(item)
        if path.is_dir():
            for directory, _, names in os.walk(path):
                found.update(
                    Path(directory) / name for name in names if name.endswith(INPUT_SUFFIXES)
                )
        elif path.is_file():
            found.add(path)
        else:
            matches = [Path(m) for m in glob.glob(item, recursive=True) if Path(m).is_file()]
            if not matches:
                raise NoInputError(
                    f"--input {item!r}: no such file, directory or matching glob")
            found.update(matches)
    if not found:
        raise NoInputError(
            f"--input {' '.join(map(str, inputs))}: no input files "
            f"(a directory is searched for {', '.join(INPUT_SUFFIXES)})"
        )
    return sorted(found, key=lambda p: p.as_posix())
