"""The markdown sections of `hope-eval report`, laid out like the paper's tables.

Each `*_section(runs, out)` takes the collected result payloads of one task (rows already in the
paper's order: RoPE, +PI, +YaRN, ..., HoPE, +PI, +YaRN) and returns markdown lines; plots land in
`out`. Row labels carry the scaling factor F ("hope+YaRN F=4"), which the paper leaves implicit.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from megatron_hope.eval import plots

PAPER_FEWSHOT_TASKS = ("SST-2", "QNLI", "RTE")
"""Table 2 averages these three (Table 7 shows each); any other task gets its own table."""
VAF_BANDS = ("activated", "low", "independent", "high")


def row_label(model: dict) -> str:
    """The run's label, with F appended when it is scaled and the label does not say it."""
    label = str(model.get("label", "?"))
    scaling = str(model.get("rope_scaling") or "")
    if scaling and "F=" not in label:
        label += f" F={scaling.split(':')[1]}"
    return label


def _number(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_number(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def score_table(runs: list[dict], key: str, first: str, scores: str = "scores",
                average: bool = True) -> str:
    """Rows = runs, columns = the values of `result[key]`, cells = `result[scores]`."""
    columns = sorted({c for run in runs for c in run["result"][key]})
    rows = []
    for run in runs:
        values = run["result"][scores]
        by_column = dict(zip(run["result"][key], values, strict=True))
        rows.append([row_label(run["model"])] + [by_column.get(c, "") for c in columns]
                    + ([sum(values) / len(values)] if average else []))
    return markdown_table([first] + [str(c) for c in columns] + (["Avg."] if average else []),
                          rows)


def relative(path: str | Path, out: Path) -> str:
    """`path` as the report links it: relative to the report's directory."""
    return os.path.relpath(Path(path).resolve(), out.resolve())


def _task_average(run: dict, tasks: list[str], key: str) -> list[float]:
    per_task = run["result"]["tasks"]
    columns = len(run["result"]["lengths"])
    return [sum(per_task[t][key][i] for t in tasks) / len(tasks) for i in range(columns)]


def _fewshot_table(runs: list[dict], tasks: list[str], key: str) -> str:
    return score_table([{**run, "result": {**run["result"],
                                           "averaged": _task_average(run, tasks, key)}}
                        for run in runs], "lengths", "Method", "averaged")


def _actual_lengths(runs: list[dict], tasks: list[str]) -> list[str]:
    """Mean / max input tokens per task and column, flagging prompts over the column length."""
    header = ["Method", "task"] + [str(n) for n in runs[0]["result"]["lengths"]]
    rows = []
    for run in runs:
        for task in tasks:
            cell = run["result"]["tasks"][task]
            means = cell.get("input_tokens_mean") or []
            rows.append([row_label(run["model"]), task] + [
                f"{m:.0f} / {x}" + (f" ({o} over)" if o else "")
                for m, x, o in zip(means, cell.get("input_tokens_max", []),
                                   cell.get("over_length", []), strict=True)])
    return ["Actual input tokens (mean / max; \"over\": prompts whose unpadded form already "
            "exceeds the column's length):", "", markdown_table(header, rows), ""]


def fewshot_section(runs: list[dict], out: Path) -> list[str]:
    """Table 2 over the paper's tasks, Table 7 per task, other tasks (synthetic) apart."""
    tasks = sorted({t for run in runs for t in run["result"]["tasks"]})
    paper = [t for t in PAPER_FEWSHOT_TASKS if t in tasks and
             all(t in run["result"]["tasks"] for run in runs)]
    parts: list[str] = []
    if paper:
        title = ("Table 2: few-shot following (FA %, averaged over SST-2, QNLI, RTE)"
                 if len(paper) == 3 else
                 f"Few-shot following over {', '.join(paper)} (FA %; the paper's Table 2 "
                 "averages SST-2, QNLI and RTE)")
        parts += [f"## {title}", "", "FA: the output includes a label shown in the prompt.", "",
                  _fewshot_table(runs, paper, "scores"), "",
                  "Exact match (the answer line is exactly one of those labels):", "",
                  _fewshot_table(runs, paper, "scores_exact"), ""]
        header = ["Method"] + [f"{t} {n}" for t in paper for n in runs[0]["result"]["lengths"]
                               + ["Avg."]]
        rows = []
        for run in runs:
            row: list[Any] = [row_label(run["model"])]
            for task in paper:
                scores = run["result"]["tasks"][task]["scores"]
                row += [*scores, sum(scores) / len(scores)]
            rows.append(row)
        parts += ["### Table 7: FA per task", "", markdown_table(header, rows), ""]
    for task in [t for t in tasks if t not in paper]:
        having = [run for run in runs if task in run["result"]["tasks"]]
        parts += [f"## Few-shot following on the {task} task (not a paper table)", "",
                  "FA %, then exact match %:", "", _fewshot_table(having, [task], "scores"), "",
                  _fewshot_table(having, [task], "scores_exact"), ""]
    parts += _actual_lengths(runs, tasks)
    plots.plot_curves({row_label(r["model"]): (r["result"]["lengths"], r["result"]["scores"])
                       for r in runs}, out / "fewshot.png", "input length (tokens)", "FA (%)",
                      "Few-shot following", runs[0]["result"]["train_length"], percent=True)
    return [*parts, "![fewshot](fewshot.png)", ""]


def grid_section(runs: list[dict], out: Path, title: str) -> list[str]:
    """Needle or passkey: % retrieved per length (mean over depths), heat maps linked."""
    rows = [[row_label(run["model"])] + [sum(r) / len(r) for r in run["result"]["scores"]]
            + [run["result"]["avg"]] for run in runs]
    first = runs[0]["result"]
    lengths = [str(n) for n in first["lengths"]]
    parts = [f"## {title}", "",
             f"Depths {', '.join(f'{d:.0%}' for d in first['depths'])}; "
             f"judge: {first.get('judge', 'exact tokens')}.", "",
             markdown_table(["Method", *lengths, "Avg."], rows), ""]
    parts += [f"![{run['task']} {row_label(run['model'])}]"
              f"({relative(Path(run['path']).with_suffix('.png'), out)})" for run in runs]
    return [*parts, ""]


def attention_section(runs: list[dict], out: Path) -> list[str]:
    """Band VAF (eq. 5) with standard errors, and the plots of each run."""
    rows = []
    for run in runs:
        for r in run["result"]["results"]:
            errors = r.get("band_vaf_standard_error") or {}
            cells = []
            for band in VAF_BANDS:
                value = r["band_vaf"].get(band)
                error = errors.get(band)
                cells.append("-" if value is None else f"{value:.2f}" + (
                    f" ± {error:.2f}" if error is not None else ""))
            rows.append([row_label(run["model"]), r["length"], run["result"]["samples"], *cells])
    parts = ["## Attention analysis (random-token inputs, eq. 4, eq. 5)", "",
             "VAF is eq. 5 literally (not mean-centred): bands need not add up to 100 and can be "
             "negative; ± is one standard error.", "",
             markdown_table(["Method", "length", "samples"]
                            + [f"VAF {band}" for band in VAF_BANDS], rows), ""]
    for run in runs:
        base = Path(run["path"]).parent
        for r in run["result"]["results"]:
            image = base / f"attention_{r['length']}.png"
            parts.append(f"![attention {row_label(run['model'])} {r['length']}]"
                         f"({relative(image, out)})")
        parts.append(f"![vaf {row_label(run['model'])}]"
                     f"({relative(base / 'attention_vaf.png', out)})")
    return [*parts, ""]


def vaf_training_section(runs: list[dict], out: Path) -> list[str]:
    """Figure 3b's dynamics: band VAF at each saved iteration."""
    rows = [[row_label(run["model"]), step] + [
        "-" if run["result"]["band_vaf"][band][i] is None
        else run["result"]["band_vaf"][band][i] for band in VAF_BANDS]
        for run in runs for i, step in enumerate(run["result"]["iterations"])]
    parts = ["## VAF over training (Figure 3b, at the training length)", "",
             markdown_table(["Method", "iteration"] + [f"VAF {b}" for b in VAF_BANDS], rows), ""]
    parts += [f"![vaf over training {row_label(run['model'])}]"
              f"({relative(Path(run['path']).with_suffix('.png'), out)})" for run in runs]
    return [*parts, ""]
