"""Result files of one run (JSON + CSV + PNG) and the combined markdown report (Tables 1-3).

Each subcommand writes `<output-dir>/<task>.json` holding {"task", "model": {...label,
position_encoding, rope_scaling...}, "result": {...}}, a CSV in long form and its plots.
`hope-eval report RUN_DIR ... --output-dir DIR` reads every `*.json` it finds under the given
directories and writes `DIR/report.md` with:

  Table 1  copy task: rows = runs, columns = sequence numbers, Avg.
  Table 2  few-shot following (FA averaged over tasks): rows = runs, columns = input lengths
  Table 3  ablation (copy task of rope, ab1, ab2, ab3, hope without scaling)
  Table 7  few-shot FA per task
  PPL vs length (Figure 5) and needle averages, with the plots beside them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from megatron_hope.eval import plots
from megatron_hope.eval.common import write_csv, write_json

TASKS = ("ppl_vs_length", "copy", "fewshot", "needle", "attention")
ABLATION_ORDER = ("rope", "ab1", "ab2", "ab3", "hope")


def _payload(task: str, model: dict, result: dict) -> dict:
    return {"task": task, "model": model, "result": result}


def write_ppl(out: Path, model: dict, result: dict) -> list[Path]:
    label = model["label"]
    return [
        write_json(out / "ppl_vs_length.json", _payload("ppl_vs_length", model, result)),
        write_csv(out / "ppl_vs_length.csv", ["model", "length", "ppl", "tokens_scored"],
                  [(label, n, p, t) for n, p, t in zip(result["lengths"], result["ppl"],
                                                       result["tokens_scored"], strict=True)]),
        plots.plot_curves({label: (result["lengths"], result["ppl"])},
                          out / "ppl_vs_length.png", "input length (tokens)",
                          f"PPL of the last {result['last_tokens']} tokens",
                          "Perplexity vs input length", result["train_length"], logy=True),
    ]


def write_copy(out: Path, model: dict, result: dict) -> list[Path]:
    label = model["label"]
    return [
        write_json(out / "copy.json", _payload("copy", model, result)),
        write_csv(out / "copy.csv", ["model", "sequences", "input_length", "exact_match"],
                  [(label, c, n, s) for c, n, s in zip(result["counts"], result["lengths"],
                                                       result["scores"], strict=True)]),
        plots.plot_curves({label: (result["lengths"], result["scores"])}, out / "copy.png",
                          "input length (tokens)", "exact match (%)", "Copy task",
                          result["train_length"], percent=True),
    ]


def write_fewshot(out: Path, model: dict, result: dict) -> list[Path]:
    label = model["label"]
    rows = [(label, task, n, s) for task, values in result["tasks"].items()
            for n, s in zip(result["lengths"], values["scores"], strict=True)]
    rows += [(label, "average", n, s)
             for n, s in zip(result["lengths"], result["scores"], strict=True)]
    series = {name: (result["lengths"], v["scores"]) for name, v in result["tasks"].items()}
    return [
        write_json(out / "fewshot.json", _payload("fewshot", model, result)),
        write_csv(out / "fewshot.csv", ["model", "task", "input_length", "fa"], rows),
        plots.plot_curves(series, out / "fewshot.png", "input length (tokens)", "FA (%)",
                          f"Few-shot following, {label}", result["train_length"], percent=True),
    ]


def write_needle(out: Path, model: dict, result: dict) -> list[Path]:
    label = model["label"]
    rows = [(label, n, d, result["scores"][i][j]) for i, n in enumerate(result["lengths"])
            for j, d in enumerate(result["depths"])]
    return [
        write_json(out / "needle.json", _payload("needle", model, result)),
        write_csv(out / "needle.csv", ["model", "length", "depth", "retrieved"], rows),
        plots.plot_needle(result["lengths"], result["depths"], result["scores"],
                          out / "needle.png", f"Passkey retrieval, {label}"),
    ]


def write_attention(out: Path, model: dict, result: dict) -> list[Path]:
    label = model["label"]
    theta = result["theta"]
    bands = result["bands"] + ["?"] * (len(result["results"][0]["vaf"]) - len(result["bands"]))
    files = [write_json(out / "attention.json", _payload("attention", model, result))]
    files.append(write_csv(
        out / "attention_logits.csv", ["model", "length", "layer", "key_position", "logit"],
        [(label, r["length"], layer, n, value)
         for r in result["results"]
         for layer, curve in [("mean", r["logits"]), *list(enumerate(r["per_layer_logits"]))]
         for n, value in enumerate(curve)]))
    files.append(write_csv(
        out / "attention_components.csv",
        ["model", "length", "pair", "theta", "band", "key_position", "component"],
        [(label, r["length"], i, theta[i] if i < len(theta) else "", bands[i], n, value)
         for r in result["results"] for i, curve in enumerate(r["components"])
         for n, value in enumerate(curve)]))
    files.append(write_csv(
        out / "attention_vaf.csv", ["model", "length", "pair", "theta", "band", "vaf"],
        [(label, r["length"], i, theta[i] if i < len(theta) else "", bands[i], v)
         for r in result["results"] for i, v in enumerate(r["vaf"])]))
    for r in result["results"]:
        files.append(plots.plot_attention(r, bands, out / f"attention_{r['length']}.png",
                                          f"Random-token attention, {label}, length "
                                          f"{r['length']}", result["train_length"]))
    files.append(plots.plot_vaf({r["length"]: r["vaf"] for r in result["results"]}, bands,
                                out / "attention_vaf.png", f"VAF per pair (eq. 5), {label}"))
    return files


WRITERS = {"ppl_vs_length": write_ppl, "copy": write_copy, "fewshot": write_fewshot,
           "needle": write_needle, "attention": write_attention}


# ------------------------------------------------------------------------------- the report
def collect(run_dirs: list[str | Path]) -> dict[str, list[dict]]:
    """All result files under `run_dirs`, grouped by task (sorted by label for stable tables)."""
    found: dict[str, list[dict]] = {task: [] for task in TASKS}
    for run_dir in run_dirs:
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise ValueError(f"report: {run_dir} is not a directory of hope-eval results")
        for path in sorted(run_dir.rglob("*.json")):
            try:
                payload = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                continue
            if isinstance(payload, dict) and payload.get("task") in found:
                payload["path"] = str(path)
                found[payload["task"]].append(payload)
    for runs in found.values():
        runs.sort(key=_row_order)
    return found


ROW_ORDER = ("rope", "p-rope", "none", "ab1", "ab2", "ab3", "hope")


def _row_order(payload: dict) -> tuple:
    """The paper's row order: RoPE, +PI, +YaRN, ..., HoPE, +PI, +YaRN; unknown types last."""
    model = payload.get("model", {})
    kind = model.get("position_encoding")
    scaling = str(model.get("rope_scaling") or "")
    return (ROW_ORDER.index(kind) if kind in ROW_ORDER else len(ROW_ORDER),
            ("", "linear", "yarn").index(scaling.split(":")[0]) if scaling.split(":")[0] in
            ("", "linear", "yarn") else 3, model.get("label", ""))


def _number(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_number(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _score_table(runs: list[dict], key: str, first: str) -> str:
    columns = sorted({c for run in runs for c in run["result"][key]})
    rows = []
    for run in runs:
        by_column = dict(zip(run["result"][key], run["result"]["scores"], strict=True))
        rows.append([run["model"]["label"]] + [by_column.get(c, "") for c in columns]
                    + [run["result"]["avg"]])
    return markdown_table([first] + [str(c) for c in columns] + ["Avg."], rows)


def _relative(path: str, out: Path) -> str:
    """`path` as the report links it: relative to the report's directory."""
    return os.path.relpath(Path(path).resolve(), out.resolve())


def build_report(run_dirs: list[str | Path], output_dir: str | Path) -> Path:
    """Write `report.md` (and combined plots) from the runs' result files."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    found = collect(run_dirs)
    if not any(found.values()):
        where = ", ".join(map(str, run_dirs))
        raise ValueError(f"report: no hope-eval result (*.json) under {where}")
    parts = ["# HoPE evaluation report", ""]
    copy_runs = found["copy"]
    if copy_runs:
        first = copy_runs[0]["result"]
        lengths = ", ".join(f"{c}: {n}"
                            for c, n in zip(first["counts"], first["lengths"], strict=True))
        parts += ["## Table 1: copy task (exact match %, by sequence number)", "",
                  _score_table(copy_runs, "counts", "Method"), "",
                  f"Training length {copy_runs[0]['result']['train_length']}; prompt tokens "
                  f"per sequence number: {lengths}.", ""]
        plots.plot_curves({r["model"]["label"]: (r["result"]["lengths"], r["result"]["scores"])
                           for r in copy_runs}, out / "copy.png", "input length (tokens)",
                          "exact match (%)", "Copy task", copy_runs[0]["result"]["train_length"],
                          percent=True)
        parts += ["![copy](copy.png)", ""]
    few = found["fewshot"]
    if few:
        parts += ["## Table 2: few-shot following (FA %, averaged over tasks)", "",
                  _score_table(few, "lengths", "Method"), ""]
        tasks = sorted({t for run in few for t in run["result"]["tasks"]})
        header = ["Method"] + [f"{t} {n}" for t in tasks for n in few[0]["result"]["lengths"]]
        rows = [[run["model"]["label"]] + [v for t in tasks for v in
                                           run["result"]["tasks"].get(t, {}).get("scores", [])]
                for run in few]
        parts += ["### Table 7: FA per task", "", markdown_table(header, rows), ""]
        plots.plot_curves({r["model"]["label"]: (r["result"]["lengths"], r["result"]["scores"])
                           for r in few}, out / "fewshot.png", "input length (tokens)", "FA (%)",
                          "Few-shot following", few[0]["result"]["train_length"], percent=True)
        parts += ["![fewshot](fewshot.png)", ""]
    ablation = [r for r in copy_runs if not r["model"].get("rope_scaling")
                and r["model"].get("position_encoding") in ABLATION_ORDER]
    if ablation:
        ablation.sort(key=lambda r: ABLATION_ORDER.index(r["model"]["position_encoding"]))
        parts += ["## Table 3: ablation (copy task)", "",
                  _score_table(ablation, "counts", "Method"), ""]
    ppl = found["ppl_vs_length"]
    if ppl:
        parts += ["## Perplexity vs input length (Figure 5)", "",
                  _score_table([{**r, "result": {**r["result"], "scores": r["result"]["ppl"],
                                                  "avg": sum(r["result"]["ppl"]) /
                                                  len(r["result"]["ppl"])}} for r in ppl],
                               "lengths", "Method"), ""]
        plots.plot_curves({r["model"]["label"]: (r["result"]["lengths"], r["result"]["ppl"])
                           for r in ppl}, out / "ppl_vs_length.png", "input length (tokens)",
                          "PPL", "Perplexity vs input length", ppl[0]["result"]["train_length"],
                          logy=True)
        parts += ["![ppl](ppl_vs_length.png)", ""]
    needle = found["needle"]
    if needle:
        parts += ["## Needle in a haystack (retrieved %, averaged over depths)", ""]
        rows = []
        for run in needle:
            result = run["result"]
            rows.append([run["model"]["label"]] + [sum(r) / len(r) for r in result["scores"]]
                        + [result["avg"]])
        parts += [markdown_table(["Method"] + [str(n) for n in needle[0]["result"]["lengths"]]
                                 + ["Avg."], rows), ""]
        parts += [f"![needle {run['model']['label']}]"
                  f"({_relative(str(Path(run['path']).with_suffix('.png')), out)})"
                  for run in needle] + [""]
    attention = found["attention"]
    if attention:
        parts += ["## Attention analysis (random-token inputs, eq. 4, eq. 5)", "",
                  markdown_table(["Method", "length", "VAF activated", "VAF low", "VAF high"],
                                 [[run["model"]["label"], r["length"]] +
                                  [r["band_vaf"].get(b) if r["band_vaf"].get(b) is not None
                                   else "-" for b in ("activated", "low", "high")]
                                  for run in attention for r in run["result"]["results"]]), ""]
        for run in attention:
            base = Path(run["path"]).parent
            for r in run["result"]["results"]:
                image = base / f"attention_{r['length']}.png"
                parts.append(f"![attention {run['model']['label']} {r['length']}]"
                             f"({_relative(str(image), out)})")
            parts.append(f"![vaf {run['model']['label']}]"
                         f"({_relative(str(base / 'attention_vaf.png'), out)})")
        parts.append("")
    path = out / "report.md"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
