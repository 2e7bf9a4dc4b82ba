"""Punkt sentence splitting trained offline with nltk's own trainer.

PYTHONPATH=. python -m pytest tests/data/test_sentences.py -q
"""

from __future__ import annotations

import pickle

from megatron_hope.data.sentences import SentenceSplitter, punkt_fingerprint, train_punkt

TEXT = (
    "Dr. Smith went to Washington. He arrived at 3 p.m. on Monday. The meeting was short.\n"
    "Mr. Jones disagreed! Was it worth it? Nobody knows.\n\nA new paragraph starts here. "
)


def test_training_is_offline_and_deterministic():
    corpus = [TEXT * 5, "Mrs. Brown and Dr. Who met e.g. at noon. They talked. " * 20]
    first, second = train_punkt(corpus), train_punkt(corpus)
    assert punkt_fingerprint(first) == punkt_fingerprint(second)
    assert "dr" in first.abbrev_types


def test_split_with_and_without_newlines():
    params = train_punkt([TEXT * 5, "Mrs. Brown and Dr. Who met. They talked. " * 20])
    plain = SentenceSplitter(params).split(TEXT)
    assert plain[0] == "Dr. Smith went to Washington."  # "Dr." is a learned abbreviation
    assert len(plain) >= 6 and all(sentence == sentence.strip() for sentence in plain)
    kept = SentenceSplitter(params, keep_newlines=True).split(TEXT)
    assert "".join(kept) == TEXT
    assert any(sentence.endswith("\n\n") for sentence in kept)
    # Workers receive the splitter by pickling.
    assert pickle.loads(pickle.dumps(SentenceSplitter(params, True))).split(TEXT) == kept
