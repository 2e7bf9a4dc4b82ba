"""RedPajama (or any JSONL) to Megatron `.bin/.idx`: streaming, parallel, resumable, exact.

The engine behind `hope-preprocess` and `tools/preprocess_data.py`:

1. `build_tokenizer` fails on a bad `--tokenizer-*` before any file is opened.
2. Inputs are discovered and sorted by path; each file's subset (RedPajama-1T) comes from its path
   or its first record's meta.
3. Every input file becomes one shard per JSON key under `<output-prefix>_shards/`, written by
   `--workers` processes with megatron-core's `IndexedDatasetBuilder` under temporary names. A
   shard's `.done.json` (counts, skipped records, the settings and the input's size and mtime) is
   written last, after its `.bin/.idx` took their final names, so a rerun after a crash or
   preemption skips exactly the shards that are complete and redoes the rest.
4. The shards are merged in sorted input order (`merge_indexed_datasets`: the bytes of
   megatron-core's `IndexedDatasetBuilder.add_index`, streamed so memory stays flat) into
   `{prefix}_{key}_{document|sentence}.bin/.idx` (`{prefix}_{subset}_{key}_...` for RedPajama
   subsets), again under temporary names. The order never depends on which worker finished first,
   so the bytes are identical for any `--workers` and across interrupted runs.

Memory: a worker holds one batch of documents and its shard's index (megatron-core's builder
keeps a Python int per sequence: ~100 bytes per document of the largest input file); the merge
holds one shard's index at a time. Nothing grows with the size of the whole input.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy

from megatron_hope.data import readers
from megatron_hope.data.backends import (
    GigatokenEncoder,
    ReferenceEncoder,
    limit_threads_in_worker,
    select_encoder,
)
from megatron_hope.data.indexed import merge_indexed_datasets
from megatron_hope.data.readers import BadRecord, BadRecordError, Document

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
"""Bumped when shard contents change for the same settings, so old shards are redone."""

BATCH_DOCUMENTS = 512
BATCH_BYTES = 4 << 20
"""A batch ends at whichever comes first: bounds memory and keeps encode calls large."""

SAMPLE_DOCUMENTS = 64
SAMPLE_BYTES = 1 << 17
"""Input documents (up to this many characters) the fast tokenizer backend is checked on,
besides the probe strings: about 0.1 s with the reference encoder."""

NO_SUBSET = "other"
"""The subset of files outside RedPajama's layout when other files have one."""

after_shard_hook = None
"""Tests set this to a callable(completed_count) to simulate a crash between shards."""


@dataclass
class PreprocessConfig:
    """What `hope-preprocess` does; the fields are Megatron-LM's `preprocess_data.py` flags."""

    input: Sequence[str]
    """Files, directories (searched recursively) or globs."""
    output_prefix: str
    """Outputs are `{output_prefix}_{key}_{document|sentence}.bin/.idx`."""
    tokenizer_type: str = "HuggingFaceTokenizer"
    tokenizer_model: str | None = None
    vocab_file: str | None = None
    merge_file: str | None = None
    tokenizer_vocab_size: int | None = None
    eod_token: str | None = None
    tokenizer_hf_include_special_tokens: bool | None = None
    """The other tokenizer flags (`megatron_hope.data.tokenizer_args.TokenizerArgs`)."""
    json_keys: Sequence[str] = ("text",)
    split_sentences: bool = False
    """Store each Punkt sentence as its own sequence (`_sentence` outputs)."""
    keep_newlines: bool = False
    """With `split_sentences`: newlines after a sentence stay in it."""
    append_eod: bool = False
    """End every document with the tokenizer's EOD (GPTDataset needs it to separate documents)."""
    workers: int = 1
    """Processes that read and encode files in parallel (one file per task)."""
    partitions: int = 1
    """Accepted for Megatron-LM compatibility: every input file is already its own partition."""
    log_interval: int = 1000
    """Documents between progress log lines when stderr is not a terminal."""
    strict: bool = False
    """Stop at the first bad record (file:line) instead of counting and skipping it."""
    subsets: bool = True
    """One output per RedPajama-1T subset found in the input (from paths or meta)."""
    tokenizer_backend: str = "auto"
    """`auto`: gigatoken when its ids equal the reference's on a sample, else `reference`;
    `gigatoken` (an error if not exact); `reference`."""
    task_index: int = 0
    num_tasks: int = 1
    """Slurm arrays: this task encodes the files whose sorted index % num_tasks == task_index."""
    merge: bool | None = None
    """Merge the shards into the final outputs; default: when num_tasks == 1."""
    keep_shards: bool = False
    """Keep `<output_prefix>_shards/` after a successful merge."""
    progress: bool = True
    punkt_sample_bytes: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.input, (str, os.PathLike)):
            self.input = [str(self.input)]
        self.json_keys = tuple(self.json_keys)
        if not self.json_keys:
            raise ValueError("--json-keys: give at least one key (e.g. text)")
        if self.workers < 1:
            raise ValueError(f"--workers ({self.workers}) must be at least 1")
        if self.partitions < 1:
            raise ValueError(f"--partitions ({self.partitions}) must be at least 1")
        if self.log_interval < 1:
            raise ValueError(f"--log-interval ({self.log_interval}) must be at least 1")
        if not 0 <= self.task_index < self.num_tasks:
            raise ValueError(
                f"--task-index ({self.task_index}) must be in [0, --num-tasks "
                f"({self.num_tasks})); under Slurm use $SLURM_ARRAY_TASK_ID and "
                f"$SLURM_ARRAY_TASK_COUNT"
            )
        if self.keep_newlines and not self.split_sentences:
            logger.info("--keep-newlines has an effect only with --split-sentences")
        if self.merge is None:
            self.merge = self.num_tasks == 1

    @property
    def level(self) -> str:
        return "sentence" if self.split_sentences else "document"


@dataclass
class PreprocessSummary:
    """What a run wrote and skipped."""

    outputs: dict[str, dict] = field(default_factory=dict)
    """`{prefix: {"subset", "key", "documents", "sequences", "tokens", "dtype"}}` per output."""
    documents: int = 0
    tokens: int = 0
    text_bytes: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    """Skipped records by reason (`readers.BAD_REASONS`)."""
    skipped_examples: list[str] = field(default_factory=list)
    """The first skipped records as `file:line: message`."""
    shards_encoded: int = 0
    shards_reused: int = 0
    seconds: float = 0.0
    backend: str = ""
    merged: bool = False

    def lines(self) -> list[str]:
        """The end-of-run report."""
        rate = self.tokens / self.seconds if self.seconds else 0.0
        text = [
            f"documents: {self.documents:,}  tokens: {self.tokens:,}  text: "
            f"{self.text_bytes / 1e6:,.1f} MB  time: {self.seconds:,.1f} s  "
            f"({rate / 1e6:.2f}M tokens/s, backend {self.backend})",
            f"shards: {self.shards_encoded} encoded, {self.shards_reused} reused from an "
            f"earlier run",
        ]
        total_skipped = sum(self.skipped.values())
        if total_skipped:
            reasons = ", ".join(f"{reason} {count:,}" for reason, count in self.skipped.items())
            text.append(f"skipped records: {total_skipped:,} ({reasons})")
            text.extend(f"  {example}" for example in self.skipped_examples[:10])
            if total_skipped > 10:
                text.append("  ... (all of them in the _skipped.tsv file beside the outputs)")
        else:
            text.append("skipped records: 0")
        for prefix, output in self.outputs.items():
            text.append(
                f"{prefix}.bin/.idx: {output['documents']:,} documents, "
                f"{output['tokens']:,} tokens ({output['dtype']})"
            )
        if not self.merged:
            text.append("shards only (no merge): rerun without --task-index/--no-merge to merge")
        return text


@dataclass(frozen=True)
class _Shard:
    """One input file's slice of the outputs."""

    index: int
    path: str
    subset: str | None
    prefix: str
    """Shard prefix; its outputs are `{prefix}_{key}_{level}.bin/.idx` and `{prefix}.done.json`."""


@dataclass
class _Settings:
    """Everything a shard's bytes depend on, except its input file."""

    format: int
    tokenizer: dict
    json_keys: list
    level: str
    keep_newlines: bool
    append_eod: bool
    dtype: str
    punkt: str | None


def _done_path(prefix: str) -> Path:
    return Path(prefix + ".done.json")


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[-80:] or "input"


def _file_identity(path: str) -> dict:
    stat = os.stat(path)
    return {"path": os.path.abspath(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


# --------------------------------------------------------------------------------------------
# Worker side: one input file -> one shard per JSON key
# --------------------------------------------------------------------------------------------

_worker: dict = {}
"""Per-process state: tokenizer, encoder, splitter, counters (set by `_init_worker`)."""


def _init_worker(state: dict, counters, in_subprocess: bool) -> None:
    if in_subprocess:
        limit_threads_in_worker()
        _die_with_parent()
    tokenizer = state["tokenizer_args"].build()
    encoder_class = GigatokenEncoder if state["backend"] == "gigatoken" else ReferenceEncoder
    _worker.clear()
    _worker.update(state)
    _worker["tokenizer"] = tokenizer
    _worker["encoder"] = encoder_class(tokenizer)
    _worker["counters"] = counters


def _die_with_parent() -> None:
    """Linux: a worker gets SIGTERM when its parent dies (OOM killer, scancel, preemption), so a
    rerun never races leftover workers over the same shards."""
    if not sys.platform.startswith("linux"):
        return
    import contextlib
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):  # no glibc: workers just outlive it
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _count(documents: int, tokens: int, text_bytes: int, file_bytes: int) -> None:
    counters = _worker["counters"]
    if counters is None:
        return
    with counters.get_lock():
        counters[0] += documents
        counters[1] += tokens
        counters[2] += text_bytes
        counters[3] += file_bytes
    on_batch = _worker.get("on_batch")
    if on_batch is not None:  # in process (--workers 1): nobody else polls the counters
        on_batch()


def _encode_shard(shard: _Shard) -> dict:
    """Encode one input file into its shard files; returns the shard's `.done.json` contents."""
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    keys: tuple[str, ...] = _worker["json_keys"]
    level: str = _worker["level"]
    dtype = numpy.dtype(_worker["dtype"]).type
    strict: bool = _worker["strict"]
    suffix = f".tmp-{os.getpid()}"
    finals = [f"{shard.prefix}_{_safe_name(key)}_{level}" for key in keys]
    temporaries = [final + suffix for final in finals]
    builders = []
    bad: list[BadRecord] = []
    stats = {"documents": 0, "text_bytes": 0}
    per_key = [{"documents": 0, "sequences": 0, "tokens": 0} for _ in keys]
    file_bytes = [0]

    def on_progress(n: int) -> None:
        file_bytes[0] += n

    try:
        for temporary in temporaries:
            builders.append(IndexedDatasetBuilder(temporary + ".bin", dtype=dtype))
        batch: list[Document] = []
        batch_bytes = 0
        for item in readers.iter_records(shard.path, keys, progress=on_progress):
            if isinstance(item, BadRecord):
                if strict:
                    raise BadRecordError(item)
                bad.append(item)
                continue
            batch.append(item)
            batch_bytes += sum(len(text) for text in item.texts)
            if len(batch) >= BATCH_DOCUMENTS or batch_bytes >= BATCH_BYTES:
                _write_batch(batch, builders, per_key, stats)
                batch, batch_bytes = [], 0
                _count(0, 0, 0, file_bytes[0])
                file_bytes[0] = 0
        if batch:
            _write_batch(batch, builders, per_key, stats)
        _count(0, 0, 0, file_bytes[0])
        for builder, temporary in zip(builders, temporaries, strict=False):
            builder.finalize(temporary + ".idx")
        # .bin before .idx before .done.json: a shard counts as done only when all three exist.
        for temporary, final in zip(temporaries, finals, strict=False):
            os.replace(temporary + ".bin", final + ".bin")
            os.replace(temporary + ".idx", final + ".idx")
    finally:
        for builder in builders:
            if not builder.data_file.closed:
                builder.data_file.close()
        for temporary in temporaries:
            for extension in (".bin", ".idx"):
                Path(temporary + extension).unlink(missing_ok=True)
    done = {
        "settings": _worker["settings"],
        "input": _worker["identities"][shard.path],
        "subset": shard.subset,
        "documents": stats["documents"],
        "text_bytes": stats["text_bytes"],
        "keys": {key: counts for key, counts in zip(keys, per_key, strict=False)},
        "skipped": [[record.line, record.reason, record.message] for record in bad],
    }
    done_path = _done_path(shard.prefix)
    temporary_done = done_path.with_name(done_path.name + suffix)
    temporary_done.write_text(json.dumps(done) + "\n", encoding="utf-8")
    os.replace(temporary_done, done_path)
    return done


def _write_batch(batch: list[Document], builders, per_key: list[dict], stats: dict) -> None:
    """Encode a batch for every key and append it to each key's builder."""
    eod = _worker["tokenizer"].eod if _worker["append_eod"] else None
    tokens_written = batch_text_bytes = 0
    for key_index, builder in enumerate(builders):
        texts = [document.texts[key_index] for document in batch]
        text_bytes = sum(len(text.encode("utf-8")) for text in texts)
        stats["text_bytes"] += text_bytes
        batch_text_bytes += text_bytes
        sequences, tokens = append_texts(
            builder, texts, _worker["encoder"], eod, _worker.get("splitter")
        )
        counts = per_key[key_index]
        counts["documents"] += len(texts)
        counts["sequences"] += sequences
        counts["tokens"] += tokens
        tokens_written += tokens
    stats["documents"] += len(batch)
    _count(len(batch), tokens_written, batch_text_bytes, 0)


def append_texts(builder, texts: Sequence[str], encoder, eod: int | None, splitter=None):
    """Encode `texts` as documents and append them to an `IndexedDatasetBuilder`.

    The one encode-and-write step of every writer in this package (`hope-preprocess` shards and
    `write_indexed_dataset`). A document is one sequence, or one per Punkt sentence with a
    `splitter` (sentences that encode to nothing are dropped, as Megatron-LM does); `eod`, when
    not None, ends each document's last sequence.

    Returns:
        (sequences, tokens) appended.
    """
    if splitter is None:
        flat, sequence_lengths = encoder.encode_flat(texts)
        sequences_per_document = numpy.ones(len(texts), dtype=numpy.int64)
    else:
        sentences = [splitter.split(text) for text in texts]
        flat, sequence_lengths = encoder.encode_flat([s for doc in sentences for s in doc])
        sequences_per_document = numpy.array([len(doc) for doc in sentences], numpy.int64)
        nonempty = sequence_lengths > 0
        if not nonempty.all():
            owner = numpy.repeat(numpy.arange(len(texts)), sequences_per_document)
            sequences_per_document = numpy.bincount(owner[nonempty], minlength=len(texts)).astype(
                numpy.int64
            )
            sequence_lengths = sequence_lengths[nonempty]
    if eod is not None:
        # EOD after each document's last sequence (Megatron-LM appends it to the last
        # sentence's ids); a document whose every sentence was empty becomes EOD alone.
        empty = sequences_per_document == 0
        if empty.any():
            # Give such documents one empty sequence for the EOD to go into.
            insert_at = numpy.cumsum(sequences_per_document)[empty]
            sequence_lengths = numpy.insert(sequence_lengths, insert_at, 0)
            sequences_per_document = numpy.where(empty, 1, sequences_per_document)
        last_sequence = numpy.cumsum(sequences_per_document) - 1
        ends = numpy.cumsum(sequence_lengths)
        flat = numpy.insert(flat, ends[last_sequence], eod)
        sequence_lengths = sequence_lengths.copy()
        sequence_lengths[last_sequence] += 1
    _append_documents(builder, flat, sequence_lengths, sequences_per_document)
    return int(sequence_lengths.size), int(flat.size)


def _append_documents(builder, flat, sequence_lengths, sequences_per_document) -> None:
    """`builder.add_document` for a whole batch at once: one write, the same bytes.

    Equivalent to calling `add_document(ids_i, lengths_i)` per document; doing it per batch keeps
    the per-document Python work (array conversion, a write call) out of the hot loop.
    """
    if flat.size and int(flat.max()) > numpy.iinfo(builder.dtype).max:
        raise ValueError(f"token id {int(flat.max())} does not fit {builder.dtype.__name__}")
    builder.data_file.write(numpy.asarray(flat, dtype=builder.dtype).tobytes(order="C"))
    start = len(builder.sequence_lengths)
    builder.sequence_lengths.extend(sequence_lengths.tolist())
    builder.document_indices.extend((start + numpy.cumsum(sequences_per_document)).tolist())


# --------------------------------------------------------------------------------------------
# Parent side
# --------------------------------------------------------------------------------------------


def _output_prefix(config: PreprocessConfig, subset: str | None, key: str) -> str:
    middle = f"_{subset}" if subset is not None else ""
    return f"{config.output_prefix}{middle}_{_safe_name(key)}_{config.level}"


def _assign_subsets(config: PreprocessConfig, files: list[Path]) -> list[str | None]:
    if not config.subsets:
        return [None] * len(files)
    roots = [Path(item) for item in config.input if Path(item).is_dir()]
    subsets = []
    for path in files:
        root = next((r for r in roots if r in path.parents), None)
        subset = readers.subset_from_path(path, root)
        if subset is None and not readers.is_v2_documents(path):
            record = readers.first_record(path)
            subset = readers.subset_from_meta(record) if record else None
        subsets.append(subset)
    if all(subset is None for subset in subsets):
        return subsets
    return [NO_SUBSET if subset is None else subset for subset in subsets]


def _sample_texts(files: list[Path], keys, max_documents: int, max_bytes: int) -> list[str]:
    """The first documents of the input in sorted order (deterministic across runs and tasks)."""
    texts: list[str] = []
    used = 0
    for path in files:
        for item in readers.iter_records(path, keys):
            if isinstance(item, Document):
                texts.extend(item.texts)
                used += sum(len(text) for text in item.texts)
                if len(texts) >= max_documents or used >= max_bytes:
                    return texts
    return texts


class _Progress:
    """Documents/s, tokens/s and MB/s (input file bytes): one redrawn line on a terminal, a log
    line every `log_interval` documents otherwise (Slurm logs)."""

    def __init__(self, config: PreprocessConfig, total_file_bytes: int) -> None:
        self.enabled = config.progress
        self.log_interval = config.log_interval
        self.total = max(total_file_bytes, 1)
        self.started = self.last_draw = time.perf_counter()
        self.next_log = config.log_interval
        self.terminal = sys.stderr.isatty()
        self.drawn = False

    def update(self, counters, final: bool = False) -> None:
        if not self.enabled or counters is None:
            return
        documents, tokens, text_bytes, file_bytes = list(counters)
        now = time.perf_counter()
        elapsed = max(now - self.started, 1e-9)
        rates = (
            f"{documents:,} docs, {documents / elapsed:,.0f} docs/s, "
            f"{tokens / elapsed / 1e6:,.2f}M tokens/s, {file_bytes / elapsed / 1e6:,.1f} MB/s"
        )
        if self.terminal:
            if final or now - self.last_draw >= 0.5:
                self.last_draw = now
                percent = 100 * min(file_bytes / self.total, 1.0)
                print(f"\rpreprocess {percent:5.1f}% | {rates} ", end="", file=sys.stderr)
                sys.stderr.flush()
                self.drawn = True
        elif documents >= self.next_log:
            self.next_log = (documents // self.log_interval + 1) * self.log_interval
            print(
                f"processed {documents:,} documents ({text_bytes / 1e6:,.1f} MB of text, "
                f"{100 * min(file_bytes / self.total, 1.0):.1f}% of the input): {rates}",
                file=sys.stderr,
                flush=True,
            )

    def close(self, counters=None) -> None:
        if counters is not None:
            self.update(counters, final=True)
        if self.drawn:
            print(file=sys.stderr, flush=True)


def run_preprocess(config: PreprocessConfig) -> PreprocessSummary:
    """Preprocess `config.input` into Megatron `.bin/.idx` outputs; see the module docstring.

    Raises:
        ValueError: for bad flags or tokenizer files (before any work), and with `strict` for
            the first bad record (`BadRecordError`, message `file:line: ...`).
    """
    from megatron.core.datasets.indexed_dataset import DType

    from megatron_hope.data.tokenizer_args import TokenizerArgs

    started = time.perf_counter()
    tokenizer_args = TokenizerArgs.of(config)
    tokenizer = tokenizer_args.build()
    if config.append_eod and tokenizer.eod is None:
        raise ValueError(f"--append-eod: {tokenizer!r} has no end-of-document token")
    files = readers.discover_inputs(config.input)
    if config.partitions > 1:
        logger.info(
            "--partitions %d: each input file is already its own partition", config.partitions
        )
    subsets = _assign_subsets(config, files)
    dtype = numpy.dtype(DType.optimal_dtype(tokenizer.vocab_size)).name

    splitter = None
    punkt_hash = None
    if config.split_sentences:
        from megatron_hope.data.sentences import (
            PUNKT_SAMPLE_BYTES,
            SentenceSplitter,
            punkt_fingerprint,
            train_punkt,
        )

        budget = config.punkt_sample_bytes or PUNKT_SAMPLE_BYTES
        params = train_punkt(_sample_texts(files, config.json_keys, 10**9, budget), budget)
        splitter = SentenceSplitter(params, keep_newlines=config.keep_newlines)
        punkt_hash = punkt_fingerprint(params)

    settings = asdict(
        _Settings(
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
    shard_dir = Path(f"{config.output_prefix}_shards")
    shard_dir.mkdir(parents=True, exist_ok=True)
    shards = []
    for index, (path, subset) in enumerate(zip(files, subsets, strict=False)):
        digest = hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:10]
        name = f"{_safe_name(path.name)}-{digest}"
        shards.append(_Shard(index, str(path), subset, str(shard_dir / (subset or "all") / name)))
    identities = {shard.path: _file_identity(shard.path) for shard in shards}

    run_identity = {
        "settings": settings,
        "inputs": [[identities[s.path], s.subset] for s in shards],
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

    summary = PreprocessSummary()
    mine = [s for s in shards if s.index % config.num_tasks == config.task_index]
    done: dict[int, dict] = {}
    pending = []
    for shard in mine:
        previous = _read_done(shard, settings, identities[shard.path], config)
        if previous is None:
            pending.append(shard)
        else:
            done[shard.index] = previous
    summary.shards_reused = len(done)

    sample = (
        _sample_texts(files, config.json_keys, SAMPLE_DOCUMENTS, SAMPLE_BYTES) if pending else []
    )
    encoder = select_encoder(tokenizer, sample, config.tokenizer_backend) if pending else None
    summary.backend = encoder.name if encoder else "none (all shards reused)"
    state = {
        "tokenizer_args": tokenizer_args,
        "backend": summary.backend,
        "json_keys": config.json_keys,
        "level": config.level,
        "dtype": dtype,
        "strict": config.strict,
        "append_eod": config.append_eod,
        "splitter": splitter,
        "settings": settings,
        "identities": identities,
    }
    for shard in pending:
        Path(shard.prefix).parent.mkdir(parents=True, exist_ok=True)
    _remove_temporaries(pending)  # left by a killed run; only this task owns these shards
    try:
        _encode_pending(
            config, pending, state, done, sum(identities[s.path]["size"] for s in pending)
        )
    except BaseException:
        _remove_temporaries(pending)  # workers terminated mid-shard leave theirs behind
        raise
    summary.shards_encoded = len(pending)

    skipped_lines: list[str] = []
    skipped: Counter = Counter()
    for shard in mine:
        record = done[shard.index]
        summary.documents += record["documents"]
        summary.text_bytes += record["text_bytes"]
        summary.tokens += sum(counts["tokens"] for counts in record["keys"].values())
        for line, reason, message in record["skipped"]:
            skipped[reason] += 1
            skipped_lines.append(f"{shard.path}:{line}\t{reason}\t{message}")
    summary.skipped = {reason: skipped[reason] for reason in readers.BAD_REASONS if skipped[reason]}
    summary.skipped_examples = [_example(line) for line in skipped_lines[:10]]
    if skipped_lines:
        _write_text(
            Path(f"{config.output_prefix}_skipped.tsv")
            if config.num_tasks == 1
            else shard_dir / f"skipped-task{config.task_index}.tsv",
            "file:line\treason\tmessage\n" + "\n".join(skipped_lines) + "\n",
        )

    if config.merge:
        summary.outputs = _merge(config, shards, dtype, settings, identities, done)
        summary.merged = True
        if not config.keep_shards:
            _remove_shards(config, shards, shard_dir)
    summary.seconds = time.perf_counter() - started
    if config.merge:
        _write_text(
            _summary_path(config),
            json.dumps({"run": run_identity, "summary": asdict(summary)}, indent=2) + "\n",
        )
    return summary


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


def _write_text(path: Path, text: str) -> None:
    temporary = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def _read_done(shard: _Shard, settings: dict, identity: dict, config) -> dict | None:
    """The shard's `.done.json` if it is complete for these settings and this input file."""
    try:
        record = json.loads(_done_path(shard.prefix).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if record.get("settings") != settings or record.get("input") != identity:
        return None
    for key in config.json_keys:
        stem = f"{shard.prefix}_{_safe_name(key)}_{config.level}"
        if not (Path(stem + ".bin").is_file() and Path(stem + ".idx").is_file()):
            return None
    return record


def _encode_pending(config, pending, state, done, total_bytes) -> None:
    progress = _Progress(config, total_bytes)
    counters = None
    # Biggest files first: the last worker to finish is then busy with a small file.
    order = sorted(pending, key=lambda s: -state["identities"][s.path]["size"])
    completed = 0
    try:
        if config.workers == 1 or len(pending) <= 1:
            counters = multiprocessing.Array("q", 4)
            _init_worker(state, counters, in_subprocess=False)
            _worker["on_batch"] = lambda: progress.update(counters)
            for shard in order:
                done[shard.index] = _encode_shard(shard)
                completed += 1
                progress.update(counters)
                if after_shard_hook is not None:
                    after_shard_hook(completed)
            return
        context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
        counters = context.Array("q", 4)
        # Set while the workers fork, so HF tokenizers' fork handler sees parallelism is off in
        # them (no "just got forked" warning); restored so this process keeps its threads.
        saved = os.environ.get("TOKENIZERS_PARALLELISM")
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        try:
            pool = context.Pool(
                min(config.workers, len(pending)),
                initializer=_init_worker,
                initargs=(state, counters, True),
            )
        finally:
            if saved is None:
                os.environ.pop("TOKENIZERS_PARALLELISM", None)
            else:
                os.environ["TOKENIZERS_PARALLELISM"] = saved
        with pool:
            results = {shard.index: pool.apply_async(_encode_shard, (shard,)) for shard in order}
            remaining = dict(results)
            while remaining:
                for index, result in list(remaining.items()):
                    if result.ready():
                        done[index] = result.get()  # re-raises a worker's exception here
                        del remaining[index]
                        completed += 1
                        if after_shard_hook is not None:
                            after_shard_hook(completed)
                progress.update(counters)
                if remaining:
                    next(iter(remaining.values())).wait(0.2)
            pool.close()
            pool.join()
    finally:
        progress.close(counters)


def _merge(config, shards, dtype, settings, identities, done) -> dict[str, dict]:
    """Concatenate every subset's shards, in sorted input order, into its final outputs."""
    missing = []
    for shard in shards:
        if shard.index not in done:
            record = _read_done(shard, settings, identities[shard.path], config)
            if record is None:
                missing.append(shard.path)
            else:
                done[shard.index] = record
    if missing:
        raise ValueError(
            f"cannot merge: {len(missing)} input files have no finished shard yet "
            f"(first: {missing[0]}); run the remaining --task-index values, or rerun without "
            f"--num-tasks to encode them here"
        )
    by_subset: dict[str | None, list[_Shard]] = {}
    for shard in shards:
        by_subset.setdefault(shard.subset, []).append(shard)
    outputs: dict[str, dict] = {}
    for subset, members in sorted(by_subset.items(), key=lambda item: str(item[0])):
        for key in config.json_keys:
            final = _output_prefix(config, subset, key)
            merge_indexed_datasets(
                [f"{shard.prefix}_{_safe_name(key)}_{config.level}" for shard in members], final
            )
            counts = [done[shard.index]["keys"][key] for shard in members]
            outputs[final] = {
                "subset": subset,
                "key": key,
                "documents": sum(c["documents"] for c in counts),
                "sequences": sum(c["sequences"] for c in counts),
                "tokens": sum(c["tokens"] for c in counts),
                "dtype": dtype,
            }
    return outputs


def _remove_temporaries(shards) -> None:
    for shard in shards:
        directory = Path(shard.prefix).parent
        for path in directory.glob(f"{Path(shard.prefix).name}[._]*.tmp-*"):
            path.unlink(missing_ok=True)


def _remove_shards(config, shards, shard_dir: Path) -> None:
    for shard in shards:
        for key in config.json_keys:
            stem = f"{shard.prefix}_{_safe_name(key)}_{config.level}"
            Path(stem + ".bin").unlink(missing_ok=True)
            Path(stem + ".idx").unlink(missing_ok=True)
        _done_path(shard.prefix).unlink(missing_ok=True)
    for directory in sorted(shard_dir.rglob("*"), reverse=True):
        if directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()
    if shard_dir.is_dir() and not any(shard_dir.iterdir()):
        shard_dir.rmdir()
