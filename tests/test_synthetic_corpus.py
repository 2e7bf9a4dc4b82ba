"""The golden curve's corpus is the same bytes on every interpreter (pinned digest)."""

import hashlib

from tests.synthetic_corpus import GOLDEN_TOKENIZER, SplitMix64, synthetic_documents

# SplitMix64 from seed 1234567: the values Rosetta Code lists for Vigna's splitmix64.c.
SPLITMIX64_SEED_1234567 = [6457827717110365317, 3203168211198807973, 9817491932198370423]


def test_splitmix64_matches_the_reference_generator():
    rng = SplitMix64(1234567)
    assert [rng.next() for _ in range(3)] == SPLITMIX64_SEED_1234567


def test_synthetic_corpus_is_pinned():
    digest = hashlib.sha256("\x00".join(synthetic_documents(2000)).encode()).hexdigest()
    assert digest == "d339e23fc12482c599076e22270264363e74840213136a9540f2488cab6243e7"
    assert GOLDEN_TOKENIZER.is_file()
