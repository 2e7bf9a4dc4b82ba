"""Needle in a haystack / passkey retrieval over lengths and depths (paper Figure 1).

The passkey form of Mohtashami & Jaggi (2023), built in token space so every cell has exactly the
requested length (up to one filler sentence):

    There is an important info hidden inside a lot of irrelevant text. Find it and memorize it.
    The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.
    ... (filler up to depth x haystack) ...
    The pass key is 48213. Remember it. 48213 is the pass key.
    ... (filler) ...
    What is the pass key? The pass key is 48213

A cell scores the percentage of samples whose greedy continuation of the question is exactly the
passkey's tokens (computed by teacher forcing, see `common.greedy_matches`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from tqdm import tqdm

from megatron_hope.eval.common import batches, greedy_matches, mean

INTRO = ("There is an important info hidden inside a lot of irrelevant text. "
         "Find it and memorize it.\n")
FILLER = ("The grass is green. The sky is blue. The sun is yellow. Here we go. "
          "There and back again.\n")
NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key.\n"
QUESTION = "What is the pass key? The pass key is"
DEFAULT_DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
LENGTH_FRACTIONS = (0.5, 1.0, 2.0, 4.0)
DEFAULT_SAMPLES = 20


@dataclass(frozen=True)
class NeedleCell:
    length: int
    depth: float


def needle_grid(lengths: list[int], depths: list[float]) -> list[NeedleCell]:
    """Every (length, depth) pair, lengths outer: the heat map's cells."""
    for depth in depths:
        if not 0.0 <= depth <= 1.0:
            raise ValueError(f"--depths: {depth} is not a fraction in [0, 1]")
    return [NeedleCell(length, depth) for length in lengths for depth in depths]


def make_prompt(cell: NeedleCell, key: str, encode, start: list[int]
                ) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids) for one passkey at `cell`."""
    intro = start + encode(INTRO)
    filler = encode(FILLER)
    needle = encode(NEEDLE.format(key=key))
    question = encode(QUESTION)
    answer = encode(" " + key)
    # The model reads prompt + answer (teacher forcing): together they fill `cell.length`.
    room = cell.length - len(intro) - len(needle) - len(question) - len(answer)
    units = max(0, room // max(1, len(filler)))
    before = round(cell.depth * units)
    prompt = intro + filler * before + needle + filler * (units - before) + question
    return prompt, answer


def run_needle(scorer, lengths: list[int] | None = None, depths: list[float] | None = None,
               samples: int = DEFAULT_SAMPLES, seed: int = 1234, batch_size: int = 4,
               progress: bool = True) -> dict:
    """Scores for the whole grid: {"lengths", "depths", "scores": [[per depth] per length]}."""
    tokenizer = scorer.require_tokenizer("needle")
    lengths = lengths or [max(1, int(f * scorer.train_length)) for f in LENGTH_FRACTIONS]
    depths = list(depths if depths is not None else DEFAULT_DEPTHS)
    grid = needle_grid(lengths, depths)
    start = [tokenizer.start_id] if tokenizer.start_id is not None else []
    for length in lengths:
        scorer.check_length(length, f"needle at length {length}: input length")
    scores: dict[tuple[int, float], float] = {}
    actual: dict[tuple[int, float], int] = {}
    for cell in tqdm(grid, desc=f"needle {scorer.name}", disable=not progress):
        rng = random.Random(f"{seed}-{cell.length}-{cell.depth}")
        prompts = [make_prompt(cell, str(rng.randint(10000, 99999)), tokenizer.encode, start)
                   for _ in range(samples)]
        longest = max(len(p) + len(a) for p, a in prompts)
        scorer.check_length(longest, f"needle at length {cell.length}: input length")
        hits = []
        # Passkeys may tokenize to different lengths: batch only equal shapes.
        by_shape: dict[tuple[int, int], list] = {}
        for prompt, answer in prompts:
            by_shape.setdefault((len(prompt), len(answer)), []).append((prompt, answer))
        for group in by_shape.values():
            for batch in batches(group, batch_size):
                prompt = torch.tensor([p for p, _ in batch])
                answer = torch.tensor([a for _, a in batch])
                logits = scorer.logits(torch.cat([prompt, answer], dim=1))
                hits += greedy_matches(logits, prompt.shape[1], answer).float().tolist()
        scores[(cell.length, cell.depth)] = 100.0 * mean(hits)
        actual[(cell.length, cell.depth)] = int(mean(len(p) + len(a) for p, a in prompts))
    return {"lengths": lengths, "depths": depths,
            "scores": [[scores[(n, d)] for d in depths] for n in lengths],
            "prompt_tokens": [[actual[(n, d)] for d in depths] for n in lengths],
            "avg": mean(scores.values()), "samples": samples, "seed": seed,
            "train_length": scorer.train_length}
