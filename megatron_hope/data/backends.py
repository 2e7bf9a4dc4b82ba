"""The fastest exact encoder for a tokenizer: gigatoken when its ids equal the reference's.

The reference is the tokenizer `build_tokenizer` returns (HF `tokenizers` or `sentencepiece`).
gigatoken (the backend of Megatron-LM's new fast preprocessing path) encodes byte-level BPE
`tokenizer.json` files and SentencePiece BPE models several times faster. It is used only after
its ids equal the reference's on a sample of the input plus probe strings; otherwise the run
falls back to the reference with a warning.

One difference is handled rather than tested away: our tokenizers encode an added token's text
inside a document (`<|endoftext|>` written in a web page) as plain text, while gigatoken maps it
to the special id. Documents containing an added token's text therefore always go to the
reference encoder; the check below includes such a probe to prove the routing works.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from itertools import chain

import numpy

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "gigatoken", "reference")

PROBE_TEXTS = (
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces, trailing spaces  \n\n\ttabs and newlines\r\n",
    "naïve ünïcödé: 中文, 日本語, русский, العربية, emoji 🦊🧪, combining é",
    "def f(x):\n    return x ** 2  # code\n",
    "numbers 1234567890 3.14159 1e-10 and punctuation !?.,;:'\"()[]{}<>",
    "\x00 control \x1b characters \u200b zero width",
)


class ReferenceEncoder:
    """The tokenizer's own `encode_batch`."""

    name = "reference"

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tokenizer.encode_batch(list(texts))

    def encode_flat(self, texts: Sequence[str]) -> tuple[numpy.ndarray, numpy.ndarray]:
        """All ids concatenated and each text's length: `(ids [n], lengths [len(texts)])`."""
        return _flatten(self.encode_batch(texts))


def _flatten(ids: list[list[int]]) -> tuple[numpy.ndarray, numpy.ndarray]:
    lengths = numpy.fromiter(map(len, ids), dtype=numpy.int64, count=len(ids))
    flat = numpy.fromiter(chain.from_iterable(ids), dtype=numpy.int64, count=int(lengths.sum()))
    return flat, lengths


class GigatokenEncoder:
    """gigatoken's `encode_batch_list`, with added-token texts routed to the reference."""

    name = "gigatoken"

    def __init__(self, tokenizer) -> None:
        import gigatoken

        self.tokenizer = tokenizer
        # gigatoken encodes the bare text; the tokenizer's post-processor ids (BOS) go around it.
        self.prefix = list(getattr(tokenizer, "special_prefix", ()))
        self.suffix = list(getattr(tokenizer, "special_suffix", ()))
        if hasattr(tokenizer, "processor"):  # SentencePiece
            self._fast = gigatoken.Tokenizer.from_sentencepiece(str(tokenizer.path))
            self._specials: tuple[str, ...] = ()
        else:
            self._fast = gigatoken.Tokenizer(tokenizer.backend)
            self._specials = tuple(
                token.content for token in tokenizer.backend.get_added_tokens_decoder().values()
            )

    def encode_flat(self, texts: Sequence[str]) -> tuple[numpy.ndarray, numpy.ndarray]:
        """As `ReferenceEncoder.encode_flat`, without a Python list per document."""
        texts = list(texts)
        if self.prefix or self.suffix or any(s in text for text in texts for s in self._specials):
            return _flatten(self.encode_batch(texts))
        import awkward

        encoded = self._fast.encode_batch(texts)
        return (
            awkward.flatten(encoded).to_numpy(),
            awkward.num(encoded).to_numpy().astype(numpy.int64),
        )

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        texts = list(texts)
        special = [i for i, text in enumerate(texts) if any(s in text for s in self._specials)]
        chosen = set(special)
        fast_texts = [t for i, t in enumerate(texts) if i not in chosen] if special else texts
        ids = self._fast.encode_batch_list(fast_texts)
        if self.prefix or self.suffix:
            ids = [[*self.prefix, *document, *self.suffix] for document in ids]
        if not special:
            return ids
        reference = iter(self.tokenizer.encode_batch([texts[i] for i in special]))
        fast = iter(ids)
        return [next(reference) if i in chosen else next(fast) for i in range(len(texts))]


def select_encoder(tokenizer, sample_texts: Sequence[str], backend: str = "auto"):
    """The encoder to use: gigatoken if it is installed and exact on `sample_texts`.

    Args:
        tokenizer: from `build_tokenizer`.
        sample_texts: documents from the input to compare ids on.
        backend: `auto` (gigatoken when exact, else the reference with a warning), `gigatoken`
            (an error when it is missing or differs) or `reference`.
    """
    if backend not in BACKENDS:
        raise ValueError(f"--tokenizer-backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    reference = ReferenceEncoder(tokenizer)
    if backend == "reference" or (
        backend == "auto" and not getattr(tokenizer, "supports_gigatoken", True)
    ):
        return reference
    try:
        fast = GigatokenEncoder(tokenizer)
    except Exception as error:  # ImportError, or a tokenizer gigatoken cannot load
        return _fallback(reference, backend, f"gigatoken cannot load {tokenizer!r} ({error})")
    specials = list(getattr(fast, "_specials", ()))
    probes = [*PROBE_TEXTS, *(f"before {s} after" for s in specials[:4]), *sample_texts]
    expected = reference.encode_batch(probes)
    got = fast.encode_batch(probes)
    mismatches = [
        i for i, (a, b) in enumerate(zip(expected, got, strict=False)) if list(a) != list(b)
    ]
    if mismatches:
        first = probes[mismatches[0]][:60]
        return _fallback(
            reference,
            backend,
            f"gigatoken's ids differ from the reference's on {len(mismatches)} of "
            f"{len(probes)} sample documents (first: {first!r})",
        )
    logger.info("tokenizer backend: gigatoken (ids equal the reference on %d texts)", len(probes))
    return fast


def _fallback(reference: ReferenceEncoder, backend: str, why: str) -> ReferenceEncoder:
    if backend == "gigatoken":
        raise ValueError(f"--tokenizer-backend gigatoken: {why}")
    warnings.warn(f"{why}; using the reference tokenizer (slower)", stacklevel=3)
    logger.warning("%s; using the reference tokenizer (slower)", why)
    return reference


def limit_threads_in_worker() -> None:
    """Keep a worker process's tokenizer on its own thread: N processes, not N x cores threads.

    HF `tokenizers` reads TOKENIZERS_PARALLELISM at every batch call; gigatoken runs sequentially
    inside multiprocessing workers on its own.
    """
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
