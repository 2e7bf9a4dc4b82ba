"""Few-shot following ability, FA (paper 4.2.1, appendix C, Figure 9, Tables 2 and 7).

A prompt is 5 examples with their answers, then meaningless padding sentences up to the wanted
input length, then the query without its answer (Figure 9):

    Review:contains no wit , only labored gags
    Answer:0
    ...
    This is a meaningless sentence, used only to fill the prompt length.
    Review:or doing last year 's taxes with your ex-wife.
    Answer:

FA counts a sample when the model's greedy output INCLUDES a label of the label set shown in the
examples, right or wrong (Table 2's caption): it measures following the format, not accuracy.
`fa_exact` is the stricter second column: the answer line is exactly one of those labels.

Each sample's shots and query are drawn once (seeded, independent of the length), so every
length column shows the same examples and only the padding grows. A prompt whose unpadded form
already exceeds a column's length is counted in `over_length` and its real input length is
reported beside the score, instead of running long silently.

Tasks come from local files in GLUE form (the paper's SST-2, QNLI, RTE) or from the built-in
synthetic task, which needs no file:
  *.tsv   GLUE's own TSV with a header; recognised by its columns:
            SST-2  sentence, label                    -> Review:{sentence}
            QNLI   question, sentence, label          -> Question:... Sentence:...
            RTE    sentence1, sentence2, label        -> Premise:... Hypothesis:...
          QNLI and RTE labels are written as 0/1 as in Figure 9 (entailment 0, not_entailment 1,
          GLUE's label order); numeric labels are kept.
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
PAPER_TASKS = {"sst2": "SST-2", "qnli": "QNLI", "rte": "RTE"}
"""Template -> the task name the paper's Table 7 uses."""
ENTAILMENT_LABELS = {"entailment": "0", "not_entailment": "1"}
"""QNLI/RTE label names -> Figure 9's 0/1 form (GLUE's label index order)."""
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
        if template in ("qnli", "rte"):
            label = ENTAILMENT_LABELS.get(label, label)
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
    template = _template_for(fields, path)
    examples = _examples(rows, template)
    if len(examples) < DEFAULT_SHOTS + 1:
        raise ValueError(f"few-shot task file {path}: {len(examples)} labelled rows; need at "
                         f"least {DEFAULT_SHOTS + 1} (the shots plus a query)")
    # GLUE ships every task as dev.tsv: name the task by its form, as Table 7 does.
    return Task(PAPER_TASKS.get(template, path.stem), examples)


SYNTHETIC_NAME = "synthetic"
"""The built-in task's name: never one of the paper's, so never in Table 2."""
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
    return Task(SYNTHETIC_NAME, examples)


def build_prompt(shots: list[Example], query: Example, pad_sentences: int) -> str:
    """Figure 9: shots with answers, padding sentences, then the query up to "Answer:"."""
    context = "".join(f"{shot.prompt}{shot.label}\n" for shot in shots)
    return context + PAD_SENTENCE * pad_sentences + query.prompt


@dataclass(frozen=True)
class FewShotPrompt:
    ids: list[int]
    """The prompt's token ids (start token, shots, padding, query up to "Answer:")."""
    label_set: list[str]
    """The labels shown in the shots: what FA accepts."""
    label: str
    """The query's own label (for accuracy)."""
    unpadded_tokens: int
    """Tokens of the same prompt without padding."""


def draw_shots(task: Task, samples: int, seed: int, shots: int = DEFAULT_SHOTS
               ) -> list[tuple[list[Example], Example]]:
    """(shots, query) per sample, drawn once for every length (seeded by `seed` only).

    Shots are drawn so that both labels appear when the task has two or more (the label set is
    what the model must follow).
    """
    rng = random.Random(seed)
    by_label: dict[str, list[Example]] = {}
    for example in task.examples:
        by_label.setdefault(example.label, []).append(example)
    drawn = []
    for _ in range(samples):
        query = rng.choice(task.examples)
        others = [e for e in task.examples if e is not query]
        chosen = [rng.choice([e for e in group if e is not query] or group)
                  for group in by_label.values()][:shots]
        while len(chosen) < shots:
            chosen.append(rng.choice(others))
        rng.shuffle(chosen)
        drawn.append((chosen, query))
    return drawn


def make_prompts(task: Task, length: int, samples: int, encode, seed: int,
                 shots: int = DEFAULT_SHOTS, start: list[int] | None = None
                 ) -> list[FewShotPrompt]:
    """`samples` prompts padded with as many padding sentences as fit in `length` tokens; the
    shots and queries are the same at every length (`draw_shots`)."""
    start = start or []
    pad_tokens = max(1, len(encode(PAD_SENTENCE)))
    prompts = []
    for chosen, query in draw_shots(task, samples, seed, shots):
        base = len(start) + len(encode(build_prompt(chosen, query, 0)))
        pads = max(0, (length - base) // pad_tokens)
        ids = start + encode(build_prompt(chosen, query, pads))
        prompts.append(FewShotPrompt(ids, sorted({shot.label for shot in chosen}), query.label,
                                     base))
    return prompts


def answer_of(text: str) -> str:
    """The model's answer: the generated text up to the first newline, stripped."""
    return text.split("\n", 1)[0].strip()


def includes_label(output: str, label_set: list[str]) -> bool:
    """FA's test (Table 2's caption): the answer line includes a label shown in context,
    correct or not."""
    answer = answer_of(output)
    return any(label in answer for label in label_set)


def follows_exactly(output: str, label_set: list[str]) -> bool:
    """The stricter column: the answer line is exactly one of the labels shown."""
    return answer_of(output) in label_set


def following_ability(outputs: list[str], label_sets: list[list[str]],
                      rule=includes_label) -> float:
    """Percentage of outputs that follow their prompt's label set under `rule`."""
    return 100.0 * mean(rule(o, labels) for o, labels in zip(outputs, label_sets, strict=True))


def run_fewshot(scorer, tasks: list[Task], lengths: list[int] | None = None,
                samples: int = DEFAULT_SAMPLES, seed: int = 1234, shots: int = DEFAULT_SHOTS,
                progress: bool = True) -> dict:
    """Table 2 (average over tasks) and Table 7 (per task) rows for `scorer`."""
    tokenizer = scorer.require_tokenizer("fewshot")
    lengths = lengths or [max(1, int(f * scorer.train_length)) for f in LENGTH_FRACTIONS]
    start = [tokenizer.start_id] if tokenizer.start_id is not None else []
    for length in lengths:  # fail before spending model time; the prompts are checked again below
        scorer.check_length(length, f"fewshot at length {length}: input length")
    per_task: dict[str, dict[str, list]] = {}
    for task in tasks:
        # One label plus room for a leading space token and the newline that ends the answer.
        steps = max(len(tokenizer.encode(label)) for label in task.label_set) + 2
        cells: dict[str, list] = {key: [] for key in (
            "scores", "scores_exact", "accuracy", "input_tokens_mean", "input_tokens_max",
            "over_length")}
        for length in tqdm(lengths, desc=f"fewshot {task.name} {scorer.name}",
                           disable=not progress):
            # The input length counts what the model reads: the prompt and all but the last
            # generated token (greedy re-reads its own output).
            prompts = make_prompts(task, length - (steps - 1), samples, tokenizer.encode, seed,
                                   shots, start)
            inputs = [len(p.ids) + steps - 1 for p in prompts]
            scorer.check_length(max(inputs), f"fewshot {task.name} at length {length}: input "
                                "length")
            outputs = [tokenizer.decode(scorer.greedy(torch.tensor([p.ids]), steps)[0].tolist())
                       for p in prompts]
            label_sets = [p.label_set for p in prompts]
            cells["scores"].append(following_ability(outputs, label_sets))
            cells["scores_exact"].append(following_ability(outputs, label_sets, follows_exactly))
            cells["accuracy"].append(100.0 * mean(answer_of(o) == p.label
                                                  for o, p in zip(outputs, prompts, strict=True)))
            cells["input_tokens_mean"].append(mean(inputs))
            cells["input_tokens_max"].append(max(inputs))
            cells["over_length"].append(sum(p.unpadded_tokens + steps - 1 > length
                                            for p in prompts))
        per_task[task.name] = {**cells, "avg": mean(cells["scores"]),
                               "avg_exact": mean(cells["scores_exact"]),
                               "synthetic": task.name == SYNTHETIC_NAME}
    averaged = [mean(per_task[t.name]["scores"][i] for t in tasks) for i in range(len(lengths))]
    exact = [mean(per_task[t.name]["scores_exact"][i] for t in tasks) for i in range(len(lengths))]
    return {"lengths": lengths, "scores": averaged, "avg": mean(averaged),
            "scores_exact": exact, "avg_exact": mean(exact), "tasks": per_task,
            "samples": samples, "shots": shots, "seed": seed, "rule": "output includes a label",
            "train_length": scorer.train_length}
