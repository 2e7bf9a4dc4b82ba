"""A corpus that is the same bytes on every interpreter, for tests that pin numbers.

The offline sample corpus is the running Python's standard library, so it changes with every
Python patch release, and a loss curve pinned on it holds on one interpreter only. This corpus is
generated from a fixed word list by a Markov chain driven by SplitMix64, integer arithmetic that
no Python, NumPy or platform release changes (unlike `random`, whose derived methods carry no
cross-version guarantee). Each word has a few fixed successors, so the text has structure a tiny
model learns within a few iterations. Its tokenizer is committed beside the golden losses
(`tests/assets/golden_tokenizer.json`), so a `tokenizers` release that merges differently cannot
move the curve either.
"""

from __future__ import annotations

import json
from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
GOLDEN_TOKENIZER = ASSETS / "golden_tokenizer.json"

WORDS = (
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by",
    "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an",
    "they", "you", "were", "her", "she", "there", "been", "one", "all", "we", "their", "has",
    "would", "when", "if", "so", "no", "will", "more", "can", "said", "who", "what", "up",
    "out", "its", "about", "into", "than", "them", "only", "other", "time", "new", "some",
    "could", "these", "two", "may", "first", "then", "do", "any", "like", "my", "now", "over",
    "such", "our", "man", "me", "even", "most", "made", "after", "also", "did", "many",
    "before", "must", "through", "back", "years", "where", "much", "your", "way", "well",
    "down", "should", "because", "each", "just", "those", "people", "how", "too", "little",
    "state", "good", "very", "make", "world", "still", "own", "see", "men", "work", "long",
    "get", "here", "between", "both", "life", "being", "under", "never", "day", "same",
    "another", "know", "while", "last", "might", "us", "great", "old", "year", "off", "come",
    "since", "against", "go", "came", "right", "used", "take", "three", "rotary", "position",
    "frequency", "pair", "angle", "length", "train", "model", "token", "layer", "head",
    "query", "key", "value", "attention", "dimension", "base", "period", "wave", "signal",
    "phase", "sequence", "window", "context", "encoding",
)
SUCCESSORS_PER_WORD = 4
MASK64 = (1 << 64) - 1


class SplitMix64:
    """Steele, Lea and Flood's SplitMix64: 64-bit integer steps, identical everywhere."""

    def __init__(self, seed: int):
        self.state = seed & MASK64

    def next(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def below(self, n: int) -> int:
        return self.next() % n


def _successor_table(rng: SplitMix64) -> list[list[int]]:
    return [[rng.below(len(WORDS)) for _ in range(SUCCESSORS_PER_WORD)] for _ in WORDS]


def synthetic_documents(num_documents: int, seed: int = 2410_21216,
                        max_words: int = 400) -> list[str]:
    """`num_documents` texts of 40-`max_words` words (fewer when `max_words` < 40) in sentences
    and paragraphs."""
    rng = SplitMix64(seed)
    successors = _successor_table(rng)
    documents = []
    for _ in range(num_documents):
        word = rng.below(len(WORDS))
        sentences, sentence = [], [WORDS[word]]
        low = min(40, max_words)
        for _ in range(low + rng.below(max_words - low + 1)):
            word = successors[word][rng.below(SUCCESSORS_PER_WORD)]
            sentence.append(WORDS[word])
            if len(sentence) >= 6 and rng.below(8) == 0:
                sentences.append(" ".join(sentence).capitalize() + ".")
                sentence = []
        if sentence:
            sentences.append(" ".join(sentence).capitalize() + ".")
        paragraphs = [" ".join(sentences[i:i + 4]) for i in range(0, len(sentences), 4)]
        documents.append("\n\n".join(paragraphs))
    return documents


def write_synthetic_jsonl(path: Path, num_documents: int, max_words: int = 400) -> Path:
    with open(path, "w", encoding="utf-8") as out:
        for text in synthetic_documents(num_documents, max_words=max_words):
            out.write(json.dumps({"text": text}) + "\n")
    return path


def prepare_golden_data(work_dir: Path, num_documents: int = 2000, max_words: int = 400) -> dict:
    """The synthetic corpus as `.bin/.idx` with the committed tokenizer: the `data` dict the
    training tests pass around (`prefix`, `tokenizer`, `vocab_size`)."""
    from megatron_hope.data.indexed import write_indexed_dataset
    from megatron_hope.data.tokenizer import HopeTokenizer

    corpus = write_synthetic_jsonl(Path(work_dir) / "synthetic.jsonl", num_documents, max_words)
    tokenizer = HopeTokenizer(GOLDEN_TOKENIZER)
    prefix = Path(work_dir) / "synthetic_text_document"
    write_indexed_dataset(corpus, tokenizer, prefix)
    return {"prefix": str(prefix), "tokenizer": str(GOLDEN_TOKENIZER),
            "vocab_size": tokenizer.vocab_size}


def regenerate_golden_tokenizer(work_dir: Path, vocab_size: int = 600) -> Path:
    """Retrain the committed tokenizer (only after a deliberate change of the corpus)."""
    from megatron_hope.data.tokenizer import train_bpe_tokenizer

    corpus = write_synthetic_jsonl(Path(work_dir) / "synthetic.jsonl", 2000)
    return train_bpe_tokenizer(corpus, GOLDEN_TOKENIZER, vocab_size=vocab_size)
