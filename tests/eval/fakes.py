"""Scorers with known behaviour for the metric tests: an induction-head oracle, a constant model,
and a character-level tokenizer."""

from __future__ import annotations

import torch

from megatron_hope.eval.scorers import Scorer, TextTokenizer

MATCH = 8


def char_tokenizer() -> TextTokenizer:
    """One token per byte-sized character; 0 is EOD (used as the start token)."""
    return TextTokenizer(encode=lambda text: [ord(c) % 256 for c in text],
                         decode=lambda ids: "".join(chr(i) for i in ids), vocab_size=256,
                         bos_id=None, eod_id=0)


class OracleCopier(Scorer):
    """Predicts, at each position, the token that followed the latest earlier occurrence of the
    last 8 tokens: a perfect in-context copier."""

    def _forward(self, tokens, capture):
        batch, length = tokens.shape
        logits = torch.zeros(batch, length, self.vocab_size)
        for b in range(batch):
            row = tokens[b].tolist()
            for t in range(length):
                if t + 1 < MATCH:
                    continue
                key = row[t + 1 - MATCH: t + 1]
                for j in range(t - 1, MATCH - 2, -1):
                    if row[j + 1 - MATCH: j + 1] == key:
                        logits[b, t, row[j + 1]] = 1.0
                        break
        return logits


class ConstantModel(Scorer):
    """Always predicts the same token."""

    token: int = 0

    def _forward(self, tokens, capture):
        logits = torch.zeros(*tokens.shape, self.vocab_size)
        logits[..., self.token] = 1.0
        return logits


class AnswersWith(Scorer):
    """After a ':' predicts the characters of `answer`, otherwise a newline (char tokenizer)."""

    answer: str = "1"

    def _forward(self, tokens, capture):
        logits = torch.zeros(*tokens.shape, self.vocab_size)
        text = "".join(chr(i) for i in tokens[0].tolist())
        cut = text.rfind(":")
        for t in range(tokens.shape[1]):
            written = t - cut
            if t >= cut and written < len(self.answer):
                logits[:, t, ord(self.answer[written])] = 1.0
            else:
                logits[:, t, ord("\n")] = 1.0
        return logits


def make(cls, **kwargs):
    base = dict(name=cls.__name__, source="fake", train_length=64, vocab_size=256)
    base.update(kwargs)
    extra = {k: base.pop(k) for k in ("token", "answer") if k in base}
    scorer = cls(**base)
    for key, value in extra.items():
        setattr(scorer, key, value)
    return scorer
