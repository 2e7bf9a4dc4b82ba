"""Local induction recall: copy distances that stay inside L while absolute positions pass L.

A separation check between position encodings (`examples/extrapolation_study/separation_study.py`).
A sequence is a stream of *fresh* tokens, each used once, interleaved with *copies*: a span of
`copy_tokens` earlier fresh tokens repeated verbatim, its source between `copy_tokens + 1` and
`max_distance` tokens back. Each source span is copied once, so every copied token except the
first has exactly one earlier occurrence of its predecessor: the induction rule "find the earlier
occurrence of the current token, emit what followed it" answers it exactly (`oracle_predictions`).
The first token of a copy and every fresh token are unpredictable and not scored.

The distances a model needs are the same at every length (at most `max_distance`, e.g. L/2); only
the absolute positions and the number of distractor keys grow. A model whose attention at
distances > L is out of distribution (RoPE's low-frequency and "activated" pairs, HoPE paper
section 3.3) is disturbed by the far keys; the scored targets are those in the last `window`
positions, so at 4L every scored query sits three training lengths past anything seen in training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy
import torch


@dataclass(frozen=True)
class RecallTask:
    """The generator's settings."""

    vocab_size: int
    """Token ids drawn: 0 .. vocab_size - 1; must cover the longest sequence's fresh tokens."""
    copy_tokens: int = 8
    """Tokens per copy (the first of each is not predictable)."""
    max_distance: int = 32
    """Largest distance from a copy back to its source (keep it below the training length)."""
    fresh_between: tuple[int, int] = (2, 8)
    """Fresh tokens written before each copy, drawn uniformly from this closed range."""

    def __post_init__(self) -> None:
        if self.copy_tokens < 2:
            raise ValueError(f"copy_tokens must be at least 2, got {self.copy_tokens}")
        if self.max_distance <= self.copy_tokens:
            raise ValueError(f"max_distance ({self.max_distance}) must exceed copy_tokens "
                             f"({self.copy_tokens}): a copy cannot overlap its source")
        low, high = self.fresh_between
        if not 0 <= low <= high:
            raise ValueError(f"fresh_between {self.fresh_between} must be 0 <= low <= high")

    def sequence(self, rng: numpy.random.Generator, length: int) -> tuple[numpy.ndarray,
                                                                          numpy.ndarray]:
        """One sample: tokens `[length]` int64 and `targets` `[length]` bool, True where the
        token is predictable from the one before it (predicted by the logits one to the left)."""
        if length > self.vocab_size:
            raise ValueError(f"length {length} needs vocab_size >= {length} fresh tokens, "
                             f"got {self.vocab_size}")
        fresh = iter(rng.permutation(self.vocab_size))
        tokens: list[int] = []
        targets: list[bool] = []
        copyable: list[bool] = []  # fresh and not yet a copy's source
        while len(tokens) < length:
            for _ in range(int(rng.integers(self.fresh_between[0], self.fresh_between[1] + 1))):
                tokens.append(int(next(fresh)))
                targets.append(False)
                copyable.append(True)
            start = len(tokens)
            # Sources that are entirely copyable and end before the copy starts.
            candidates = [start - distance for distance in
                          range(self.copy_tokens + 1, self.max_distance + 1)
                          if start - distance >= 0
                          and all(copyable[start - distance:start - distance + self.copy_tokens])]
            if not candidates:
                tokens.append(int(next(fresh)))
                targets.append(False)
                copyable.append(True)
                continue
            source = int(rng.choice(candidates))
            for offset in range(self.copy_tokens):
                copyable[source + offset] = False
                tokens.append(tokens[source + offset])
                targets.append(offset > 0)
                copyable.append(False)
        return (numpy.asarray(tokens[:length], dtype=numpy.int64),
                numpy.asarray(targets[:length], dtype=bool))

    def batch(self, seed: int, count: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`count` samples of one length: tokens `[count, length]`, targets `[count, length]`."""
        rng = numpy.random.default_rng(seed)
        pairs = [self.sequence(rng, length) for _ in range(count)]
        return (torch.from_numpy(numpy.stack([p[0] for p in pairs])),
                torch.from_numpy(numpy.stack([p[1] for p in pairs])))


def oracle_predictions(tokens: torch.Tensor) -> torch.Tensor:
    """The induction rule: `[b, s]` -> `[b, s]` where column j predicts token j + 1 as the
    successor of the last earlier occurrence of token j (its own value when there is none)."""
    predictions = tokens.clone()
    for row, sequence in enumerate(tokens.tolist()):
        last_seen: dict[int, int] = {}
        for position, token in enumerate(sequence):
            earlier = last_seen.get(token)
            if earlier is not None:
                predictions[row, position] = sequence[earlier + 1]
            last_seen[token] = position
    return predictions


def scored_mask(targets: torch.Tensor, window: int) -> torch.Tensor:
    """`targets` `[b, s]` restricted to the last `window` positions."""
    mask = targets.clone()
    mask[:, : max(0, targets.shape[1] - window)] = False
    return mask


def accuracy(predictions: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> dict:
    """Percent of masked targets predicted, and its standard error over samples.

    `predictions[:, j]` is the guess for `tokens[:, j + 1]`; `mask[:, j + 1]` says whether that
    token is scored. The SE treats each sample's accuracy as one observation (targets within a
    sample are correlated), sd / sqrt(samples), in percentage points.
    """
    hits = (predictions[:, :-1] == tokens[:, 1:]) & mask[:, 1:]
    counts = mask[:, 1:].sum(dim=1)
    keep = counts > 0
    per_sample = hits.sum(dim=1)[keep].double() / counts[keep].double()
    samples = int(keep.sum())
    mean = float(per_sample.mean()) if samples else float("nan")
    se = float(per_sample.std(unbiased=True) / samples ** 0.5) if samples > 1 else float("nan")
    return {"accuracy": 100 * mean, "se": 100 * se, "samples": samples,
            "targets": int(counts.sum())}
