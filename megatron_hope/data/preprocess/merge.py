"""Merge: every subset's shards, in sorted input order and range order, into its outputs; the
skipped-records report with exact `file:line`; removing shards and leftovers."""

from __future__ import annotations

import shutil
from pathlib import Path

from megatron_hope.data.indexed import merge_indexed_datasets
from megatron_hope.data.preprocess.config import PreprocessConfig
from megatron_hope.data.preprocess.plan import (
    InputFile,
    Shard,
    count_lines,
    file_shards,
    read_done,
    read_layout,
    safe_name,
    stem,
)


def file_records(
    file: InputFile, state: dict, done: dict, layouts: dict
) -> tuple[dict | None, list[tuple[Shard, dict | None]] | None]:
    """A file's layout (compressed) and its shards with their `.done.json` (None: not done);
    the list is None while a compressed file's chunk count is not known."""
    layout = layouts.get(file.base) if file.compressed else None
    if file.compressed and layout is None:
        layout = read_layout(file, state)
    shards = file_shards(file, layout)
    if shards is None:
        return layout, None
    return layout, [(shard, done.get(shard.prefix) or read_done(shard, state)) for shard in shards]


def skipped_lines(file: InputFile, layout: dict | None, records, wanted: set[str]) -> list[str]:
    """`file:line<TAB>reason<TAB>message` of the skipped records of the shards in `wanted`.

    A shard stores line numbers relative to its start and its number of lines; a shard's first
    line is 1 + the lines of the shards before it, or, where one of those is not done (another
    array task's), the newlines counted up to its start.
    """
    lines = []
    first_line: int | None = 1
    for shard, record in records:
        if record is not None and shard.prefix in wanted and record["skipped"]:
            if first_line is None:
                first_line = count_lines(file.path, shard.start) + 1
            for line, reason, message in record["skipped"]:
                lines.append(f"{file.path}:{line + first_line - 1}\t{reason}\t{message}")
        first_line = None if record is None or first_line is None else first_line + record["lines"]
    for line, reason, message in (layout or {}).get("skipped", []):
        lines.append(f"{file.path}:{line}\t{reason}\t{message}")
    return lines


def merge_outputs(
    config: PreprocessConfig, files: list[InputFile], state: dict, done: dict, layouts: dict
) -> dict[str, dict]:
    """Concatenate every subset's shards, in sorted input order, into its final outputs."""
    members: dict[str | None, list[tuple[Shard, dict]]] = {}
    missing = []
    for file in files:
        _, records = file_records(file, state, done, layouts)
        if records is None or any(record is None for _, record in records):
            missing.append(file.path)
            continue
        members.setdefault(file.subset, []).extend(records)
    if missing:
        raise ValueError(
            f"cannot merge: {len(missing)} input files have no finished shards yet "
            f"(first: {missing[0]}); run the remaining --task-index values, or rerun without "
            f"--num-tasks to encode them here"
        )
    outputs: dict[str, dict] = {}
    for subset, records in sorted(members.items(), key=lambda item: str(item[0])):
        for key in config.json_keys:
            final = output_prefix(config, subset, key)
            merge_indexed_datasets(
                [stem(shard.prefix, key, config.level) for shard, _ in records], final,
                threads=config.workers,
            )
            counts = [record["keys"][key] for _, record in records]
            outputs[final] = {
                "subset": subset,
                "key": key,
                "documents": sum(c["documents"] for c in counts),
                "sequences": sum(c["sequences"] for c in counts),
                "tokens": sum(c["tokens"] for c in counts),
                "dtype": state["dtype"],
            }
    return outputs


def output_prefix(config: PreprocessConfig, subset: str | None, key: str) -> str:
    middle = f"_{subset}" if subset is not None else ""
    return f"{config.output_prefix}{middle}_{safe_name(key)}_{config.level}"


def remove_temporaries(ranges: list[Shard], streams: list[InputFile]) -> None:
    """Files a killed run left under temporary names, of the shards this task owns only."""
    patterns = [f"{Path(shard.prefix).name}[._]*.tmp-*" for shard in ranges]
    patterns += [f"{Path(file.base).name}.*.tmp-*" for file in streams]
    owners = [Path(shard.prefix).parent for shard in ranges] + [
        Path(f.base).parent for f in streams
    ]
    for directory, pattern in zip(owners, patterns, strict=True):
        for path in directory.glob(pattern):
            path.unlink(missing_ok=True)


def remove_shards(files: list[InputFile], shard_dir: Path) -> None:
    """Every shard, layout and leftover of `files` (any layout), then empty directories."""
    for file in files:
        base = Path(file.base)
        if base.parent.is_dir():
            for path in base.parent.glob(f"{base.name}.*"):
                path.unlink(missing_ok=True)
    for path in shard_dir.glob("skipped-task*.tsv"):
        path.unlink()
    for directory in sorted(shard_dir.rglob("*"), reverse=True):
        if directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()
    if shard_dir.is_dir() and not any(shard_dir.iterdir()):
        shutil.rmtree(shard_dir)
