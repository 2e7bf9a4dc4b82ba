"""Result files of one run (JSON + CSV + PNG) and the combined markdown report (Tables 1-3).

Each subcommand writes `<output-dir>/<task>.json` holding {"task", "model": {...label,
position_encoding, rope_scaling...}, "result": {...}}, a CSV in long form and its plots.
`hope-eval report RUN_DIR ... --output-dir DIR` reads every `*.json` it finds under the given
directories and writes `DIR/report.md` with:

  Table 1  copy task: rows = runs, columns = sequence numbers, Avg.
  Table 2  few-shot following (FA averaged over SST-2, QNLI, RTE): columns = input lengths, Avg.
  Table 3  ablation (copy task of rope, ab1, ab2, ab3, hope without scaling)
  Table 7  few-shot FA per task
  PPL vs length (Figure 5, no average: the paper has none), needle (Figure 1) and passkey
  averages, attention VAF, with the plots beside them. The sections live in `report_tables`.
"""

from __future__ import annotations

import json
from pathlib import Path

from megatron_hope.eval import plots
from megatron_hope.eval.common import write_csv, write_json
from megatron_hope.eval.report_tables import (
    attention_section,
    fewshot_section,
    grid_section,
    row_label,
    score_table,
    vaf_training_section,
)

TASKS = ("ppl_vs_length", "copy", "fewshot", "needle", "passkey", "attention",
         "vaf_over_training")
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
    rows = [(label, task, n, s, e) for task, values in result["tasks"].items()
            for n, s, e in zip(result["lengths"], values["scores"], values["scores_exact"],
                               strict=True)]
    rows += [(label, "average", n, s, e) for n, s, e in zip(
        result["lengths"], result["scores"], result["scores_exact"], strict=True)]
    series = {name: (result["lengths"], v["scores"]) for name, v in result["tasks"].items()}
    return [
        write_json(out / "fewshot.json", _payload("fewshot", model, result)),
        write_csv(out / "fewshot.csv", ["model", "task", "input_length", "fa", "fa_exact"],
                  rows),
        plots.plot_curves(series, out / "fewshot.png", "input length (tokens)", "FA (%)",
                          f"Few-shot following, {label}", result["train_length"], percent=True),
    ]


def write_needle(out: Path, model: dict, result: dict, task: str = "needle") -> list[Path]:
    label = model["label"]
    rows = [(label, n, d, result["scores"][i][j]) for i, n in enumerate(result["lengths"])
            for j, d in enumerate(result["depths"])]
    title = "Needle in a haystack" if task == "needle" else "Passkey retrieval"
    return [
        write_json(out / f"{task}.json", _payload(task, model, result)),
        write_csv(out / f"{task}.csv", ["model", "length", "depth", "retrieved"], rows),
        plots.plot_needle(result["lengths"], result["depths"], result["scores"],
                          out / f"{task}.png", f"{title}, {label}"),
    ]


def write_passkey(out: Path, model: dict, result: dict) -> list[Path]:
    return write_needle(out, model, result, task="passkey")


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
        out / "attention_layer_components.csv",
        ["model", "length", "layer", "pair", "theta", "band", "key_position", "component"],
        [(label, r["length"], layer, i, theta[i] if i < len(theta) else "", bands[i], n, value)
         for r in result["results"] for layer, parts in r.get("layer_components", {}).items()
         for i, curve in enumerate(parts) for n, value in enumerate(curve)]))
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


def write_vaf_training(out: Path, model: dict, result: dict) -> list[Path]:
    label = model["label"]
    return [
        write_json(out / "vaf_over_training.json", _payload("vaf_over_training", model, result)),
        write_csv(out / "vaf_over_training.csv", ["model", "iteration", "band", "vaf"],
                  [(label, step, band, values[i]) for band, values in result["band_vaf"].items()
                   for i, step in enumerate(result["iterations"])]),
        plots.plot_vaf_over_training(result, out / "vaf_over_training.png",
                                     f"VAF over training, {label}"),
    ]


WRITERS = {"ppl_vs_length": write_ppl, "copy": write_copy, "fewshot": write_fewshot,
           "needle": write_needle, "passkey": write_passkey, "attention": write_attention,
           "vaf_over_training": write_vaf_training}


# ------------------------------------------------------------------------------- the report
def collect(run_dirs: list[str | Path]) -> dict[str, list[dict]]:
    """All result files under `run_dirs`, grouped by task (sorted by label for stable tables)."""
    found: dict[str, list[dict]] = {task: [] for task in TASKS}
    for run_dir in run_dirs:
        # "" would be the working directory: a run directory is never meant that way.
        if not str(run_dir).strip() or not Path(run_dir).is_dir():
            raise ValueError(f"report: {str(run_dir)!r} is not a directory of hope-eval results")
        for path in sorted(Path(run_dir).rglob("*.json")):
            try:  # other JSON files, unreadable ones included, are not results: skipped
                payload = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
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
                  score_table(copy_runs, "counts", "Method"), "",
                  f"Training length {first['train_length']}; input tokens per sequence number: "
                  f"{lengths}; {first.get('samples', '?')} samples, "
                  f"{'a newline after each sequence' if first.get('separator') else 'no separator'}"
                  ".", ""]
        plots.plot_curves({row_label(r["model"]): (r["result"]["lengths"], r["result"]["scores"])
                           for r in copy_runs}, out / "copy.png", "input length (tokens)",
                          "exact match (%)", "Copy task", first["train_length"], percent=True)
        parts += ["![copy](copy.png)", ""]
    if found["fewshot"]:
        parts += fewshot_section(found["fewshot"], out)
    ablation = [r for r in copy_runs if not r["model"].get("rope_scaling")
                and r["model"].get("position_encoding") in ABLATION_ORDER]
    if ablation:
        ablation.sort(key=lambda r: ABLATION_ORDER.index(r["model"]["position_encoding"]))
        parts += ["## Table 3: ablation (copy task)", "",
                  score_table(ablation, "counts", "Method"), ""]
    ppl = found["ppl_vs_length"]
    if ppl:
        first = ppl[0]["result"]
        parts += ["## Perplexity vs input length (Figure 5)", "",
                  score_table(ppl, "lengths", "Method", "ppl", average=False), "",
                  f"PPL of the last {first['last_tokens']} tokens, {first['samples']} samples, "
                  f"{first.get('windows', 'stream')} windows.", ""]
        plots.plot_curves({row_label(r["model"]): (r["result"]["lengths"], r["result"]["ppl"])
                           for r in ppl}, out / "ppl_vs_length.png", "input length (tokens)",
                          "PPL", "Perplexity vs input length", first["train_length"], logy=True)
        parts += ["![ppl](ppl_vs_length.png)", ""]
    if found["needle"]:
        parts += grid_section(found["needle"], out, "Needle in a haystack (Figure 1; retrieved "
                              "%, mean over depths)")
    if found["passkey"]:
        parts += grid_section(found["passkey"], out, "Passkey retrieval (not a paper figure; "
                              "retrieved %, mean over depths)")
    if found["attention"]:
        parts += attention_section(found["attention"], out)
    if found["vaf_over_training"]:
        parts += vaf_training_section(found["vaf_over_training"], out)
    path = out / "report.md"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
