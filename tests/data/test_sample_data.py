"""The offline sample data end to end: corpus, tokenizer, `.bin/.idx`, and megatron-core reading it.

PYTHONPATH=. python -m pytest tests/data/test_sample_data.py -q
"""

from __future__ import annotations

import json
import logging

import numpy
import pytest
from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
from megatron.core.datasets.indexed_dataset import IndexedDataset

from megatron_hope.data.sample_corpus import iter_jsonl_texts
from megatron_hope.data.sample_data import prepare_sample_data
from megatron_hope.data.tokenizer import HopeTokenizer

# Small enough to build in about a second, large enough for a full 4096-entry vocabulary.
SAMPLE_BYTES = 800_000


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return prepare_sample_data(tmp_path_factory.mktemp("sample"), max_bytes=SAMPLE_BYTES)


@pytest.fixture(scope="module")
def tokenizer(sample):
    return HopeTokenizer(sample.tokenizer_path)


def test_corpus_lines_are_redpajama_records(sample):
    with open(sample.corpus_path, encoding="utf-8") as corpus:
        records = [json.loads(line) for line in corpus]
    assert len(records) == sample.num_documents
    assert all(set(record) == {"text", "meta"} for record in records)
    assert all(record["meta"]["source"] == "python-stdlib" for record in records)
    paths = [record["meta"]["path"] for record in records]
    assert paths == sorted(paths)
    assert sum(len(record["text"].encode()) for record in records) <= SAMPLE_BYTES


def test_documents_round_trip_through_indexed_dataset(sample, tokenizer):
    dataset = IndexedDataset(str(sample.data_prefix))
    texts = list(iter_jsonl_texts(sample.corpus_path))
    assert len(dataset) == len(texts) == sample.num_documents
    assert int(dataset.sequence_lengths.sum()) == sample.num_tokens
    for index in sorted({0, 1, len(texts) // 2, len(texts) - 1}):
        expected = [*tokenizer.tokenize(texts[index]), tokenizer.eod]
        assert dataset[index].tolist() == expected
        assert tokenizer.detokenize(dataset[index][:-1]) == texts[index]


def test_token_dtype_is_uint16_for_a_4096_vocabulary(sample, tokenizer):
    assert tokenizer.vocab_size == 4096
    dataset = IndexedDataset(str(sample.data_prefix))
    assert dataset.index.dtype == numpy.uint16


def test_two_builds_are_byte_identical(sample, tmp_path):
    again = prepare_sample_data(tmp_path, max_bytes=SAMPLE_BYTES)
    for first, second in [
        (sample.corpus_path, again.corpus_path),
        (sample.tokenizer_path, again.tokenizer_path),
        (f"{sample.data_prefix}.bin", f"{again.data_prefix}.bin"),
        (f"{sample.data_prefix}.idx", f"{again.data_prefix}.idx"),
    ]:
        with open(first, "rb") as a, open(second, "rb") as b:
            assert a.read() == b.read(), (first, second)


def test_matching_manifest_is_reused_and_a_changed_one_rebuilds(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="megatron_hope.data.sample_data")
    first = prepare_sample_data(tmp_path, vocab_size=512, max_bytes=100_000)
    mtime = first.tokenizer_path.stat().st_mtime_ns
    assert prepare_sample_data(tmp_path, vocab_size=512, max_bytes=100_000) == first
    assert first.tokenizer_path.stat().st_mtime_ns == mtime
    assert "reusing" in caplog.text

    # A truncated output invalidates the manifest even with unchanged settings.
    with open(f"{first.data_prefix}.bin", "r+b") as data:
        data.truncate(10)
    rebuilt = prepare_sample_data(tmp_path, vocab_size=512, max_bytes=100_000)
    dataset = IndexedDataset(str(rebuilt.data_prefix))
    assert int(dataset.sequence_lengths.sum()) == first.num_tokens

    smaller = prepare_sample_data(tmp_path, vocab_size=300, max_bytes=100_000)
    assert HopeTokenizer(smaller.tokenizer_path).vocab_size == 300


def test_gpt_dataset_builds_samples_from_the_output(sample, tokenizer, tmp_path):
    sequence_length = 64
    config = GPTDatasetConfig(
        random_seed=1234,
        sequence_length=sequence_length,
        blend=([str(sample.data_prefix)], None),
        # Every document to train: a split that gets no documents loops forever in 0.16.1.
        split="100,0,0",
        path_to_cache=str(tmp_path / "cache"),
        tokenizer=tokenizer,
        reset_position_ids=True,
        reset_attention_mask=True,
        eod_mask_loss=True,
    )
    train, valid, test = BlendedMegatronDatasetBuilder(
        GPTDataset, [16, None, None], lambda: True, config
    ).build()
    assert valid is None and test is None
    # One epoch at least: every token is in some sample, so there are about num_tokens / s of them.
    assert len(train) == (sample.num_tokens - 1) // sequence_length

    item = train[0]
    assert item["tokens"].shape == (sequence_length,)
    assert item["labels"].shape == (sequence_length,)
    # Labels are the tokens shifted by one.
    assert item["tokens"][1:].tolist() == item["labels"][:-1].tolist()
    # The EOD-masking path found our EOD: wherever the input is EOD, the loss is masked.
    eod_positions = item["tokens"] == tokenizer.eod
    assert (item["loss_mask"][eod_positions] == 0).all()

    # Samples cover the whole corpus, so some of them cross a document boundary.
    crossing = next(
        train[index]
        for index in range(len(train))
        if (train[index]["tokens"] == tokenizer.eod).any()
    )
    eod_at = int((crossing["tokens"] == tokenizer.eod).nonzero()[0])
    if eod_at + 1 < sequence_length:
        assert int(crossing["position_ids"][eod_at + 1]) == 0
