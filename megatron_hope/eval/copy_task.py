"""In-context copying (paper 4.2.1, Figure 4, Tables 1 and 3).

A sample concatenates N sequences of 12 tokens, each a unique 8-token prefix and a 4-token suffix
(separated by `separator_id` when given, e.g. a newline), then repeats the prefix of the middle
sequence (index N // 2) as the query. The model must continue with that sequence's suffix; the
score is the percentage of samples whose greedy 4-token continuation matches it exactly.

Tokens are drawn uniformly from `token_pool` (the vocabulary minus special tokens) so the task
needs no tokenizer and no text; prefixes are unique within a sample by construction (resampled
on collision), so the query is unambiguous.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm import tqdm

from megatron_hope.eval.common import batches, generator, greedy_matches, mean

PREFIX_TOKENS = 8
SUFFIX_TOKENS = 4
DEFAULT_SAMPLES = 500
LENGTH_FRACTIONS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
"""Default input lengths as fractions of the training length (the paper's 30-80 sequences span
about 0.5-1.35 L for L = 512; we reach further beyond L)."""


@dataclass(frozen=True)
class CopySample:
    prompt: torch.Tensor
    """`[s]` int64: N sequences, then the middle sequence's prefix."""
    answer: torch.Tensor
    """`[4]` int64: the middle sequence's suffix."""


def sequence_length(separator_id: int | None) -> int:
    return PREFIX_TOKENS + SUFFIX_TOKENS + (separator_id is not None)


def prompt_length(count: int, separator_id: int | None, start_id: int | None) -> int:
    """Tokens in a prompt of `count` sequences (start token and query prefix included)."""
    return (start_id is not None) + count * sequence_length(separator_id) + PREFIX_TOKENS


def counts_for_lengths(lengths: list[int], separator_id: int | None,
                       start_id: int | None) -> list[int]:
    """The sequence numbers whose inputs (prompt + the 4 answer tokens the model reads when
    scored) come closest to `lengths` without exceeding them."""
    per_sequence = sequence_length(separator_id)
    fixed = prompt_length(0, separator_id, start_id) + SUFFIX_TOKENS
    return sorted({max(1, (length - fixed) // per_sequence) for length in lengths})


def make_sample(count: int, token_pool: torch.Tensor, gen: torch.Generator,
                separator_id: int | None = None, start_id: int | None = None) -> CopySample:
    """One copy-task prompt of `count` sequences with unique 8-token prefixes."""
    if count < 1:
        raise ValueError(f"sequence number {count} must be at least 1")
    pool = len(token_pool)
    prefixes: list[tuple[int, ...]] = []
    seen: set[tuple[int, ...]] = set()
    while len(prefixes) < count:
        candidate = tuple(token_pool[torch.randint(pool, (PREFIX_TOKENS,), generator=gen)]
                          .tolist())
        if candidate not in seen:
            seen.add(candidate)
            prefixes.append(candidate)
    suffixes = token_pool[torch.randint(pool, (count, SUFFIX_TOKENS), generator=gen)]
    pieces: list[int] = [start_id] if start_id is not None else []
    for prefix, suffix in zip(prefixes, suffixes.tolist(), strict=True):
        pieces += list(prefix) + suffix
        if separator_id is not None:
            pieces.append(separator_id)
    query = count // 2
    pieces += list(prefixes[query])
    return CopySample(torch.tensor(pieces, dtype=torch.long), suffixes[query].clone())


def make_samples(count: int, samples: int, token_pool: torch.Tensor, seed: int,
                 separator_id: int | None = None, start_id: int | None = None) -> list[CopySample]:
    """`samples` prompts for one sequence number, deterministic for (seed, count)."""
    gen = generator(seed * 1000003 + count)
    return [make_sample(count, token_pool, gen, separator_id, start_id) for _ in range(samples)]


def score_copy(scorer, samples: list[CopySample], batch_size: int = 8,
               progress: bool = False, desc: str = "copy") -> float:
    """Exact-match percentage of `samples` under `scorer` (greedy, via teacher forcing)."""
    hits: list[float] = []
    for batch in tqdm(list(batches(samples, batch_size)), desc=desc, disable=not progress,
                      leave=False):
        prompts = torch.stack([s.prompt for s in batch])
        answers = torch.stack([s.answer for s in batch])
        logits = scorer.logits(torch.cat([prompts, answers], dim=1))
        hits += greedy_matches(logits, prompts.shape[1], answers).float().tolist()
    return 100.0 * mean(hits)


def default_token_pool(vocab_size: int, special_ids: set[int]) -> torch.Tensor:
    """All ids except the special ones (and at most the first 32000, to avoid rare merges)."""
    ids = [i for i in range(min(vocab_size, 32000)) if i not in special_ids]
    return torch.tensor(ids, dtype=torch.long)


def run_copy(scorer, counts: list[int] | None = None, lengths: list[int] | None = None,
             samples: int = DEFAULT_SAMPLES, seed: int = 1234, batch_size: int = 8,
             progress: bool = True) -> dict:
    """Table 1 row for `scorer`: {"counts": [...], "lengths": [...], "scores": [...], "avg"}."""
    tokenizer = scorer.tokenizer
    separator_id = start_id = None
    special = set()
    if tokenizer is not None:
        start_id = tokenizer.start_id
        special = tokenizer.special_ids
        newline = tokenizer.encode("\n")
        separator_id = newline[0] if len(newline) == 1 else None
    pool = default_token_pool(scorer.vocab_size, special | {separator_id} - {None})
    if counts is None:
        lengths = lengths or [max(1, int(f * scorer.train_length)) for f in LENGTH_FRACTIONS]
        counts = counts_for_lengths(lengths, separator_id, start_id)
    total = [prompt_length(c, separator_id, start_id) + SUFFIX_TOKENS for c in counts]
    for count, length in zip(counts, total, strict=True):
        scorer.check_length(length, f"copy task with {count} sequences: input length")
    scores = []
    for count in tqdm(counts, desc=f"copy {scorer.name}", disable=not progress):
        cell = make_samples(count, samples, pool, seed, separator_id, start_id)
        scores.append(score_copy(scorer, cell, batch_size, progress, desc=f"{count} sequences"))
    return {"counts": counts, "lengths": total, "scores": scores,
            "avg": mean(scores), "samples": samples, "seed": seed,
            "train_length": scorer.train_length}
