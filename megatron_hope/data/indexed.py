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
    from megatron_hope.data.backends import ReferenceEncoder
    from megatron_hope.data.preprocess import append_texts

    encoder = ReferenceEncoder(tokenizer)
    eod = tokenizer.eod if append_eod else None
    num_documents = num_tokens = 0
    bar = _progress_bar(progress, output_prefix.name)
    builder = None
    try:
        builder = IndexedDatasetBuilder(str(bin_temporary), dtype=dtype)
        for batch in _batches(iter_jsonl_texts(jsonl_paths, json_key), batch_size):
            # One sequence per document, as preprocess_data.py writes without sentence splits.
            num_tokens += append_texts(builder, batch, encoder, eod)[1]
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


def merge_indexed_datasets(
    prefixes: Iterable[str | os.PathLike], output_prefix: str | os.PathLike
) -> IndexedStats:
    """Concatenate `.bin/.idx` pairs, in order, into `<output_prefix>.bin/.idx`, streaming.

    The bytes are exactly those of megatron-core's `IndexedDatasetBuilder.add_index` over the same
    prefixes then `finalize` (tests/data/test_indexed.py checks it), but memory stays at one
    input index: the builder keeps every sequence length and document index of the whole output in
    Python lists (about 100 bytes per sequence with the pointers `finalize` derives: tens of GB
    for RedPajama's common_crawl), which is what runs Megatron-LM's merge out of memory. Inputs
    are read with megatron-core's own `IndexedDataset`; the `.idx` written is its documented
    layout: header, version, dtype code, counts, int32 lengths, int64 byte pointers, int64
    document indices. Written under temporary names and renamed when complete.
    """
    import shutil
    import struct

    from megatron.core.datasets.indexed_dataset import IndexedDataset

    prefixes = [str(prefix) for prefix in prefixes]
    if not prefixes:
        raise ValueError("nothing to merge: no input prefixes")
    output_prefix = Path(output_prefix)
    output_prefix.parent.mkdir(parents=True, exist_ok=True)

    def each_index():
        for prefix in prefixes:
            dataset = IndexedDataset(prefix)
            yield prefix, dataset.index
            del dataset

    dtype = sequences = None
    sequences = documents = tokens = 0
    for prefix, index in each_index():
        if dtype is None:
            dtype = index.dtype
        elif index.dtype != dtype:
            raise ValueError(
                f"{prefix}: token dtype {numpy.dtype(index.dtype).name} differs from "
                f"{numpy.dtype(dtype).name} of {prefixes[0]}; merge outputs of one tokenizer"
            )
        sequences += len(index.sequence_lengths)
        documents += len(index.document_indices) - 1
        tokens += int(index.sequence_lengths.sum(dtype=numpy.int64))
    bin_path = Path(get_bin_path(str(output_prefix)))
    idx_path = Path(get_idx_path(str(output_prefix)))
    suffix = f".tmp-{os.getpid()}"
    bin_temporary = bin_path.with_name(bin_path.name + suffix)
    idx_temporary = idx_path.with_name(idx_path.name + suffix)
    try:
        with open(bin_temporary, "wb") as data:
            for prefix in prefixes:
                with open(get_bin_path(prefix), "rb") as part:
                    shutil.copyfileobj(part, data, 16 << 20)
        with open(idx_temporary, "wb") as index_file:
            index_file.write(b"MMIDIDX\x00\x00")
            index_file.write(struct.pack("<Q", 1))
            index_file.write(struct.pack("<B", DType.code_from_dtype(dtype)))
            index_file.write(struct.pack("<Q", sequences))
            index_file.write(struct.pack("<Q", documents + 1))
            for _, index in each_index():
                index_file.write(index.sequence_lengths.astype(numpy.int32).tobytes(order="C"))
            byte_offset = 0
            for prefix, index in each_index():
                pointers = index.sequence_pointers.astype(numpy.int64) + byte_offset
                index_file.write(pointers.tobytes(order="C"))
                byte_offset += os.path.getsize(get_bin_path(prefix))
            index_file.write(numpy.zeros(1, dtype=numpy.int64).tobytes())
            sequence_offset = 0
            for _, index in each_index():
                ends = index.document_indices[1:].astype(numpy.int64) + sequence_offset
                index_file.write(ends.tobytes(order="C"))
                sequence_offset += len(index.sequence_lengths)
        idx_path.unlink(missing_ok=True)
        os.replace(bin_temporary, bin_path)
        os.replace(idx_temporary, idx_path)
    finally:
        bin_temporary.unlink(missing_ok=True)
        idx_temporary.unlink(missing_ok=True)
    return IndexedStats(output_prefix, documents, tokens, numpy.dtype(dtype).name)
