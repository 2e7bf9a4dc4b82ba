"""Passkey retrieval over lengths and depths (`hope-eval passkey`; NOT the paper's Figure 1).

The passkey form of Mohtashami & Jaggi (2023): repeated filler, much easier than gkamradt's
natural-text needle of Figure 1 (`needle.py`). Built in token space so every cell has exactly
the requested length (up to one filler sentence):

    There is an important info hidden inside a lot of irrelevant text. Find it and memorize it.
    The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.
    ... (filler up to depth x haystack) ...
    The pass key is 48213. Remember it. 48213 is the pass key.
    ... (filler) ...
    What is the pass key? The pass key is 48213

A cell scores the percentage of samples whose DECODED greedy continuation of the question starts
with the passkey's digits (the first number in it is the key), so a key the tokenizer splits
differently still counts.
"""

from __future__ import annotations

import random
import re

from tqdm import tqdm

from megatron_hope.eval.common import greedy_texts, mean
from megatron_hope.eval.needle import NeedleCell, grid_result, prepare_grid

INTRO = ("There is an important info hidden inside a lot of irrelevant text. "
         "Find it and memorize it.\n")
FILLER = ("The grass is green. The sky is blue. The sun is yellow. Here we go. "
          "There and back again.\n")
NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key.\n"
QUESTION = "What is the pass key? The pass key is"
DEFAULT_DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
LENGTH_FRACTIONS = (0.5, 1.0, 2.0, 4.0)
DEFAULT_SAMPLES = 20


def names_key(output: str, key: str) -> bool:
    """Whether the first number of the decoded continuation is `key`."""
    found = re.search(r"\d+", output)
    return found is not None and found.group() == key


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


def run_passkey(scorer, lengths: list[int] | None = None, depths: list[float] | None = None,
                samples: int = DEFAULT_SAMPLES, seed: int = 1234, batch_size: int = 4,
                progress: bool = True) -> dict:
    """Scores for the whole grid: {"lengths", "depths", "scores": [[per depth] per length]}."""
    tokenizer, start, lengths, depths, grid = prepare_grid(
        scorer, "passkey", lengths, depths, DEFAULT_DEPTHS, LENGTH_FRACTIONS)
    scores: dict[NeedleCell, float] = {}
    actual: dict[NeedleCell, int] = {}
    for cell in tqdm(grid, desc=f"passkey {scorer.name}", disable=not progress):
        rng = random.Random(f"{seed}-{cell.length}-{cell.depth}")
        keys = [str(rng.randint(10000, 99999)) for _ in range(samples)]
        prompts = [make_prompt(cell, key, tokenizer.encode, start) for key in keys]
        # The model reads the prompt and all but the last of the answer's tokens plus one more
        # (room for a split key): as many as the teacher-forced prompt + answer before.
        steps = max(len(answer) for _, answer in prompts) + 1
        longest = max(len(p) for p, _ in prompts) + steps - 1
        scorer.check_length(longest, f"passkey at length {cell.length}: input length")
        outputs = greedy_texts(scorer, tokenizer.decode, [p for p, _ in prompts], steps,
                               batch_size)
        scores[cell] = 100.0 * mean(names_key(o, k) for o, k in zip(outputs, keys, strict=True))
        actual[cell] = int(mean(len(p) + steps - 1 for p, _ in prompts))
    return {**grid_result(lengths, depths, scores, actual), "samples": samples, "seed": seed,
            "judge": "first number of the decoded output is the key",
            "train_length": scorer.train_length}
