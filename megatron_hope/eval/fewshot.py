"""Few-shot following ability, FA (paper 4.2.1, appendix C, Figure 9, Tables 2 and 7).

A prompt is 5 examples with their answers, then meaningless padding sentences up to the wanted
input length, then the query without its answer (Figure 9):

    Review:contains no wit , only labored gags
    Answer:0
    ...
    This is a meaningless sentence, used only to fill the prompt length.
    Review:or doing last year 's taxes with your ex-wife.
    Answer:

FA counts a sample when the model's greedy answer is ANY label of the label set shown in the
examples, right or wrong: it measures following the format, not accuracy.

Tasks come from local files in GLUE form (the paper's SST-2, QNLI, RTE) or from the built-in
synthetic task, which needs no file:
  *.tsv   GLUE's own TSV with a header; recognised by its columns:
            SST-2  sentence, label                    -> Review:{sentence}
            QNLI   question, sentence, label          -> Question:... Sentence:...
            RTE    sentence1, sentence2, label        -> Premise:... Hypothesis:...
  *.jsonl one object per line with the same field names (or "text" and "label").
Anything else is refused with a message naming the file and the formats above.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from megatron_hope.eval.common import mean

PAD_SENTENCE = "This is a meaningless sentence, used only to fill the prompt length.\n"
DEFAULT_SHOTS = 5
DEFAULT_SAMPLES = 200
LENGTH_FRACTIONS = (0.5, 1.0, 1.5, 2.0, 2.5)
"""Default input lengths / L: the paper's 256-1280 for L = 512."""

TEMPLATES = {
    "sst2": (("sentence",), "Review:{sentence}\nAnswer:"),
    "qnli": (("question", "sentence"), "Question:{question}\nSentence:{sentence}\nAnswer:"),
    "rte": (("sentence1", "sentence2"), "Premise:{sentence1}\nHypothesis:{sentence2}\nAnswer:"),
    "text": (("text",), "Input:{text}\nAnswer:"),
}
KNOWN_FORMATS = ("GLUE TSV with header columns (sentence, label) for SST-2, "
                 "(question, sentence, label) for QNLI, (sentence1, sentence2, label) for RTE; "
                 "or JSONL with those fields or (text, label)")


@dataclass(frozen=True)
class Example:
    prompt: str
    """The templated input up to and including "Answer:"."""
    label: str


@dataclass(frozen=True)
class Task:
    name: str
    examples: list[Example]

    @property
    def label_set(self) -> list[str]:
        return sorted({example.label for example in self.examples})


def _template_for(fields: set[str], path: Path) -> str:
    for name in ("rte", "qnli", "sst2", "text"):
        needed, _ = TEMPLATES[name]
        if set(needed) <= fields and "label" in fields:
            return name
    raise ValueError(f"few-shot task file {path}: unknown format (fields {sorted(fields)}); "
                     f"expected {KNOWN_FORMATS}")


def _examples(rows: list[dict], template: str) -> list[Example]:
    needed, form = TEMPLATES[template]
    out = []
    for row in rows:
        label = str(row["label"]).strip()
        if label == "":
            continue  # GLUE test splits carry no label
        out.append(Example(form.format(**{f: str(row[f]).strip() for f in needed}), label))
    return out


def load_task_file(path: str | Path) -> Task:
    """A GLUE-form TSV or JSONL file as a `Task` named after the file's stem."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--task-file {path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".tsv":
        with open(path, encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            rows = list(reader)
            fields = set(reader.fieldnames or [])
    elif suffix == ".jsonl":
        rows = []
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as err:
                        raise ValueError(f"few-shot task file {path}, line {number}: not JSON "
                                         f"({err.msg}); expected {KNOWN_FORMATS}") from None
        fields = set(rows[0]) if rows else set()
    else:
        raise ValueError(f"few-shot task file {path}: unknown format {suffix or '(no suffix)'!r}; "
                         f"expected {KNOWN_FORMATS}")
    examples = _examples(rows, _template_for(fields, path))
    if len(examples) < DEFAULT_SHOTS + 1:
        raise ValueError(f"few-shot task file {path}: {len(examples)} labelled rows; need at "
                         f"least {DEFAULT_SHOTS + 1} (the shots plus a query)")
    return Task(path.stem, examples)


_POSITIVE = ["good", "great", "bright", "warm", "clever", "moving", "fresh", "lovely"]
_NEGATIVE = ["bad", "dull", "cold", "weak", "tired", "boring", "stale", "awful"]
_FILLER = ["the", "film", "story", "was", "and", "a", "plot", "with", "cast", "very"]


def synthetic_task(count: int = 1000, seed: int = 0) -> Task:
    """Built-in offline task in SST-2 form: 'Review:<words>\\nAnswer:' with labels 0/1 (1 when
    the review has more positive than negative words)."""
    rng = random.Random(seed)
    examples = []
    for _ in range(count):
        positive = rng.randint(0, 3)
        negative = rng.choice([n for n in range(4) if n != positive])
        words = (rng.sample(_POSITIVE, positive) + rng.sample(_NEGATIVE, negative)
                 + rng.choices(_FILLER, k=rng.randint(3, 6)))
        rng.shuffle(words)
        examples.append(Example(f"Review:{' '.join(words)}\nAnswer:",
                                "1" if positive > negative else "0"))
    return Task("synthetic", examples)


def build_prompt(shots: list[Example], query: Example, pad_sentences: int) -> str:
    """Figure 9: shots with answers, padding sentences, then the query up to "Answer:"."""
    context = "".join(f"{shot.prompt}{shot.label}\n" for shot in shots)
    return context + PAD_SENTENCE * pad_sentences + query.prompt


def make_prompts(task: Task, length: int, samples: int, encode, seed: int,
                 shots: int = DEFAULT_SHOTS, start: list[int] | None = None
                 ) -> list[tuple[list[int], list[str]]]:
    """`samples` (token ids, label set shown) with as many padding sentences as fit in `length`.

    Shots are drawn so that both labels appear when the task has two or more (the label set is
    what the model must follow); deterministic for (seed, length).
    """
    rng = random.Random(seed * 1000003 + length)
    start = start or []
    pad_tokens = max(1, len(encode(PAD_SENTENCE)))
    prompts = []
    by_label: dict[str, list[Example]] = {}
    for example in task.examples:
        by_label.setdefault(example.label, []).append(example)
    for _ in range(samples):
        query = rng.choice(task.examples)
        chosen = [rng.choice(group) for group in by_label.values()][:shots]
        others = [e for e in task.examples if e is not query]
        while len(chosen) < shots:
            chosen.append(rng.choice(others))
        rng.shuffle(chosen)
        base = len(start) + len(encode(build_prompt(chosen, query, 0)))
        pads = max(0, (length - base) // pad_tokens)
        ids = start + encode(build_prompt(chosen, query, pads))
        prompts.append((ids, sorted({shot.label for shot in chosen})))
    return prompts


def answer_of(text: str) -> str:
    """The model's answer: the generated text up to the first newline, stripped."""
    return text.split("\n", 1)[0].strip()


def follows(answer: str, label_set: list[str]) -> bool:
    """FA's test: the answer is one of the labels shown in context (correct or not)."""
    return answer in label_set


def following_ability(answers: list[str], label_sets: list[list[str]]) -> float:
    """Percentage of answers inside their prompt's label set."""
    return 100.0 * mean(follows(a, labels) for a, labels in zip(answers, label_sets, strict=True))


def run_fewshot(scorer, tasks: list[Task], lengths: list[int] | None = None,
                samples: int = DEFAULT_SAMPLES, seed: int = 1234, shots: int = DEFAULT_SHOTS,
                progress: bool = True) -> dict:
    """Table 2 (average over tasks) and Table 7 (per task) rows for `scorer`."""
    tokenizer = scorer.require_tokenizer("fewshot")
    lengths = lengths or [max(1, int(f * scorer.train_length)) for f in LENGTH_FRACTIONS]
    start = [tokenizer.start_id] if tokenizer.start_id is not None else []
    for length in lengths:  # fail before spending model time; the prompts are checked again below
        scorer.check_length(length, f"fewshot at length {length}: input length")
    per_task: dict[str, list[float]] = {}
    actual: dict[str, list[float]] = {}
    for task in tasks:
        steps = max(len(tokenizer.encode(label)) for label in task.label_set) + 1
        cells, sizes = [], []
        for length in tqdm(lengths, desc=f"fewshot {task.name} {scorer.name}",
                           disable=not progress):
            # The input length counts what the model reads: the prompt and all but the last
            # generated token (greedy re-reads its own output).
            prompts = make_prompts(task, length - (steps - 1), samples, tokenizer.encode, seed,
                                   shots, start)
            longest = max(len(ids) for ids, _ in prompts) + steps - 1
            scorer.check_length(longest, f"fewshot {task.name} at length {length}: input length")
            answers = []
            for ids, _ in prompts:
                generated = scorer.greedy(torch.tensor([ids]), steps)[0].tolist()
                answers.append(answer_of(tokenizer.decode(generated)))
            cells.append(following_ability(answers, [labels for _, labels in prompts]))
            sizes.append(mean(len(ids) for ids, _ in prompts))
        per_task[task.name] = cells
        actual[task.name] = sizes
    averaged = [mean(per_task[t.name][i] for t in tasks) for i in range(len(lengths))]
    return {"lengths": lengths, "scores": averaged, "avg": mean(averaged),
            "tasks": {name: {"scores": s, "avg": mean(s), "mean_prompt_tokens": actual[name]}
                      for name, s in per_task.items()},
            "samples": samples, "shots": shots, "seed": seed,
            "train_length": scorer.train_length}
