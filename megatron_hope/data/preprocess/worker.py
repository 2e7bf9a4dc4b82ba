"""Worker side: one shard (a byte range, or a chunk of decompressed lines) -> its `.bin/.idx`.

A shard's files are written under temporary names and renamed when complete; its `.done.json`
(counts, range-relative line numbers of skipped records, the settings, the input's size and
mtime, the range) is written last, so a rerun after a kill trusts exactly the complete shards.
"""

from __future__ import annotations

import contextlib
import sys

import numpy

from megatron_hope.data import readers
from megatron_hope.data.backends import GigatokenEncoder, ReferenceEncoder, limit_threads_in_worker
from megatron_hope.data.indexed import append_texts, staged_pair
from megatron_hope.data.preprocess.config import BATCH_BYTES, BATCH_DOCUMENTS
from megatron_hope.data.preprocess.plan import (
    InputFile,
    Shard,
    count_lines,
    done_path,
    layout_path,
    read_done,
    stem,
    write_json,
)
from megatron_hope.data.readers import BadRecord, BadRecordError, Document

_worker: dict = {}
"""Per-process state: tokenizer, encoder, splitter, counters (set by `init_worker`)."""


def init_worker(state: dict, counters, in_subprocess: bool) -> None:
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
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):  # no glibc: workers just outlive it
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def count(documents: int, tokens: int, text_bytes: int, file_bytes: int) -> None:
    """Add to the shared progress counters (documents, tokens, text bytes, input file bytes)."""
    counters = _worker.get("counters")
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


def _count_file_bytes(n: int) -> None:
    count(0, 0, 0, n)


def encode_range(shard: Shard) -> dict:
    """Encode a plain file's byte range; returns the shard's `.done.json` contents."""
    file = shard.file
    lines = readers.iter_raw_lines(file.path, _count_file_bytes, shard.start, shard.end)
    return _encode(shard, readers.CountedLines(lines), first_line=None)


def encode_chunk(shard: Shard, data: bytes, first_line: int) -> dict:
    """Encode a chunk of a compressed file (whole lines, from `ChunkStream`)."""
    return _encode(shard, readers.CountedLines(readers.split_lines(data)), first_line)


class ChunkStream:
    """`(shard, first_line, data)` for each chunk of a compressed file, decompressing it once;
    after the iteration, `layout(state)` is the file's `.layout.json` record."""

    def __init__(self, file: InputFile, chunk_bytes: int, progress=None) -> None:
        self.file = file
        self.chunk_bytes = chunk_bytes
        self.progress = progress
        self.chunks = 0
        self.lines = 0
        self.skipped: list[list] = []

    def __iter__(self):
        first_line = 1
        try:
            for data in readers.iter_line_chunks(self.file.path, self.chunk_bytes, self.progress):
                yield Shard(self.file, self.chunks), first_line, data
                first_line += data.count(b"\n") + (not data.endswith(b"\n"))
                self.chunks += 1
        except readers.TruncatedStreamError as error:
            self.skipped.append([first_line, "truncated_file", f"truncated file ({error})"])
        if self.chunks == 0:
            # Empty, or corrupt from its first bytes: one empty shard, as an empty plain file
            # gets, so that the file still has its (empty) place in the merge.
            yield Shard(self.file, 0), first_line, b""
            self.chunks = 1
        self.lines = first_line - 1

    def layout(self, state: dict) -> dict:
        """Absolute line numbers in `skipped`: the stream knows where it is."""
        return {
            "settings": state["settings"],
            "input": state["identities"][self.file.path],
            "chunk_bytes": self.chunk_bytes,
            "chunks": self.chunks,
            "lines": self.lines,
            "skipped": self.skipped,
        }

    def finish(self, state: dict) -> dict:
        """Write the layout (after every chunk was read); strict: raise for a truncated file."""
        layout = self.layout(state)
        if state["strict"] and self.skipped:
            line, reason, message = self.skipped[0]
            raise BadRecordError(BadRecord(self.file.path, line, reason, message))
        write_json(layout_path(self.file), layout)
        return layout


def encode_stream(file: InputFile) -> tuple[dict, dict[str, dict], int]:
    """A whole compressed file in this worker: (layout, records by shard prefix, reused)."""
    stream = ChunkStream(file, _worker["range_bytes"], _count_file_bytes)
    records: dict[str, dict] = {}
    reused = 0
    for shard, first_line, data in stream:
        record = read_done(shard, _worker)
        reused += record is not None
        records[shard.prefix] = record or encode_chunk(shard, data, first_line)
    return stream.finish(_worker), records, reused


def _encode(shard: Shard, lines: readers.CountedLines, first_line: int | None) -> dict:
    """Encode a shard's lines; `first_line` (None: count it if needed) is only for --strict."""
    keys: tuple[str, ...] = _worker["json_keys"]
    path = shard.file.path
    dtype = numpy.dtype(_worker["dtype"]).type
    bad: list[BadRecord] = []
    stats = {"documents": 0, "text_bytes": 0}
    per_key = [{"documents": 0, "sequences": 0, "tokens": 0} for _ in keys]
    with contextlib.ExitStack() as stack:
        # .bin before .idx before .done.json: a shard counts as done only when all three exist.
        writers = [
            stack.enter_context(staged_pair(stem(shard.prefix, key, _worker["level"]), dtype))
            for key in keys
        ]
        batch: list[Document] = []
        batch_bytes = 0
        for item in readers.parse_records(lines, path, keys):
            if isinstance(item, BadRecord):
                if _worker["strict"]:
                    if first_line is None:
                        first_line = count_lines(path, shard.start) + 1
                    raise BadRecordError(_absolute(item, first_line))
                bad.append(item)
                continue
            batch.append(item)
            batch_bytes += sum(len(text) for text in item.texts)
            if len(batch) >= BATCH_DOCUMENTS or batch_bytes >= BATCH_BYTES:
                _write_batch(batch, writers, per_key, stats)
                batch, batch_bytes = [], 0
        if batch:
            _write_batch(batch, writers, per_key, stats)
    done = {
        "settings": _worker["settings"],
        "input": _worker["identities"][path],
        "range": shard.identity(_worker["range_bytes"]),
        "subset": shard.file.subset,
        "documents": stats["documents"],
        "text_bytes": stats["text_bytes"],
        "lines": lines.count,
        "keys": {key: counts for key, counts in zip(keys, per_key, strict=True)},
        "skipped": [[record.line, record.reason, record.message] for record in bad],
    }
    write_json(done_path(shard.prefix), done)
    return done


def _absolute(record: BadRecord, first_line: int) -> BadRecord:
    return BadRecord(record.path, record.line + first_line - 1, record.reason, record.message)


def _write_batch(batch: list[Document], writers, per_key: list[dict], stats: dict) -> None:
    """Encode a batch for every key and append it to each key's writer."""
    eod = _worker["tokenizer"].eod if _worker["append_eod"] else None
    tokens_written = batch_text_bytes = 0
    for key_index, writer in enumerate(writers):
        texts = [document.texts[key_index] for document in batch]
        text_bytes = sum(len(text.encode("utf-8")) for text in texts)
        stats["text_bytes"] += text_bytes
        batch_text_bytes += text_bytes
        sequences, tokens = append_texts(
            writer, texts, _worker["encoder"], eod, _worker.get("splitter")
        )
        counts = per_key[key_index]
        counts["documents"] += len(texts)
        counts["sequences"] += sequences
        counts["tokens"] += tokens
        tokens_written += tokens
    stats["documents"] += len(batch)
    count(len(batch), tokens_written, batch_text_bytes, 0)
