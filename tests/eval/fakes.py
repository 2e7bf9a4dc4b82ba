"""Scorers with known behaviour for the metric tests: an induction-head oracle, a constant model,
a uniform model, a model with fixed attention inputs, and a character-level tokenizer."""

from __future__ import annotations

import torch

from megatron_hope.eval.scorers import QK, Scorer, TextTokenizer

MATCH = 8


def char_tokenizer() -> TextTokenizer:
    """One token per byte-sized character; 0 is EOD (used as the start token)."""
    return TextTokenizer(encode=lambda text: [ord(c) % 256 for c in text],
                         decode=lambda ids: "".join(chr(i) for i in ids), vocab_size=256,
                         bos_id=None, eod_id=0)


class OracleCopier(Scorer):
    """Predicts, at each position, the token that followed the latest earlier occurrence of the
    last 8 tokens: a perfect in-context copier (ids below 256, searched as bytes)."""

    last_only = False
    """Return only the last position, `[b, 1, V]` (all that greedy generation reads): fast for
    long prompts; only for tasks that generate."""

    def _forward(self, tokens, capture):
        batch, length = tokens.shape
        first = length - 1 if self.last_only else MATCH - 1
        logits = torch.zeros(batch, length - first if self.last_only else length,
                             self.vocab_size)
        for b in range(batch):
            row = bytes(tokens[b].tolist())
            for t in range(first, length):
                found = row.rfind(row[t + 1 - MATCH: t + 1], 0, t)  # ends before t
                if found >= 0:
                    logits[b, t - first if self.last_only else t, row[found + MATCH]] = 1.0
        return logits


class ConstantModel(Scorer):
    """Always predicts the same token."""

    token: int = 0

    def _forward(self, tokens, capture):
        logits = torch.zeros(*tokens.shape, self.vocab_size)
        logits[..., self.token] = 1.0
        return logits


class UniformModel(Scorer):
    """Equal logits for every token: perplexity is the vocabulary size."""

    def _forward(self, tokens, capture):
        return torch.zeros(*tokens.shape, self.vocab_size)


class FixedAttention(Scorer):
    """Every sample's captured q/k are the same fixed tensors; layer 1's query is zero, so
    layer 0 carries all of the mean components (x the 2 layers it is averaged over)."""

    heads: int = 2
    head_dim: int = 8

    def _forward(self, tokens, capture):
        batch, length = tokens.shape
        gen = torch.Generator().manual_seed(length)
        query = torch.randn(self.heads, length, self.head_dim, generator=gen)
        key = torch.randn(self.heads, length, self.head_dim, generator=gen)
        if capture is not None:
            for layer in range(2):
                scaled = query if layer == 0 else torch.zeros_like(query)
                capture.append(QK(scaled.expand(batch, -1, -1, -1).clone(),
                                  key.expand(batch, -1, -1, -1).clone(), 0.5))
        return torch.zeros(batch, length, self.vocab_size)


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
    extra = {k: base.pop(k) for k in ("token", "answer", "last_only") if k in base}
    scorer = cls(**base)
    for key, value in extra.items():
        setattr(scorer, key, value)
    return scorer
