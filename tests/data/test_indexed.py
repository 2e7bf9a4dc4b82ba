"""`write_indexed_dataset` against megatron-core's reader, and its errors for bad JSONL.

PYTHONPATH=. python -m pytest tests/data/test_indexed.py -q
"""

from __future__ import annotations

import json

import numpy
import pytest
from megatron.core.datasets.indexed_dataset import IndexedDataset

from megatron_hope.data.indexed import write_indexed_dataset


class CharacterTokenizer:
    """Independent reference: one id per character code point, EOD after the largest."""

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size
        self.eod = vocab_size - 1

    def encode_batch(self, texts):
        return [[ord(character) for character in text] for text in texts]


def write_jsonl(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.mark.parametrize("vocab_size, dtype", [(4096, numpy.uint16), (70_000, numpy.int32)])
def test_documents_and_dtype_match_the_reference(tmp_path, vocab_size, dtype):
    texts = ["first document", "", "second ✓", "x" * 1000]
    first = write_jsonl(tmp_path / "a.jsonl", [json.dumps({"text": t}) for t in texts[:2]])
    # Blank lines are not documents; several files are concatenated in order.
    second = write_jsonl(tmp_path / "b.jsonl", ["", *(json.dumps({"text": t}) for t in texts[2:])])
    tokenizer = CharacterTokenizer(vocab_size)

    stats = write_indexed_dataset([first, second], tokenizer, tmp_path / "out", batch_size=3)

    dataset = IndexedDataset(str(tmp_path / "out"))
    assert dataset.index.dtype == dtype and stats.dtype == numpy.dtype(dtype).name
    assert stats.num_documents == len(dataset) == len(texts)
    assert list(dataset.document_indices) == list(range(len(texts) + 1))
    for index, text in enumerate(texts):
        assert dataset[index].tolist() == [ord(c) for c in text] + [tokenizer.eod]
    assert stats.num_tokens == sum(len(t) + 1 for t in texts)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.jsonl",
        "b.jsonl",
        "out.bin",
        "out.idx",
    ]


def test_without_eod(tmp_path):
    corpus = write_jsonl(tmp_path / "a.jsonl", [json.dumps({"content": "abc"})])
    write_indexed_dataset(
        corpus, CharacterTokenizer(512), tmp_path / "out", json_key="content", append_eod=False
    )
    # Keep the dataset alive while reading: its arrays are views of an mmap it closes on deletion.
    dataset = IndexedDataset(str(tmp_path / "out"))
    assert dataset[0].tolist() == [97, 98, 99]


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ("{not json", "not valid JSON"),
        ('["a list"]', "expected a JSON object"),
        ('{"meta": {}}', "no 'text' key"),
        ('{"text": 42}', "'text' holds a int"),
    ],
)
def test_bad_lines_are_named_by_file_and_line(tmp_path, bad_line, message):
    corpus = write_jsonl(tmp_path / "bad.jsonl", [json.dumps({"text": "fine"}), bad_line])
    prefix = tmp_path / "out"
    # A run that fails leaves the previous pair as it was and no temporary files behind.
    write_indexed_dataset(
        write_jsonl(tmp_path / "ok.jsonl", ['{"text": "ok"}']), CharacterTokenizer(512), prefix
    )

    with pytest.raises(ValueError, match=f"bad.jsonl:2: {message}"):
        write_indexed_dataset(corpus, CharacterTokenizer(512), prefix)

    assert not list(tmp_path.glob("*.tmp-*"))
    dataset = IndexedDataset(str(prefix))
    assert dataset[0].tolist() == [ord("o"), ord("k"), 511]


def test_streaming_merge_equals_megatron_core_add_index(tmp_path):
    from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder

    from megatron_hope.data.indexed import merge_indexed_datasets

    tokenizer = CharacterTokenizer(70_000)
    parts = []
    for number, texts in enumerate([["a", "bc", "déf"], ["only one"], ["x" * 300, "y", "z"]]):
        corpus = write_jsonl(tmp_path / f"{number}.jsonl", [json.dumps({"text": t}) for t in texts])
        write_indexed_dataset(corpus, tokenizer, tmp_path / f"part{number}")
        parts.append(str(tmp_path / f"part{number}"))

    dtype = DType.optimal_dtype(70_000)
    builder = IndexedDatasetBuilder(str(tmp_path / "builder.bin"), dtype=dtype)
    for part in parts:
        builder.add_index(part)
    builder.finalize(str(tmp_path / "builder.idx"))
    stats = merge_indexed_datasets(parts, tmp_path / "merged")

    for extension in (".bin", ".idx"):
        merged = (tmp_path / f"merged{extension}").read_bytes()
        assert merged == (tmp_path / f"builder{extension}").read_bytes()
    assert (stats.num_documents, stats.num_tokens, stats.dtype) == (7, 316 + 7, "int32")
    dataset = IndexedDataset(str(tmp_path / "merged"))
    assert dataset[3].tolist() == [ord(c) for c in "only one"] + [tokenizer.eod]
    assert not list(tmp_path.glob("*.tmp-*"))


def test_index_writer_equals_megatron_core_builder(tmp_path):
    """`IndexWriter` (numpy only, no torch) writes the bytes of `IndexedDatasetBuilder`:
    several sequences per document, an empty sequence, both dtypes."""
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    from megatron_hope.data.indexed import IndexWriter, optimal_dtype, read_index

    documents = [[[1, 2, 3]], [[4], [], [5, 6]], [[7] * 40, [8]], [[9]]]
    for vocab_size in (1000, 70_000):
        dtype = optimal_dtype(vocab_size)
        builder = IndexedDatasetBuilder(str(tmp_path / "builder.bin"), dtype=dtype)
        writer = IndexWriter(tmp_path / "ours.bin", dtype)
        for batch in (documents[:2], documents[2:]):
            for document in batch:
                builder.add_document(
                    numpy.array([t for s in document for t in s]), [len(s) for s in document]
                )
            flat = numpy.array([t for d in batch for s in d for t in s], dtype=numpy.int64)
            lengths = numpy.array([len(s) for d in batch for s in d])
            writer.add_documents(flat, lengths, numpy.array([len(d) for d in batch]))
        builder.finalize(str(tmp_path / "builder.idx"))
        writer.finalize(tmp_path / "ours.idx")
        for extension in (".bin", ".idx"):
            ours = (tmp_path / f"ours{extension}").read_bytes()
            assert ours == (tmp_path / f"builder{extension}").read_bytes(), (vocab_size, extension)
        index = read_index(tmp_path / "ours")
        assert index.dtype == dtype and index.document_indices.tolist() == [0, 1, 4, 6, 7]


@pytest.mark.parametrize("kernel_copy", [True, False], ids=["copy_file_range", "buffered"])
def test_concatenate_files_at_offsets_equals_appending_in_order(tmp_path, monkeypatch,
                                                                 kernel_copy):
    import os

    from megatron_hope.data.indexed import concatenate_files

    rng = numpy.random.default_rng(0)
    parts = []
    for index, size in enumerate([0, 1, 70_000, 3, 1 << 20]):
        path = tmp_path / f"part{index}.bin"
        path.write_bytes(rng.integers(0, 256, size, dtype=numpy.uint8).tobytes())
        parts.append(path)
    if not kernel_copy:  # a platform or filesystem pair without it
        def unavailable(*args):
            raise OSError("copy_file_range: not supported")

        monkeypatch.setattr(os, "copy_file_range", unavailable, raising=False)
    with open(tmp_path / "out.bin", "wb") as out:
        out.write(b"head")
        concatenate_files(parts, out, threads=3)
        out.write(b"tail")  # the file position ends after the parts
    expected = b"head" + b"".join(path.read_bytes() for path in parts) + b"tail"
    assert (tmp_path / "out.bin").read_bytes() == expected
