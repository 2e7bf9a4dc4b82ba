"""`run_preprocess`: plan the shards, encode the pending ones, report, merge."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy

from megatron_hope.data import inputs, readers
from megatron_hope.data.indexed import optimal_dtype
from megatron_hope.data.preprocess import merge, schedule
from megatron_hope.data.preprocess.config import (
    FORMAT_VERSION,
    SAMPLE_BYTES,
    SAMPLE_DOCUMENTS,
    PreprocessConfig,
    PreprocessSummary,
    Settings,
    UsageError,
)
from megatron_hope.data.preprocess.plan import (
    InputFile,
    Shard,
    assign_tasks,
    file_identity,
    plain_shards,
    plan_files,
    read_done,
    read_layout,
    sample_texts,
    unit_bytes,
    write_json,
)

logger = logging.getLogger(__name__)


def run_preprocess(config: PreprocessConfig) -> PreprocessSummary:
    """Preprocess `config.input` into Megatron `.bin/.idx` outputs; see the package docstring.

    Raises:
        UsageError: for bad flags, tokenizer files or `--input` paths (before any work).
        ValueError: with `strict` for the first bad record (`BadRecordError`, message
            `file:line: ...`).
    """
    from megatron_hope.data.backends import select_encoder
    from megatron_hope.data.tokenizer_args import TokenizerArgs

    started = time.perf_counter()
    tokenizer_args = TokenizerArgs.of(config)
    tokenizer = tokenizer_args.build()
    if config.append_eod and tokenizer.eod is None:
        raise UsageError(f"--append-eod: {tokenizer!r} has no end-of-document token; name one "
                         "with --eod-token")
    try:
        files = plan_files(config)
    except inputs.NoInputError as error:
        raise UsageError(str(error)) from None
    dtype = numpy.dtype(optimal_dtype(tokenizer.vocab_size)).name
    splitter, punkt_hash = _sentence_splitter(config, files)
    settings = asdict(
        Settings(
            format=FORMAT_VERSION,
            tokenizer={k: str(v) for k, v in tokenizer.unique_identifiers.items()},
            json_keys=list(config.json_keys),
            level=config.level,
            keep_newlines=config.keep_newlines and config.split_sentences,
            append_eod=config.append_eod,
            dtype=dtype,
            punkt=punkt_hash,
        )
    )
    identities = {file.path: file_identity(file.path) for file in files}
    run_identity = {
        "settings": settings,
        "inputs": [[identities[file.path], file.subset] for file in files],
        "json_keys": list(config.json_keys),
        "subsets": config.subsets,
    }
    if config.merge:
        finished = _finished_run(config, run_identity)
        if finished is not None:
            logger.info("outputs are up to date with the inputs and settings; nothing to do")
            finished.shards_encoded = 0
            finished.seconds = time.perf_counter() - started
            return finished

    state = {
        "tokenizer_args": tokenizer_args,
        "json_keys": config.json_keys,
        "level": config.level,
        "dtype": dtype,
        "strict": config.strict,
        "append_eod": config.append_eod,
        "splitter": splitter,
        "settings": settings,
        "identities": identities,
        "range_bytes": config.range_bytes,
    }
    # Units of work in sorted order: a plain file's ranges, a compressed file as a whole.
    units = [u for f in files for u in ([f] if f.compressed else plain_shards(f))]
    share = assign_tasks([unit_bytes(unit) for unit in units], config.num_tasks)
    mine = [units[i] for i in share[config.task_index]]
    ranges = [unit for unit in mine if isinstance(unit, Shard)]
    streams = [unit for unit in mine if isinstance(unit, InputFile)]
    done: dict[str, dict] = {}
    pending_ranges = []
    for shard in ranges:
        record = read_done(shard, state)
        if record is None:
            pending_ranges.append(shard)
        else:
            done[shard.prefix] = record
    pending_streams = [file for file in streams if not _stream_done(file, state, done)]
    summary = PreprocessSummary(shards_reused=len(done))

    pending = pending_ranges or pending_streams
    # Each cut to SAMPLE_BYTES: the reference encoder would take seconds and gigabytes on a
    # single 200 MB document, and the check needs no more than the first characters.
    sample = (
        [text[:SAMPLE_BYTES]
         for text in sample_texts(files, config.json_keys, SAMPLE_DOCUMENTS, SAMPLE_BYTES)]
        if pending else []
    )
    encoder = select_encoder(tokenizer, sample, config.tokenizer_backend) if pending else None
    summary.backend = state["backend"] = encoder.name if encoder else "none (all shards reused)"
    for base in {shard.file.base for shard in pending_ranges} | {f.base for f in pending_streams}:
        Path(base).parent.mkdir(parents=True, exist_ok=True)
    merge.remove_temporaries(pending_ranges, pending_streams)  # left by a killed run
    layouts: dict[str, dict] = {}
    results = schedule.Results(done, layouts)
    total_bytes = sum(s.end - s.start for s in pending_ranges) + sum(
        identities[f.path]["size"] for f in pending_streams
    )
    try:
        schedule.encode_pending(
            config, state, pending_ranges, pending_streams, results, total_bytes
        )
    except BaseException:
        merge.remove_temporaries(pending_ranges, pending_streams)  # workers cut short mid-shard
        raise
    summary.shards_encoded = results.completed
    summary.shards_reused += results.reused

    _report(config, summary, files, {f.base for f in streams}, state, done, layouts)
    if config.merge:
        summary.outputs = merge.merge_outputs(config, files, state, done, layouts)
        summary.merged = True
        if not config.keep_shards:
            merge.remove_shards(files, Path(f"{config.output_prefix}_shards"))
    summary.seconds = time.perf_counter() - started
    if config.merge:
        write_json(_summary_path(config), {"run": run_identity, "summary": asdict(summary)})
    return summary


def _stream_done(file, state: dict, done: dict) -> bool:
    """Whether a compressed file's layout and every chunk are done (then they go into `done`)."""
    layout = read_layout(file, state)
    if layout is None:
        return False
    _, records = merge.file_records(file, state, {}, {file.base: layout})
    if any(record is None for _, record in records):
        return False
    done.update((shard.prefix, record) for shard, record in records)
    return True


def _report(config, summary: PreprocessSummary, files, my_streams, state, done, layouts) -> None:
    """Counts of this task's shards (`done`), and their skipped records with exact `file:line`."""
    for record in done.values():
        summary.documents += record["documents"]
        summary.text_bytes += record["text_bytes"]
        summary.tokens += sum(counts["tokens"] for counts in record["keys"].values())
    lines: list[str] = []
    for file in files:
        if file.compressed and file.base not in my_streams:
            continue
        layout, records = merge.file_records(file, state, done, layouts)
        if records is not None:
            lines.extend(merge.skipped_lines(file, layout, records, set(done)))
    skipped: Counter = Counter(line.split("\t")[1] for line in lines)
    summary.skipped = {reason: skipped[reason] for reason in readers.BAD_REASONS if skipped[reason]}
    summary.skipped_examples = [_example(line) for line in lines[:10]]
    if lines:
        shard_dir = Path(f"{config.output_prefix}_shards")
        write_text(
            Path(f"{config.output_prefix}_skipped.tsv")
            if config.num_tasks == 1
            else shard_dir / f"skipped-task{config.task_index}.tsv",
            "file:line\treason\tmessage\n" + "\n".join(lines) + "\n",
        )


def _sentence_splitter(config: PreprocessConfig, files):
    if not config.split_sentences:
        return None, None
    from megatron_hope.data.sentences import (
        PUNKT_SAMPLE_BYTES,
        SentenceSplitter,
        punkt_fingerprint,
        train_punkt,
    )

    budget = config.punkt_sample_bytes or PUNKT_SAMPLE_BYTES
    params = train_punkt(sample_texts(files, config.json_keys, 10**9, budget), budget)
    return SentenceSplitter(params, keep_newlines=config.keep_newlines), punkt_fingerprint(params)


def _summary_path(config: PreprocessConfig) -> Path:
    return Path(f"{config.output_prefix}_summary.json")


def _finished_run(config: PreprocessConfig, run_identity: dict) -> PreprocessSummary | None:
    """The summary of an earlier complete run with the same inputs and settings, if any."""
    try:
        written = json.loads(_summary_path(config).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if written.get("run") != json.loads(json.dumps(run_identity)):
        return None
    summary = PreprocessSummary(**written["summary"])
    for prefix in summary.outputs:
        if not (Path(prefix + ".bin").is_file() and Path(prefix + ".idx").is_file()):
            return None
    summary.shards_reused = summary.shards_encoded + summary.shards_reused
    return summary


def _example(tsv_line: str) -> str:
    where, _, message = tsv_line.split("\t", 2)
    return f"{where}: {message}"


def write_text(path: Path, text: str) -> None:
    import os

    temporary = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
