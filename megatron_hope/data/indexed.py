"""JSONL documents to Megatron's `.bin/.idx` pair, written by megatron-core's own builder.

The output is what Megatron-LM's `tools/preprocess_data.py --append-eod` writes for one JSON key:
one document (and one sequence) per JSONL line, its tokens followed by EOD, token dtype uint16
below 65,500 vocabulary entries and int32 above. `IndexedDataset(prefix)` reads it back.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Protocol

import numpy
from megatron.core.datasets.indexed_dataset import (
    DType,
    IndexedDatasetBuilder,
    get_bin_path,
    get_idx_path,
)

from megatron_hope.data.sample_corpus import iter_jsonl_texts

logger = logging.getLogger(__name__)


class BatchTokenizer(Protocol):
    """What `write_indexed_dataset` needs of a tokenizer (`HopeTokenizer` has it)."""

    @property
    def vocab_size(self) -> int: ...

    @property
    def eod(self) -> int: ...

    def encode_batch(self, texts: list[str]) -> list[list[int]]: ...


@dataclass(frozen=True)
class IndexedStats:
    """What `write_indexed_dataset` wrote."""

    prefix: Path
    """`<prefix>.bin` and `<prefix>.idx` exist."""

    num_documents: int
    """Documents written, one per non-blank JSONL line."""

    num_tokens: int
    """Tokens written, EOD tokens included."""

    dtype: str
    """numpy name of the token dtype in `.bin` (uint16 or int32)."""


def _batches(texts: Iterator[str], batch_size: int) -> Iterator[list[str]]:
    while batch := list(islice(texts, batch_size)):
        yield batch


def write_indexed_dataset(
    jsonl_paths: str | os.PathLike | Iterable[str | os.PathLike],
    tokenizer: BatchTokenizer,
    output_prefix: str | os.PathLike,
    json_key: str = "text",
    append_eod: bool = True,
    batch_size: int = 256,
    progress: bool = False,
) -> IndexedStats:
    """Tokenize JSONL documents in batches and write `<output_prefix>.bin/.idx`.

    Both files are written under temporary names; the old `.idx` is removed before the new `.bin`
    takes its name and the new `.idx` is renamed last, so an interrupted run never leaves a pair
    that looks complete.

    Args:
        jsonl_paths: one JSONL file or several; their documents are concatenated in order.
        tokenizer: provides `encode_batch`, `eod` and `vocab_size` (e.g. `HopeTokenizer`).
        output_prefix: the path of the pair without `.bin`/`.idx`.
        json_key: the field holding each document's text.
        append_eod: end every document with `tokenizer.eod`, which GPTDataset needs to tell
            documents apart once they are packed into samples.
        batch_size: documents per `encode_batch` call.
        progress: show a tqdm bar over documents.

    Raises:
        ValueError: naming `file:line` for a line that is not JSON, lacks `json_key` or holds a
            non-string under it.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size ({batch_size}) must be at least 1")
    output_prefix = Path(output_prefix)
    output_prefix.parent.mkdir(parents=True, exist_ok=True)
    # uint16 below 65,500 entries, int32 above: megatron-core's rule, which GPTDatasetConfig
    # mirrors in token_dtype_code.
    dtype = DType.optimal_dtype(tokenizer.vocab_size)
    bin_path, idx_path = (
        Path(get_bin_path(str(output_prefix))),
        Path(get_idx_path(str(output_prefix))),
    )
    suffix = f".tmp-{os.getpid()}"
    bin_temporary = bin_path.with_name(bin_path.name + suffix)
    idx_temporary = idx_path.with_name(idx_path.name + suffix)
    eod = [tokenizer.eod] if append_eod else []
    num_documents = num_tokens = 0
    bar = _progress_bar(progress, output_prefix.name)
    builder = None
    try:
        builder = IndexedDatasetBuilder(str(bin_temporary), dtype=dtype)
        for batch in _batches(iter_jsonl_texts(jsonl_paths, json_key), batch_size):
            for ids in tokenizer.encode_batch(batch):
                document = numpy.asarray(ids + eod, dtype=dtype)
                # One sequence per document, as preprocess_data.py writes without sentence splits.
                builder.add_document(document, [document.size])
                num_tokens += document.size
            num_documents += len(batch)
            if bar is not None:
                bar.update(len(batch))
        builder.finalize(str(idx_temporary))
        idx_path.unlink(missing_ok=True)
        os.replace(bin_temporary, bin_path)
        os.replace(idx_temporary, idx_path)
    finally:
        if bar is not None:
            bar.close()
        if builder is not None and not builder.data_file.closed:  # failed before finalize
            builder.data_file.close()
        bin_temporary.unlink(missing_ok=True)
        idx_temporary.unlink(missing_ok=True)
    logger.info(
        "wrote %s.{bin,idx}: %d documents, %d tokens (%s)",
        output_prefix,
        num_documents,
        num_tokens,
        numpy.dtype(dtype).name,
    )
    return IndexedStats(output_prefix, num_documents, num_tokens, numpy.dtype(dtype).name)


def _progress_bar(enabled: bool, description: str):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional: progress is a convenience
        return None
    return tqdm(desc=f"encoding {description}", unit=" docs")
