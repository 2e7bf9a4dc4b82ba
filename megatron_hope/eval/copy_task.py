"""In-context copying (paper 4.2.1, Figure 4, Tables 1 and 3).

A sample concatenates N sequences of 12 tokens, each a unique 8-token prefix and a 4-token suffix
(no separator by default, as Figure 4; `separator_id` adds one token after each sequence), then
repeats the prefix of the middle sequence (index N // 2) as the query. The model must continue
with that sequence's suffix; the score is the percentage of samples whose greedy 4-token
continuation matches it exactly.

As the paper's test set, there is ONE fixed set of 500 samples, each drawn with the largest N of
the run; the column for N reads every sample truncated to its first N sequences (so the columns
differ only in N, never in the draw). The paper's columns are N = 30, 40, ..., 80 at L = 512;
for another training length the counts scale by L / 512 (`paper_counts`), so that the same
columns sit at the same fractions of L (N < 60 is within L for L = 512).

Tokens are drawn uniformly from `token_pool` (the vocabulary minus special tokens) so the task
needs no tokenizer and no text; prefixes are unique within a sample by construction (resampled
on collision), so the query is unambiguous at every truncation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm import tqdm

from megatron_hope.eval.common import batches, generator, greedy_matches, mean

PREFIX_TOKENS = 8
SUFFIX_TOKENS = 4
DEFAULT_SAMPLES = 500
PAPER_COUNTS = (30, 40, 50, 60, 70, 80)
"""Table 1's sequence numbers, for the paper's training length `PAPER_TRAIN_LENGTH`."""
PAPER_TRAIN_LENGTH = 512


@dataclass(frozen=True)
class CopySample:
    prompt: torch.Tensor
    """`[s]` int64: N sequences, then the middle sequence's prefix."""
    answer: torch.Tensor
    """`[4]` int64: the middle sequence's suffix."""


@dataclass(frozen=True)
class CopySequences:
    """One sample of the fixed set: the sequences it is truncated from."""

    prefixes: torch.Tensor
    """`[N_max, 8]` int64, unique rows."""
    suffixes: torch.Tensor
    """`[N_max, 4]` int64."""


def paper_counts(train_length: int) -> list[int]:
    """Table 1's N = 30..80 scaled by L / 512 (at least 1 each, duplicates dropped)."""
    scale = train_length / PAPER_TRAIN_LENGTH
    return sorted({max(1, round(count * scale)) for count in PAPER_COUNTS})


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


def draw_sequences(count: int, token_pool: torch.Tensor, gen: torch.Generator) -> CopySequences:
    """`count` sequences with unique 8-token prefixes."""
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
    return CopySequences(torch.tensor(prefixes, dtype=torch.long), suffixes)


def truncate(sequences: CopySequences, count: int, separator_id: int | None = None,
             start_id: int | None = None) -> CopySample:
    """The prompt of the first `count` sequences, querying the middle one (index count // 2)."""
    if not 1 <= count <= len(sequences.prefixes):
        raise ValueError(f"sequence number {count} is outside 1..{len(sequences.prefixes)}, "
                         "the sequences drawn for this set")
    pieces: list[int] = [start_id] if start_id is not None else []
    for prefix, suffix in zip(sequences.prefixes[:count].tolist(),
                              sequences.suffixes[:count].tolist(), strict=True):
        pieces += prefix + suffix
        if separator_id is not None:
            pieces.append(separator_id)
    query = count // 2
    pieces += sequences.prefixes[query].tolist()
    return CopySample(torch.tensor(pieces, dtype=torch.long), sequences.suffixes[query].clone())


def make_sample(count: int, token_pool: torch.Tensor, gen: torch.Generator,
                separator_id: int | None = None, start_id: int | None = None) -> CopySample:
    """One copy-task prompt of `count` sequences with unique 8-token prefixes."""
    return truncate(draw_sequences(count, token_pool, gen), count, separator_id, start_id)


def fixed_set(largest_count: int, samples: int, token_pool: torch.Tensor,
              seed: int) -> list[CopySequences]:
    """The one test set of a run: `samples` draws of `largest_count` sequences, deterministic
    for the seed (the paper's 500 samples)."""
    gen = generator(seed)
    return [draw_sequences(largest_count, token_pool, gen) for _ in range(samples)]


def make_samples(count: int, samples: int, token_pool: torch.Tensor, seed: int,
                 separator_id: int | None = None, start_id: int | None = None) -> list[CopySample]:
    """`samples` prompts of `count` sequences: the fixed set for `seed`, truncated."""
    return [truncate(s, count, separator_id, start_id)
            for s in fixed_set(count, samples, token_pool, seed)]


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
             progress: bool = True, separator: bool = False) -> dict:
    """Table 1 row for `scorer`: {"counts": [...], "lengths": [...], "scores": [...], "avg"}.

    Counts: `counts`, else the ones that fit `lengths`, else the paper's (`paper_counts`).
    `separator` puts a newline after each sequence when it is one token (not the paper's form).
    """
    tokenizer = scorer.tokenizer
    separator_id = start_id = None
    special = set()
    if tokenizer is not None:
        start_id = tokenizer.start_id
        special = tokenizer.special_ids
        newline = tokenizer.encode("\n")
        if separator and len(newline) == 1:
            separator_id = newline[0]
    pool = default_token_pool(scorer.vocab_size, special | {separator_id} - {None})
    if counts is None:
        counts = (counts_for_lengths(lengths, separator_id, start_id) if lengths
                  else paper_counts(scorer.train_length))
    counts = sorted(set(counts))
    total = [prompt_length(c, separator_id, start_id) + SUFFIX_TOKENS for c in counts]
    for count, length in zip(counts, total, strict=True):
        scorer.check_length(length, f"copy task with {count} sequences: input length")
    test_set = fixed_set(max(counts), samples, pool, seed)
    scores = []
    for count in tqdm(counts, desc=f"copy {scorer.name}", disable=not progress):
        cell = [truncate(s, count, separator_id, start_id) for s in test_set]
        scores.append(score_copy(scorer, cell, batch_size, progress, desc=f"{count} sequences"))
    return {"counts": counts, "lengths": total, "scores": scores,
            "avg": mean(scores), "samples": samples, "seed": seed,
            "separator": separator_id is not None, "train_length": scorer.train_length}
