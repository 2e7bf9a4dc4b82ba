"""Megatron's `.bin/.idx` pair: writing, streaming merge, and JSONL documents to a pair.

The output is what Megatron-LM's `tools/preprocess_data.py --append-eod` writes for one JSON key:
one document (and one sequence) per JSONL line, its tokens followed by EOD, token dtype uint16
below 65,500 vocabulary entries and int32 above. `IndexedDataset(prefix)` reads it back.

The bytes are those of megatron-core's `IndexedDatasetBuilder` (`add_document` ... `finalize`,
`add_index` for a merge; tests/data/test_indexed.py checks both), written here with numpy only:
megatron-core's module imports torch (seconds of start-up a preprocessing run does not need),
and its builder keeps a Python int per sequence where `IndexWriter` keeps 12 bytes.
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import accumulate, islice
from pathlib import Path
from typing import Protocol

import numpy

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


INDEX_HEADER = b"MMIDIDX\x00\x00"
INDEX_VERSION = 1
DTYPE_CODES = {
    numpy.uint8: 1,
    numpy.int8: 2,
    numpy.int16: 3,
    numpy.int32: 4,
    numpy.int64: 5,
    numpy.float64: 6,
    numpy.float32: 7,
    numpy.uint16: 8,
}
"""megatron-core's `DType` codes in the `.idx` header."""


def optimal_dtype(vocab_size: int | None) -> type[numpy.number]:
    """megatron-core's `DType.optimal_dtype`: uint16 below 65,500 entries, else int32."""
    return numpy.uint16 if vocab_size is not None and vocab_size < 65500 else numpy.int32


class IndexWriter:
    """Append documents to `<prefix>.bin`; `finalize` writes `<prefix>.idx`.

    The bytes of megatron-core's `IndexedDatasetBuilder(bin_path, dtype)` fed the same
    documents through `add_document`, then `finalize(idx_path)`.
    """

    def __init__(self, bin_path: str | os.PathLike, dtype: type[numpy.number]) -> None:
        self.dtype = numpy.dtype(dtype).type
        self.data_file = open(bin_path, "wb")  # noqa: SIM115 - closed by finalize/close
        self._sequence_lengths: list[numpy.ndarray] = []
        self._sequences_per_document: list[numpy.ndarray] = []

    def add_documents(
        self, flat: numpy.ndarray, sequence_lengths: numpy.ndarray, sequences_per_document
    ) -> None:
        """A batch of documents: all ids `[n]`, each sequence's length `[s]`, and each
        document's number of sequences `[d]` (they sum to s)."""
        if flat.size and int(flat.max()) > numpy.iinfo(self.dtype).max:
            raise ValueError(f"token id {int(flat.max())} does not fit {self.dtype.__name__}")
        self.data_file.write(numpy.asarray(flat, dtype=self.dtype).tobytes(order="C"))
        self._sequence_lengths.append(numpy.asarray(sequence_lengths, dtype=numpy.int32))
        self._sequences_per_document.append(numpy.asarray(sequences_per_document, numpy.int64))

    def finalize(self, idx_path: str | os.PathLike) -> None:
        self.data_file.close()
        lengths = numpy.concatenate([numpy.zeros(0, numpy.int32), *self._sequence_lengths])
        per_document = numpy.concatenate(
            [numpy.zeros(0, numpy.int64), *self._sequences_per_document]
        )
        pointers = numpy.zeros(lengths.size, dtype=numpy.int64)
        itemsize = numpy.dtype(self.dtype).itemsize
        numpy.cumsum(lengths[:-1].astype(numpy.int64) * itemsize, out=pointers[1:])
        documents = numpy.concatenate([[0], numpy.cumsum(per_document)]).astype(numpy.int64)
        with open(idx_path, "wb") as index_file:
            _write_index_header(index_file, self.dtype, lengths.size, documents.size)
            for array in (lengths, pointers, documents):
                index_file.write(array.tobytes(order="C"))

    def close(self) -> None:
        if not self.data_file.closed:
            self.data_file.close()


def _write_index_header(index_file, dtype, sequences: int, document_indices: int) -> None:
    index_file.write(INDEX_HEADER)
    index_file.write(struct.pack("<Q", INDEX_VERSION))
    index_file.write(struct.pack("<B", DTYPE_CODES[numpy.dtype(dtype).type]))
    index_file.write(struct.pack("<Q", sequences))
    index_file.write(struct.pack("<Q", document_indices))


@dataclass(frozen=True)
class IndexArrays:
    """A `.idx` file read with numpy (memory-mapped): megatron-core's `_IndexReader` fields."""

    dtype: type[numpy.number]
    sequence_lengths: numpy.ndarray
    sequence_pointers: numpy.ndarray
    document_indices: numpy.ndarray


def read_index(prefix: str | os.PathLike) -> IndexArrays:
    """`<prefix>.idx` as arrays; ValueError when it is not a version-1 Megatron index."""
    path = f"{prefix}.idx"
    with open(path, "rb") as stream:
        head = stream.read(34)
    if len(head) < 34 or head[:9] != INDEX_HEADER or struct.unpack("<Q", head[9:17])[0] != 1:
        raise ValueError(f"{path}: not a Megatron .idx file (version 1)")
    codes = {code: dtype for dtype, code in DTYPE_CODES.items()}
    dtype = codes[head[17]]
    sequences, document_indices = struct.unpack("<QQ", head[18:34])
    if sequences + document_indices == 0:
        empty = numpy.zeros(0, numpy.int64)
        return IndexArrays(dtype, empty.astype(numpy.int32), empty, empty)
    data = numpy.memmap(path, mode="r", dtype=numpy.uint8)
    lengths = data[34 : 34 + 4 * sequences].view(numpy.int32)
    offset = 34 + 4 * sequences
    pointers = data[offset : offset + 8 * sequences].view(numpy.int64)
    offset += 8 * sequences
    documents = data[offset : offset + 8 * document_indices].view(numpy.int64)
    return IndexArrays(dtype, lengths, pointers, documents)


def append_texts(writer: IndexWriter, texts: Sequence[str], encoder, eod, splitter=None):
    """Encode `texts` as documents and append them to `writer`.

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
    writer.add_documents(flat, sequence_lengths, sequences_per_document)
    return int(sequence_lengths.size), int(flat.size)


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
    from megatron_hope.data.backends import ReferenceEncoder

    output_prefix = Path(output_prefix)
    output_prefix.parent.mkdir(parents=True, exist_ok=True)
    # uint16 below 65,500 entries, int32 above: megatron-core's rule, which GPTDatasetConfig
    # mirrors in token_dtype_code.
    dtype = optimal_dtype(tokenizer.vocab_size)
    encoder = ReferenceEncoder(tokenizer)
    eod = tokenizer.eod if append_eod else None
    num_documents = num_tokens = 0
    bar = _progress_bar(progress, output_prefix.name)
    try:
        with staged_pair(output_prefix, dtype) as writer:
            for batch in _batches(iter_jsonl_texts(jsonl_paths, json_key), batch_size):
                # One sequence per document, as preprocess_data.py writes without sentence splits.
                num_tokens += append_texts(writer, batch, encoder, eod)[1]
                num_documents += len(batch)
                if bar is not None:
                    bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
    logger.info(
        "wrote %s.{bin,idx}: %d documents, %d tokens (%s)",
        output_prefix,
        num_documents,
        num_tokens,
        numpy.dtype(dtype).name,
    )
    return IndexedStats(output_prefix, num_documents, num_tokens, numpy.dtype(dtype).name)


class staged_pair:
    """`with staged_pair(prefix, dtype) as writer:` an `IndexWriter` on temporary names; on a
    clean exit the old `.idx` is removed, the new `.bin` then `.idx` take their final names; on
    an exception the temporaries are removed and the old pair stays as it was."""

    def __init__(self, prefix: str | os.PathLike, dtype, write_index: bool = True) -> None:
        self.bin_path, self.idx_path = Path(f"{prefix}.bin"), Path(f"{prefix}.idx")
        suffix = f".tmp-{os.getpid()}"
        self.bin_temporary = self.bin_path.with_name(self.bin_path.name + suffix)
        self.idx_temporary = self.idx_path.with_name(self.idx_path.name + suffix)
        self.dtype = dtype
        self.write_index = write_index
        """False: the caller writes `idx_temporary` itself."""
        self.writer: IndexWriter | None = None

    def __enter__(self) -> IndexWriter:
        self.writer = IndexWriter(self.bin_temporary, self.dtype)
        return self.writer

    def __exit__(self, kind, error, traceback) -> None:
        try:
            if kind is None:
                if self.write_index:
                    self.writer.finalize(self.idx_temporary)
                self.writer.close()
                self.idx_path.unlink(missing_ok=True)
                os.replace(self.bin_temporary, self.bin_path)
                os.replace(self.idx_temporary, self.idx_path)
        finally:
            self.writer.close()
            self.bin_temporary.unlink(missing_ok=True)
            self.idx_temporary.unlink(missing_ok=True)


def _progress_bar(enabled: bool, description: str):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional: progress is a convenience
        return None
    return tqdm(desc=f"encoding {description}", unit=" docs")


def concatenate_files(sources: Sequence[str | os.PathLike], destination,
                      threads: int = 1) -> None:
    """Append the `sources`, in order, to the open binary file `destination`.

    Every source's place is known from the sizes, so each is copied to its own offset in the
    kernel (`copy_file_range`: no pass through Python's buffers, a reflink where the filesystem
    has them), `threads` at a time: with N preprocessing workers the merge is not the one serial
    pass over the output. Where the kernel copy is unavailable, a 16 MiB buffered copy in order.
    """
    destination.flush()
    start = destination.tell()
    sizes = [os.path.getsize(source) for source in sources]
    *offsets, end = accumulate(sizes, initial=start)
    output = destination.fileno()

    def copy(index: int) -> None:
        with open(sources[index], "rb") as part:
            done = 0
            while done < sizes[index]:
                copied = os.copy_file_range(part.fileno(), output, sizes[index] - done,
                                            done, offsets[index] + done)
                if copied == 0:
                    raise OSError(f"{sources[index]}: shorter than its {sizes[index]} bytes")
                done += copied

    try:
        with ThreadPoolExecutor(max(1, threads)) as pool:
            list(pool.map(copy, range(len(sources))))  # the kernel copy releases the GIL
    except (AttributeError, OSError):  # no such call (not Linux), or not between these files
        os.ftruncate(output, start)
        destination.seek(start)
        for source in sources:
            with open(source, "rb") as part:
                shutil.copyfileobj(part, destination, 16 << 20)
        return
    destination.seek(end)


def merge_indexed_datasets(
    prefixes: Iterable[str | os.PathLike], output_prefix: str | os.PathLike, threads: int = 1
) -> IndexedStats:
    """Concatenate `.bin/.idx` pairs, in order, into `<output_prefix>.bin/.idx`, streaming.

    The bytes are exactly those of megatron-core's `IndexedDatasetBuilder.add_index` over the same
    prefixes then `finalize` (tests/data/test_indexed.py checks it), but memory stays at one
    input index: the builder keeps every sequence length and document index of the whole output in
    Python lists (about 100 bytes per sequence with the pointers `finalize` derives: tens of GB
    for RedPajama's common_crawl), which is what runs Megatron-LM's merge out of memory. Written
    under temporary names and renamed when complete; the `.bin` parts are copied `threads` at a
    time (`concatenate_files`).
    """
    prefixes = [str(prefix) for prefix in prefixes]
    if not prefixes:
        raise ValueError("nothing to merge: no input prefixes")
    output_prefix = Path(output_prefix)
    output_prefix.parent.mkdir(parents=True, exist_ok=True)

    def each_index() -> Iterator[tuple[str, IndexArrays]]:
        for prefix in prefixes:
            yield prefix, read_index(prefix)

    dtype = None
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
    staged = staged_pair(output_prefix, dtype, write_index=False)
    with staged as writer:
        concatenate_files([f"{prefix}.bin" for prefix in prefixes], writer.data_file, threads)
        with open(staged.idx_temporary, "wb") as index_file:
            _write_index_header(index_file, dtype, sequences, documents + 1)
            for _, index in each_index():
                index_file.write(index.sequence_lengths.astype(numpy.int32).tobytes(order="C"))
            byte_offset = 0
            for prefix, index in each_index():
                pointers = index.sequence_pointers.astype(numpy.int64) + byte_offset
                index_file.write(pointers.tobytes(order="C"))
                byte_offset += os.path.getsize(f"{prefix}.bin")
            index_file.write(numpy.zeros(1, dtype=numpy.int64).tobytes())
            sequence_offset = 0
            for _, index in each_index():
                ends = index.document_indices[1:].astype(numpy.int64) + sequence_offset
                index_file.write(ends.tobytes(order="C"))
                sequence_offset += len(index.sequence_lengths)
    return IndexedStats(output_prefix, documents, tokens, numpy.dtype(dtype).name)
