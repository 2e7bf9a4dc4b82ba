"""Helpers shared by the tasks: exact match by teacher forcing, seeded generators, output files."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch


def generator(seed: int) -> torch.Generator:
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def greedy_matches(logits: torch.Tensor, prompt_length: int, answer: torch.Tensor) -> torch.Tensor:
    """Whether greedy decoding after the prompt reproduces `answer` exactly, `[b]` bool.

    `logits` `[b, prompt_length + k, V]` come from ONE forward pass over prompt + answer
    (`answer` `[b, k]`): greedy output equals the answer iff the argmax at every answer position
    is the answer token (by induction: each step then sees exactly the teacher-forced prefix).
    """
    k = answer.shape[1]
    predicted = logits[:, prompt_length - 1: prompt_length - 1 + k].argmax(-1)
    return (predicted == answer).all(dim=1)


def mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            writer.writerow(row)
    return path


def batches(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), max(1, size)):
        yield items[start: start + size]


def parse_int_list(text: str | None, what: str) -> list[int] | None:
    if text is None or text == "":
        return None
    try:
        values = [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        raise ValueError(
            f"{what} {text!r}: expected comma-separated integers such as 256,512") from None
    if not values or any(v <= 0 for v in values):
        raise ValueError(f"{what} {text!r}: every value must be a positive integer")
    return values


def parse_float_list(text: str | None, what: str) -> list[float] | None:
    if text is None or text == "":
        return None
    try:
        return [float(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        raise ValueError(
            f"{what} {text!r}: expected comma-separated numbers such as 0,0.5,1") from None


def greedy_texts(scorer, decode, prompts: Sequence[list[int]], steps: int,
                 batch_size: int) -> list[str]:
    """The decoded greedy continuation (`steps` tokens) of each prompt, in order; prompts of
    equal length share a batch."""
    by_length: dict[int, list[int]] = {}
    for index, prompt in enumerate(prompts):
        by_length.setdefault(len(prompt), []).append(index)
    texts: list[str] = [""] * len(prompts)
    for indices in by_length.values():
        for chunk in batches(indices, batch_size):
            tokens = torch.tensor([prompts[i] for i in chunk], dtype=torch.long)
            for index, row in zip(chunk, scorer.greedy(tokens, steps).tolist(), strict=True):
                texts[index] = decode(row)
    return texts
