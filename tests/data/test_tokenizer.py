"""`train_bpe_tokenizer`, the `HopeTokenizer` adapter, and `build_tokenizer`'s flag errors.

PYTHONPATH=. python -m pytest tests/data/test_tokenizer.py -q
"""

from __future__ import annotations

import json
import pickle

import pytest
from megatron.core.tokenizers import MegatronTokenizerBase

from megatron_hope.data.tokenizer import (
    EOD_TOKEN,
    HopeTokenizer,
    build_tokenizer,
    train_bpe_tokenizer,
)

DOCUMENTS = [
    "The quick brown fox jumps over the lazy dog.",
    "def rotate(q, k):\n    return q @ k.T  # naïve, ünïcödé and emoji 🦊\n",
    "Position encodings tell attention where a token is.",
] * 20


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tokenizer")
    corpus = directory / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": text}) + "\n" for text in DOCUMENTS))
    return train_bpe_tokenizer(corpus, directory, vocab_size=300)


def test_training_writes_tokenizer_json_with_special_tokens_first(tokenizer_path):
    assert tokenizer_path.name == "tokenizer.json"
    assert not list(tokenizer_path.parent.glob("*.tmp-*"))
    tokenizer = HopeTokenizer(tokenizer_path)
    assert (tokenizer.eod, tokenizer.pad) == (0, 1)
    assert tokenizer.eos == tokenizer.eod and tokenizer.bos is None
    assert tokenizer.vocab_size == 300
    assert tokenizer.inv_vocab[tokenizer.eod] == EOD_TOKEN


def test_text_round_trips_including_unseen_bytes(tokenizer_path):
    tokenizer = HopeTokenizer(tokenizer_path.parent)  # a directory holding tokenizer.json works too
    for text in [*DOCUMENTS[:3], "never seen: ßøæ 中文 \x00\t"]:
        ids = tokenizer.tokenize(text)
        assert tokenizer.detokenize(ids) == text
    assert tokenizer.encode_batch(DOCUMENTS[:3]) == [tokenizer.tokenize(t) for t in DOCUMENTS[:3]]


def test_eod_inside_a_document_stays_text(tokenizer_path):
    tokenizer = HopeTokenizer(tokenizer_path)
    ids = tokenizer.tokenize(f"before {EOD_TOKEN} after")
    assert tokenizer.eod not in ids
    assert tokenizer.detokenize(ids) == f"before {EOD_TOKEN} after"


def test_has_megatron_tokenizers_interface_and_pickles(tokenizer_path):
    tokenizer = HopeTokenizer(tokenizer_path)
    # Every method megatron-core's tokenizer base declares (duck-typed: importing that base would
    # cost hope-preprocess 3 s of megatron-core imports at start-up).
    assert MegatronTokenizerBase.__abstractmethods__ <= set(dir(tokenizer))
    assert tokenizer.unique_identifiers["tokenizer_path"] == str(tokenizer_path)
    # DataLoader workers receive the dataset config, tokenizer included, by pickling.
    copy = pickle.loads(pickle.dumps(tokenizer))
    assert copy.tokenize(DOCUMENTS[0]) == tokenizer.tokenize(DOCUMENTS[0])


def test_build_tokenizer_accepts_huggingface_tokenizer(tokenizer_path):
    tokenizer = build_tokenizer("HuggingFaceTokenizer", str(tokenizer_path))
    assert tokenizer.vocab_size == 300


@pytest.mark.parametrize(
    "tokenizer_type, tokenizer_model, flag, value",
    [
        ("GPT2BPETokenizer", "x", "--tokenizer-type", "GPT2BPETokenizer"),
        ("HuggingFaceTokenizer", None, "--tokenizer-model", None),
        ("HuggingFaceTokenizer", "/no/such/tokenizer.json", "--tokenizer-model", "/no/such"),
    ],
)
def test_build_tokenizer_errors_name_the_flag(tokenizer_type, tokenizer_model, flag, value):
    with pytest.raises(ValueError, match=flag) as error:
        build_tokenizer(tokenizer_type, tokenizer_model)
    message = str(error.value)
    assert value is None or value in message
    assert "--tokenizer-type HuggingFaceTokenizer" in message  # the fix


def test_build_tokenizer_rejects_unreadable_and_incomplete_files(tmp_path, tokenizer_path):
    with pytest.raises(ValueError, match=r"--tokenizer-model.*without a tokenizer.json"):
        build_tokenizer("HuggingFaceTokenizer", tmp_path)
    broken = tmp_path / "tokenizer.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match=r"--tokenizer-model.*not a HuggingFace tokenizers file"):
        build_tokenizer("HuggingFaceTokenizer", broken)

    # A tokenizer without an end-of-document token cannot separate documents.
    no_eod = tmp_path / "no_eod"
    no_eod.mkdir()
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"text": "some text"}) + "\n")
    train_bpe_tokenizer(corpus, no_eod, vocab_size=260, special_tokens=("<s>",))
    with pytest.raises(ValueError, match=r"--tokenizer-model.*end-of-document"):
        build_tokenizer("HuggingFaceTokenizer", no_eod)


def test_vocab_size_too_small_for_the_byte_alphabet(tmp_path):
    with pytest.raises(ValueError, match="vocab_size \\(100\\)"):
        train_bpe_tokenizer(tmp_path / "unused.jsonl", tmp_path, vocab_size=100)
