"""What `hope-preprocess` does (`PreprocessConfig`) and what it did (`PreprocessSummary`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
"""Bumped when shard contents or layout change for the same settings, so old shards are redone
(2: shards are byte ranges / chunks of a file, with range-relative line numbers)."""

LOG_INTERVAL = 1000
"""Documents between progress log lines (Megatron-LM's `--log-interval` default)."""

RANGE_BYTES = 64 << 20
"""A plain file is cut into ranges of about this many bytes (at line ends), a compressed one
into chunks of this many decompressed bytes: the unit of parallel work and of resumption."""

BATCH_DOCUMENTS = 512
BATCH_BYTES = 4 << 20
"""A batch ends at whichever comes first: bounds memory and keeps encode calls large."""

SAMPLE_DOCUMENTS = 64
SAMPLE_BYTES = 1 << 17
"""Input documents (up to this many characters) the fast tokenizer backend is checked on,
besides the probe strings: about 0.1 s with the reference encoder."""

NO_SUBSET = "other"
"""The subset of files outside RedPajama's layout when other files have one."""


class UsageError(ValueError):
    """A flag, or a combination of flags, that cannot work (`hope-preprocess` exits with 2, as
    for argparse's own errors); other ValueErrors are about the input's content (exit 1)."""


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
    """Processes that encode in parallel: byte ranges of plain files, chunks of compressed ones
    (decompressed once, by this process when there are fewer compressed files than workers)."""
    partitions: int = 1
    """Megatron-LM cuts its input into this many partition files; here every plain file is cut
    into at least this many byte ranges (more when it is larger than `range_bytes` per range),
    in place, order kept. The outputs are the same bytes for any value."""
    log_interval: int = LOG_INTERVAL
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
    """Slurm arrays: this task encodes its share of the units of work (a plain file's byte
    range, or a whole compressed file): largest first, each to the least-loaded task
    (`plan.assign_tasks`). The share depends on num_tasks: pass the array's size, not
    $SLURM_ARRAY_TASK_COUNT (resubmitting some tasks changes that)."""
    merge: bool | None = None
    """Merge the shards into the final outputs; default: when num_tasks == 1."""
    keep_shards: bool = False
    """Keep `<output_prefix>_shards/` after a successful merge."""
    progress: bool = True
    punkt_sample_bytes: int | None = None
    range_bytes: int = RANGE_BYTES
    """Bytes per range of a plain file / per chunk of a compressed one (tests make it small)."""

    def __post_init__(self) -> None:
        if isinstance(self.input, (str, os.PathLike)):
            self.input = [str(self.input)]
        self.json_keys = tuple(self.json_keys)
        if not str(self.output_prefix).strip():
            raise UsageError("--output-prefix is empty; give a path prefix such as "
                             "/data/rp/redpajama")
        if not self.json_keys:
            raise UsageError("--json-keys: give at least one key (e.g. text)")
        for name in ("workers", "partitions", "log_interval", "range_bytes"):
            if getattr(self, name) < 1:
                flag = name.replace("_", "-")
                raise UsageError(f"--{flag} ({getattr(self, name)}) must be at least 1")
        if not 0 <= self.task_index < self.num_tasks:
            raise UsageError(
                f"--task-index ({self.task_index}) must be in [0, --num-tasks "
                f"({self.num_tasks})); under Slurm use $SLURM_ARRAY_TASK_ID and the array's "
                f"size (examples/slurm_preprocess: NUM_TASKS)"
            )
        if self.keep_newlines and not self.split_sentences:
            logger.info("--keep-newlines has an effect only with --split-sentences")
        if self.merge is None:
            self.merge = self.num_tasks == 1

    @property
    def level(self) -> str:
        return "sentence" if self.split_sentences else "document"


@dataclass
class Settings:
    """Everything a shard's bytes depend on, except its input file and range."""

    format: int
    tokenizer: dict
    json_keys: list
    level: str
    keep_newlines: bool
    append_eod: bool
    dtype: str
    punkt: str | None


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
