"""Which shards a run writes: every input file cut into byte ranges (plain) or chunks (compressed).

A plain `.jsonl` file of S bytes becomes `max(partitions, ceil(S / range_bytes))` ranges of
about equal size, each ending at a line end, found by reading a few bytes after each cut: no
pass over the file. A compressed file cannot be seeked into, so it becomes the chunks of
`range_bytes` decompressed bytes (ending at line ends) that its one reader cuts while streaming;
how many is known when the stream ends and recorded in its `.layout.json`.

Shard files: `{base}.{k:05d}_{key}_{level}.bin/.idx` and `{base}.{k:05d}.done.json`, where base
is `<output_prefix>_shards/<subset>/<file name>-<path hash>`. A `.done.json` names its range, so
a shard of another layout (other `--partitions`) is never taken for one of this run.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from megatron_hope.data import inputs, readers
from megatron_hope.data.preprocess.config import NO_SUBSET, PreprocessConfig


@dataclass(frozen=True)
class InputFile:
    """One input file and where its shards go."""

    index: int
    """Position in the sorted inputs."""
    path: str
    subset: str | None
    base: str
    """Shard prefixes are `{base}.{k:05d}`; a compressed file's layout is `{base}.layout.json`."""
    compressed: bool
    ranges: tuple[tuple[int, int], ...] = ()
    """A plain file's byte ranges `[start, end)`, in order."""


@dataclass(frozen=True)
class Shard:
    """One range of a plain file or one chunk of a compressed file's decompressed stream."""

    file: InputFile
    number: int
    """k: the shard's place among its file's shards."""
    start: int = 0
    end: int = 0

    @property
    def prefix(self) -> str:
        return f"{self.file.base}.{self.number:05d}"

    def identity(self, range_bytes: int) -> dict:
        """What a `.done.json` must name to be this shard."""
        if self.file.compressed:
            return {"chunk": self.number, "chunk_bytes": range_bytes}
        return {"start": self.start, "end": self.end}


def assign_tasks(sizes: Sequence[int], num_tasks: int) -> list[list[int]]:
    """Which units of work (indices into `sizes`, their bytes) each of `num_tasks` array tasks
    encodes: largest first, each to the task with the fewest bytes so far (ties: the lowest task;
    equal sizes: the earlier unit), each task's indices in ascending order.

    Greedy longest-processing-time (Graham 1969): the busiest task gets at most 4/3 of what it
    would in the best split possible, where `i % num_tasks` can give one task all the large
    files. It is a function of the
    sizes and the task count only, so every task computes the same split: pass the array's task
    count explicitly (`--num-tasks`), since resubmitting some tasks changes
    $SLURM_ARRAY_TASK_COUNT and with it every task's share.
    """
    if num_tasks < 1:
        raise ValueError(f"--num-tasks ({num_tasks}) must be at least 1")
    tasks: list[list[int]] = [[] for _ in range(num_tasks)]
    loads = [(0, task) for task in range(num_tasks)]  # a heap of (bytes, task)
    for unit in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        load, task = heapq.heappop(loads)
        tasks[task].append(unit)
        heapq.heappush(loads, (load + sizes[unit], task))
    return [sorted(units) for units in tasks]


def unit_bytes(unit: Shard | InputFile) -> int:
    """Bytes of one unit of work as `assign_tasks` weighs it: a plain file's range, or a
    compressed file's size on disk (its decompressed text is several times larger, so a mix of
    both kinds is balanced within each kind)."""
    if isinstance(unit, Shard):
        return unit.end - unit.start
    return os.path.getsize(unit.path)


def plan_files(config: PreprocessConfig) -> list[InputFile]:
    """The sorted input files, their subsets and (plain files) byte ranges."""
    paths = inputs.discover_inputs(config.input)
    subsets = _assign_subsets(config, paths)
    shard_dir = Path(f"{config.output_prefix}_shards")
    files = []
    for index, (path, subset) in enumerate(zip(paths, subsets, strict=True)):
        digest = hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:10]
        base = str(shard_dir / (subset or "all") / f"{safe_name(path.name)}-{digest}")
        compressed = readers.is_compressed(path)
        ranges = (
            () if compressed else tuple(line_ranges(path, config.partitions, config.range_bytes))
        )
        files.append(InputFile(index, str(path), subset, base, compressed, ranges))
    return files


def plain_shards(file: InputFile) -> list[Shard]:
    return [Shard(file, k, start, end) for k, (start, end) in enumerate(file.ranges)]


def line_ranges(path: str | os.PathLike, partitions: int, range_bytes: int) -> list[tuple]:
    """`[start, end)` byte ranges covering the file, each ending at a line end (or the file's
    end): at least `partitions` of them and none much over `range_bytes`, unless lines are
    longer than that."""
    with readers.reading(path):
        size = os.path.getsize(path)
    count = max(partitions, -(-size // range_bytes), 1)
    cuts = [0]
    with readers.reading(path), open(path, "rb") as stream:
        for k in range(1, count):
            cut = _line_start_at_or_after(stream, k * size // count)
            if cuts[-1] < cut < size:
                cuts.append(cut)
    cuts.append(size)
    return list(pairwise(cuts))


def _line_start_at_or_after(stream, position: int) -> int:
    """The first offset >= position that starts a line (or the file's size)."""
    if position == 0:
        return 0
    stream.seek(position - 1)
    offset = position - 1
    while block := stream.read(1 << 16):
        found = block.find(b"\n")
        if found >= 0:
            return offset + found + 1
        offset += len(block)
    return offset


def count_lines(path: str, end: int, start: int = 0) -> int:
    """Newlines in bytes `[start, end)` of a plain file: the line number at `end` is this + 1
    (relative to `start`). About 1 s per 5 GB from the page cache."""
    lines = 0
    remaining = end - start
    with readers.reading(path), open(path, "rb", buffering=0) as stream:
        stream.seek(start)
        while remaining > 0 and (block := stream.read(min(16 << 20, remaining))):
            lines += block.count(b"\n")
            remaining -= len(block)
    return lines


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[-80:] or "input"


def file_identity(path: str) -> dict:
    with readers.reading(path):
        stat = os.stat(path)
    return {"path": os.path.abspath(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def done_path(prefix: str) -> Path:
    return Path(prefix + ".done.json")


def layout_path(file: InputFile) -> Path:
    return Path(file.base + ".layout.json")


def stem(prefix: str, key: str, level: str) -> str:
    """A shard's or an output's `.bin/.idx` path without the extension."""
    return f"{prefix}_{safe_name(key)}_{level}"


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_json(path: Path, record: dict) -> None:
    """Written under a temporary name, then renamed: a reader sees all of it or nothing."""
    temporary = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    temporary.write_text(json.dumps(record) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def _assign_subsets(config: PreprocessConfig, files: list[Path]) -> list[str | None]:
    if not config.subsets:
        return [None] * len(files)
    roots = [Path(item) for item in config.input if Path(item).is_dir()]
    subsets = []
    for path in files:
        root = next((r for r in roots if r in path.parents), None)
        subset = inputs.subset_from_path(path, root)
        if subset is None and not readers.is_v2_documents(path):
            record = readers.first_record(path)
            subset = inputs.subset_from_meta(record) if record else None
        subsets.append(subset)
    if all(subset is None for subset in subsets):
        return subsets
    return [NO_SUBSET if subset is None else subset for subset in subsets]


def sample_texts(files: list[InputFile], keys, max_documents: int, max_bytes: int) -> list[str]:
    """The first documents of the input in sorted order (deterministic across runs and tasks)."""
    texts: list[str] = []
    used = 0
    for file in files:
        for item in readers.iter_records(file.path, keys):
            if isinstance(item, readers.Document):
                texts.extend(item.texts)
                used += sum(len(text) for text in item.texts)
                if len(texts) >= max_documents or used >= max_bytes:
                    return texts
    return texts


def read_done(shard: Shard, state: dict) -> dict | None:
    """The shard's `.done.json` if it is complete for these settings, input file and range.

    `state` holds `settings`, `identities` (by path), `range_bytes`, `json_keys`, `level`.
    """
    record = read_json(done_path(shard.prefix))
    if (
        record is None
        or record.get("settings") != state["settings"]
        or record.get("input") != state["identities"][shard.file.path]
        or record.get("range") != shard.identity(state["range_bytes"])
    ):
        return None
    for key in state["json_keys"]:
        path = stem(shard.prefix, key, state["level"])
        if not (Path(path + ".bin").is_file() and Path(path + ".idx").is_file()):
            return None
    return record


def read_layout(file: InputFile, state: dict) -> dict | None:
    """A compressed file's `.layout.json` (its chunk count, lines, truncation) if current."""
    record = read_json(layout_path(file))
    if (
        record is None
        or record.get("settings") != state["settings"]
        or record.get("input") != state["identities"][file.path]
        or record.get("chunk_bytes") != state["range_bytes"]
    ):
        return None
    return record


def file_shards(file: InputFile, layout: dict | None) -> list[Shard] | None:
    """All shards of a file; None for a compressed file whose layout is not known yet."""
    if not file.compressed:
        return plain_shards(file)
    if layout is None:
        return None
    return [Shard(file, k) for k in range(layout["chunks"])]
