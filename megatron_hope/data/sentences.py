"""Sentence splitting for `--split-sentences` with nltk Punkt, offline.

Megatron-LM loads nltk's pretrained `punkt` English model, a download that is not reachable from
our machines. Punkt is unsupervised, so we train it with nltk's own `PunktTrainer` on the start of
the input (a deterministic sample: the first `PUNKT_SAMPLE_BYTES` of text in sorted file order),
which gives every worker, every Slurm array task and every rerun the same parameters.
`--keep-newlines` uses Megatron-LM's `CustomLanguageVars`, which keeps the whitespace (newlines
included) after a sentence end inside that sentence; we also give any other gap between sentences
to the sentence before it, so joining the sentences restores the text exactly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from nltk.tokenize.punkt import (
    PunktLanguageVars,
    PunktParameters,
    PunktSentenceTokenizer,
    PunktTrainer,
)

PUNKT_SAMPLE_BYTES = 2_000_000
"""Text bytes Punkt is trained on: enough for the common abbreviations; ~4 s of training."""


class CustomLanguageVars(PunktLanguageVars):
    """Megatron-LM's `--keep-newlines` variant: trailing whitespace stays with its sentence."""

    _period_context_fmt = r"""
        \S*                          # some word material
        %(SentEndChars)s             # a potential sentence ending
        \s*                          # whitespace, newlines included, stays in the sentence
        (?=(?P<after_tok>
            %(NonWord)s              # either other punctuation
            |
            (?P<next_tok>\S+)        # or the next token (no \s+ before it)
        ))"""


def train_punkt(texts: Iterable[str], max_bytes: int = PUNKT_SAMPLE_BYTES) -> PunktParameters:
    """Punkt parameters trained on the first `max_bytes` of `texts` (deterministic)."""
    trainer = PunktTrainer()
    used = 0
    for text in texts:
        trainer.train(text, finalize=False)
        used += len(text)
        if used >= max_bytes:
            break
    trainer.finalize_training()
    return trainer.get_params()


def punkt_fingerprint(params: PunktParameters) -> str:
    """A content hash of trained parameters, so resumed shards are split the same way."""
    digest = hashlib.sha256()
    for part in (
        sorted(params.abbrev_types),
        sorted(params.collocations),
        sorted(params.sent_starters),
        sorted(params.ortho_context.items()),
    ):
        digest.update(repr(part).encode())
    return digest.hexdigest()[:16]


class SentenceSplitter:
    """Picklable (workers get it by pickling) Punkt splitter."""

    def __init__(self, params: PunktParameters, keep_newlines: bool = False) -> None:
        self.params = params
        self.keep_newlines = keep_newlines
        self._build()

    def _build(self) -> None:
        lang_vars = CustomLanguageVars() if self.keep_newlines else PunktLanguageVars()
        self._punkt = PunktSentenceTokenizer(train_text=self.params, lang_vars=lang_vars)

    def __getstate__(self):
        return {"params": self.params, "keep_newlines": self.keep_newlines}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._build()

    def split(self, text: str) -> list[str]:
        """The sentences of `text`; never empty for a non-blank text.

        With `keep_newlines` the sentences are contiguous slices: whatever lies between two
        sentences (newlines, spaces) ends the first, and leading whitespace starts the first, so
        `"".join(split(text)) == text`.
        """
        if not self.keep_newlines:
            return self._punkt.tokenize(text) or [text]
        starts = [start for start, _ in self._punkt.span_tokenize(text)]
        if not starts:
            return [text]
        starts[0] = 0
        return [text[a:b] for a, b in zip(starts, [*starts[1:], len(text)], strict=False)]
