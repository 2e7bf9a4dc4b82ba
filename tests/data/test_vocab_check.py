"""Data of another tokenizer's vocabulary is a clear error before training (`vocab_check`).

PYTHONPATH=. python -m pytest tests/data/test_vocab_check.py -q
"""

from __future__ import annotations

import numpy
import pytest
from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

from megatron_hope.data import vocab_check
from megatron_hope.data.tokenizer_args import build_tokenizer
from megatron_hope.data.vocab_check import check_data_vocabulary


def write_data(prefix, documents, dtype=numpy.uint16):
    builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=dtype)
    for document in documents:
        builder.add_document(numpy.array(document, dtype=dtype), [len(document)])
    builder.finalize(f"{prefix}.idx")
    return str(prefix)


def test_ids_beyond_the_vocabulary_name_the_file_and_both_sizes(tmp_path):
    prefix = write_data(tmp_path / "data", [[1, 2, 3], [4, 600, 5]])
    small = build_tokenizer("NullTokenizer", None, vocab_size=500)
    with pytest.raises(ValueError) as error:
        check_data_vocabulary([prefix], small)
    message = str(error.value)
    assert f"{prefix}.bin holds token id 600" in message
    assert f"has only {small.vocab_size:,} tokens" in message and "--tokenizer-" in message
    check_data_vocabulary([prefix], build_tokenizer("NullTokenizer", None, vocab_size=1000))


def test_a_dtype_for_another_vocabulary_size_is_refused(tmp_path):
    prefix = write_data(tmp_path / "wide", [[1, 2, 3]], dtype=numpy.int32)
    with pytest.raises(ValueError, match=r"wide.idx stores int32 tokens.*at least 65,500"):
        check_data_vocabulary([prefix], build_tokenizer("NullTokenizer", None, vocab_size=500))
    narrow = write_data(tmp_path / "narrow", [[1, 2, 3]])
    with pytest.raises(ValueError, match=r"narrow.idx stores uint16 tokens.*fewer than 65,500"):
        check_data_vocabulary([narrow], build_tokenizer("NullTokenizer", None, vocab_size=70_000))


def test_large_files_are_sampled(tmp_path, monkeypatch):
    prefix = write_data(tmp_path / "big", [list(range(100)) * 50, [7000]])
    monkeypatch.setattr(vocab_check, "FULL_SCAN_BYTES", 1000)
    monkeypatch.setattr(vocab_check, "SAMPLE_WINDOW_BYTES", 64)
    assert vocab_check.max_token_id(prefix, numpy.dtype(numpy.uint16)) == 7000  # the last window


def test_hope_pretrain_refuses_data_of_another_tokenizer(tmp_path, capsys):
    from megatron_hope.training.cli import main

    prefix = write_data(tmp_path / "corpus_text_document", [[1, 2, 3, 900]])
    code = main(["--data-path", prefix, "--tokenizer-type", "NullTokenizer", "--vocab-size", "500"])
    assert code == 2
    err = capsys.readouterr().err
    assert f"{prefix}.bin holds token id 900" in err and "500" in err
