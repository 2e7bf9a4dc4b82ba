"""Needle in a haystack, gkamradt's form (paper section 6, Figure 1).

gkamradt (2023), LLMTest_NeedleInAHaystack: a natural-text haystack cut to the context length,
the standard needle inserted at a depth (0-100 % in 10 % steps) at the sentence end before it,
and the standard question. The haystack here is English prose made offline (`haystack.py`);
the prompt ends with a completion cue, since the models are base models:

    <haystack ... The best thing to do in San Francisco is eat a sandwich and sit in Dolores
    Park on a sunny day. ... haystack>

    What is the best thing to do in San Francisco? Don't give information outside the document
    or repeat your findings.
    Answer: The best thing to do in San Francisco is

A cell scores the percentage of samples whose DECODED greedy continuation names every key of
the needle (`NEEDLE_KEYS`, case and spacing ignored), so an answer the tokenizer splits
differently still counts. The input length counts what the model reads: the prompt and all but
the last generated token. Samples differ in where the haystack text starts (one paragraph on
per sample); gkamradt runs one per cell. The easier passkey task is `passkey.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

from tqdm import tqdm

from megatron_hope.eval.common import greedy_texts, mean
from megatron_hope.eval.haystack import haystack_source, haystack_text

NEEDLE = ("\nThe best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a "
          "sunny day.\n")
QUESTION = ("\n\nWhat is the best thing to do in San Francisco? Don't give information outside "
            "the document or repeat your findings.\nAnswer: The best thing to do in San "
            "Francisco is")
ANSWER = " eat a sandwich and sit in Dolores Park on a sunny day."
NEEDLE_KEYS = ("eat a sandwich", "dolores park")
JUDGED_ANSWER = " eat a sandwich and sit in Dolores Park"
"""The generation budget is this answer's tokens + 2: enough to name every key."""
DEFAULT_DEPTHS = tuple(step / 10 for step in range(11))
LENGTH_FRACTIONS = (0.5, 1.0, 2.0, 4.0)
DEFAULT_SAMPLES = 1


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


def prepare_grid(scorer, task: str, lengths: list[int] | None, depths: list[float] | None,
                 default_depths, fractions) -> tuple:
    """(tokenizer, start ids, lengths, depths, grid) of a lengths x depths task, lengths checked
    against the scorer's limit before any model time is spent."""
    tokenizer = scorer.require_tokenizer(task)
    lengths = lengths or [max(1, int(f * scorer.train_length)) for f in fractions]
    depths = list(depths if depths is not None else default_depths)
    grid = needle_grid(lengths, depths)
    for length in lengths:
        scorer.check_length(length, f"{task} at length {length}: input length")
    start = [tokenizer.start_id] if tokenizer.start_id is not None else []
    return tokenizer, start, lengths, depths, grid


def grid_result(lengths: list[int], depths: list[float], scores: dict, actual: dict) -> dict:
    """The heat map's cells, per length then depth, and their mean."""
    return {"lengths": lengths, "depths": depths,
            "scores": [[scores[NeedleCell(n, d)] for d in depths] for n in lengths],
            "prompt_tokens": [[actual[NeedleCell(n, d)] for d in depths] for n in lengths],
            "avg": mean(scores.values())}


def retrieved(output: str, keys: tuple[str, ...] = NEEDLE_KEYS) -> bool:
    """Whether the decoded answer names every key (case and whitespace ignored)."""
    text = " ".join(output.lower().split())
    return all(key in text for key in keys)


def insert_needle(context: list[int], needle: list[int], depth: float, decode) -> list[int]:
    """gkamradt's insertion: at `depth` of the context, moved back to the last sentence end."""
    if depth >= 1.0:
        return context + needle
    point = int(len(context) * depth)
    while point > 0 and not decode(context[point - 1: point]).rstrip().endswith("."):
        point -= 1
    return context[:point] + needle + context[point:]


def make_prompt(cell: NeedleCell, encode, decode, start: list[int], steps: int,
                offset: int = 0) -> list[int]:
    """Prompt ids for one cell: haystack, needle at the depth, question and cue; with the
    `steps - 1` generated tokens the model re-reads, they fill `cell.length`."""
    needle, question = encode(NEEDLE), encode(QUESTION)
    room = cell.length - len(start) - len(needle) - len(question) - (steps - 1)
    if room < 0:
        raise ValueError(f"needle at length {cell.length}: the needle and question alone take "
                         f"{cell.length - room} tokens; use longer --lengths")
    chars = 4 * room + 64
    context = encode(haystack_text(chars, offset))
    while len(context) < room:  # a tokenizer with many tokens per character
        chars *= 2
        context = encode(haystack_text(chars, offset))
    return start + insert_needle(context[:room], needle, cell.depth, decode) + question


def run_needle(scorer, lengths: list[int] | None = None, depths: list[float] | None = None,
               samples: int = DEFAULT_SAMPLES, seed: int = 1234, batch_size: int = 4,
               progress: bool = True) -> dict:
    """Scores for the whole grid: {"lengths", "depths", "scores": [[per depth] per length]}."""
    tokenizer, start, lengths, depths, grid = prepare_grid(
        scorer, "needle", lengths, depths, DEFAULT_DEPTHS, LENGTH_FRACTIONS)
    steps = len(tokenizer.encode(JUDGED_ANSWER)) + 2
    scores, actual = {}, {}
    for cell in tqdm(grid, desc=f"needle {scorer.name}", disable=not progress):
        prompts = [make_prompt(cell, tokenizer.encode, tokenizer.decode, start, steps,
                               offset=seed + sample) for sample in range(samples)]
        inputs = [len(p) + steps - 1 for p in prompts]
        scorer.check_length(max(inputs), f"needle at length {cell.length}: input length")
        outputs = greedy_texts(scorer, tokenizer.decode, prompts, steps, batch_size)
        scores[cell] = 100.0 * mean(retrieved(o) for o in outputs)
        actual[cell] = int(mean(inputs))
    return {**grid_result(lengths, depths, scores, actual), "samples": samples, "seed": seed,
            "haystack": haystack_source(), "judge": f"decoded output names {NEEDLE_KEYS}",
            "train_length": scorer.train_length}
