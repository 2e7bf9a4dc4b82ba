"""Tokenizer types and the fast backend: gigatoken only where its ids equal the reference's.

PYTHONPATH=. python -m pytest tests/data/test_backends.py -q
"""

from __future__ import annotations

import json

import pytest

from megatron_hope.data import backends
from megatron_hope.data.backends import GigatokenEncoder, ReferenceEncoder, select_encoder
from megatron_hope.data.tokenizer import EOD_TOKEN, build_tokenizer

pytest.importorskip("gigatoken")


def test_gigatoken_is_chosen_when_exact_and_routes_added_tokens(tokenizer_file, corpus_records):
    tokenizer = build_tokenizer("HuggingFaceTokenizer", tokenizer_file)
    texts = [record["text"] for record in corpus_records[:50]]
    encoder = select_encoder(tokenizer, texts)
    assert isinstance(encoder, GigatokenEncoder)
    mixed = [*texts[:3], f"a web page that says {EOD_TOKEN} in its text", ""]
    assert encoder.encode_batch(mixed) == tokenizer.encode_batch(mixed)
    flat, lengths = encoder.encode_flat(mixed)
    reference_flat, reference_lengths = ReferenceEncoder(tokenizer).encode_flat(mixed)
    assert flat.tolist() == reference_flat.tolist()
    assert lengths.tolist() == reference_lengths.tolist()


def test_a_mismatch_falls_back_with_a_warning(tokenizer_file, monkeypatch):
    tokenizer = build_tokenizer("HuggingFaceTokenizer", tokenizer_file)

    def wrong(self, texts):
        return [[1] for _ in texts]

    monkeypatch.setattr(GigatokenEncoder, "encode_batch", wrong)
    with pytest.warns(UserWarning, match="differ from the reference"):
        encoder = select_encoder(tokenizer, ["some text"])
    assert isinstance(encoder, ReferenceEncoder)
    with pytest.raises(ValueError, match="--tokenizer-backend gigatoken: gigatoken's ids differ"):
        select_encoder(tokenizer, ["some text"], backend="gigatoken")
    assert isinstance(select_encoder(tokenizer, [], backend="reference"), ReferenceEncoder)


def test_worker_threads_are_limited(monkeypatch):
    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    monkeypatch.delenv("RAYON_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    backends.limit_threads_in_worker()
    import os

    assert os.environ["TOKENIZERS_PARALLELISM"] == "false"
    assert os.environ["RAYON_NUM_THREADS"] == "1"


def test_gpt2_bpe_from_vocab_and_merges(tmp_path, tokenizer_file, corpus_records):
    data = json.loads(tokenizer_file.read_text())
    vocab = data["model"]["vocab"]
    merges = data["model"]["merges"]
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    lines = [m if isinstance(m, str) else " ".join(m) for m in merges]
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(lines) + "\n")
    gpt2 = build_tokenizer(
        "GPT2BPETokenizer", None, tmp_path / "vocab.json", tmp_path / "merges.txt"
    )
    reference = build_tokenizer("HuggingFaceTokenizer", tokenizer_file)
    texts = [record["text"] for record in corpus_records[:20]]
    assert gpt2.encode_batch(texts) == reference.encode_batch(texts)
    assert gpt2.eod == reference.eod
    assert isinstance(select_encoder(gpt2, texts), GigatokenEncoder)


@pytest.mark.parametrize("tokenizer_type", ["SentencePieceTokenizer", "Llama2Tokenizer"])
def test_sentencepiece_models(tmp_path_factory, corpus_records, tokenizer_type):
    sentencepiece = pytest.importorskip("sentencepiece")
    directory = tmp_path_factory.mktemp("sp")
    corpus = directory / "corpus.txt"
    corpus.write_text("\n".join(r["text"].replace("\n", " ") for r in corpus_records[:300]))
    sentencepiece.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(directory / "sp"),
        vocab_size=400,
        model_type="bpe",
        byte_fallback=True,
        minloglevel=2,
        num_threads=1,
    )
    tokenizer = build_tokenizer(tokenizer_type, directory / "sp.model")
    text = "Hello world. Sentences piece by piece."
    ids = tokenizer.tokenize(text)
    assert tokenizer.detokenize(ids) == text
    # Megatron-LM's preprocess_data.py adds no BOS for either type (only its legacy
    # Llama2Tokenizer did); tests/data/test_megatron_lm_parity.py checks against the tool.
    assert tokenizer.bos == 1 and tokenizer.bos not in ids
    assert tokenizer.eod == 2  # sentencepiece's </s>
    texts = [r["text"] for r in corpus_records[:20]]
    encoder = select_encoder(tokenizer, texts)  # gigatoken if exact, else the reference
    assert encoder.encode_batch(texts) == tokenizer.encode_batch(texts)
