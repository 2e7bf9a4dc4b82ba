"""A CPU check that separates the encodings: local induction recall past the training length.

    # The study as the README reports it (about 15 minutes on 2 CPU cores)
    OMP_NUM_THREADS=1 python examples/extrapolation_study/separation_study.py \
        --work-dir runs/separation

    # A smoke run of the pipeline (seconds; the numbers mean nothing)
    python examples/extrapolation_study/separation_study.py --work-dir runs/separation-smoke \
        --train-iters 5 --hidden-size 32 --eval-samples 4

Steps (each skipped when its output exists, so an interrupted study resumes):
  1. task data (`megatron_hope.eval.recall_task`) as ids, written to .bin/.idx by the project's
     writer with Megatron's NullTokenizer (`<work-dir>/data/recall`)
  2. hope-pretrain per encoding and seed at --seq-length L (`<work-dir>/checkpoints/<enc>-s<seed>`)
  3. each checkpoint scored at L, 1.5L, 2L and 4L on held-out samples (`<work-dir>/eval/...json`)
  4. `<work-dir>/separation.json`, `separation.md` (the table) and `separation.png`
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

ENCODINGS = ("rope", "hope", "p-rope", "none")
LENGTH_FACTORS = (1.0, 1.5, 2.0, 4.0)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work-dir", default="runs/separation")
    parser.add_argument("--encodings", default=",".join(ENCODINGS))
    parser.add_argument("--seeds", default="1,2", help="training seeds, comma separated")
    parser.add_argument("--train-iters", type=int, default=1000)
    parser.add_argument("--seq-length", type=int, default=64, help="training length L")
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--num-attention-heads", type=int, default=2)
    parser.add_argument("--global-batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--rope-fraction", type=float, default=0.5, help="p of p-rope")
    parser.add_argument("--copy-tokens", type=int, default=8)
    parser.add_argument("--max-distance", type=int, default=None, help="default L/2")
    parser.add_argument("--eval-samples", type=int, default=200, help="sequences per length")
    parser.add_argument("--jobs", type=int, default=2,
                        help="trainings run at once (each single-threaded)")
    parser.add_argument("--window", type=int, default=None,
                        help="score the copy targets in the last WINDOW positions (default L/2)")
    return parser.parse_args(argv)


def task_of(args: argparse.Namespace):
    from megatron_hope.eval.recall_task import RecallTask

    longest = int(max(LENGTH_FACTORS) * args.seq_length)
    return RecallTask(vocab_size=2 * longest, copy_tokens=args.copy_tokens,
                      max_distance=args.max_distance or args.seq_length // 2)


def write_data(args: argparse.Namespace, prefix: Path) -> None:
    """Training documents of L - 1 ids (+ EOD) in a .bin/.idx pair; skipped when it exists."""
    if Path(f"{prefix}.idx").exists():
        return
    import numpy

    from megatron_hope.data.indexed import write_indexed_dataset
    from megatron_hope.data.null_tokenizer import NullHopeTokenizer

    task = task_of(args)
    rng = numpy.random.default_rng(0)
    # Enough documents for every sample of training and its validation split, twice over.
    documents = 2 * (args.train_iters + 10) * args.global_batch_size
    prefix.parent.mkdir(parents=True, exist_ok=True)
    jsonl = prefix.parent / "recall.jsonl"
    with open(jsonl, "w", encoding="utf-8") as handle:
        for _ in range(documents):
            tokens, _targets = task.sequence(rng, args.seq_length - 1)
            handle.write(json.dumps({"text": " ".join(map(str, tokens.tolist()))}) + "\n")
    write_indexed_dataset(jsonl, NullHopeTokenizer(task.vocab_size), prefix)
    jsonl.unlink()


def train(args: argparse.Namespace, prefix: Path, encoding: str, seed: int, save: Path,
          log: Path) -> None:
    """hope-pretrain in a subprocess (megatron-core keeps global state per process)."""
    if (save / "latest_checkpointed_iteration.txt").exists():
        return
    command = [sys.executable, "-m", "megatron_hope.training.cli",
               "--num-layers", str(args.num_layers), "--hidden-size", str(args.hidden_size),
               "--num-attention-heads", str(args.num_attention_heads),
               "--seq-length", str(args.seq_length), "--max-position-embeddings",
               str(int(max(LENGTH_FACTORS) * args.seq_length)),
               "--position-embedding-type", encoding, "--seed", str(seed),
               "--micro-batch-size", str(args.global_batch_size),
               "--global-batch-size", str(args.global_batch_size),
               "--train-iters", str(args.train_iters), "--lr", str(args.lr),
               "--min-lr", str(args.lr / 10), "--lr-warmup-iters",
               str(max(1, args.train_iters // 10)), "--data-path", str(prefix),
               "--split", "99,1,0", "--tokenizer-type", "NullTokenizer",
               "--vocab-size", str(task_of(args).vocab_size), "--save", str(save),
               "--eval-interval", str(args.train_iters), "--eval-iters", "1",
               "--log-interval", str(max(1, args.train_iters // 5)), "--num-workers", "0",
               "--no-progress"]
    if encoding == "p-rope":
        command += ["--rope-fraction", str(args.rope_fraction)]
    with open(log, "a", encoding="utf-8") as handle:
        handle.write("+ " + shlex.join(command) + "\n")
        handle.flush()
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        subprocess.run(command, check=True, stdout=handle, stderr=subprocess.STDOUT, env=env)


def evaluate(args: argparse.Namespace, checkpoints: dict[str, Path], out: Path) -> dict:
    """Every checkpoint's accuracy per length, in this process (one model at a time)."""
    results = {name: json.loads((out / f"{name}.json").read_text())
               for name in checkpoints if (out / f"{name}.json").exists()}
    pending = [name for name in checkpoints if name not in results]
    if not pending:
        return results  # megatron-core is not even imported
    import torch
    from tqdm import tqdm

    from megatron_hope.eval.recall_task import accuracy, scored_mask
    from megatron_hope.megatron.cpu import cpu_execution
    from megatron_hope.training.model_loading import load_model_from_checkpoint

    torch.set_num_threads(1)
    task = task_of(args)
    window = args.window or args.seq_length // 2
    lengths = [int(factor * args.seq_length) for factor in LENGTH_FACTORS]
    with cpu_execution():
        for name in tqdm(pending, desc="evaluate", unit="model"):
            loaded = load_model_from_checkpoint(checkpoints[name])
            scores = {}
            for length in lengths:
                # One held-out draw per length, the same for every model (seed 10**6 + length).
                tokens, targets = task.batch(10**6 + length, args.eval_samples, length)
                predictions = torch.cat([loaded.logits(chunk).argmax(-1).cpu()
                                         for chunk in tokens.split(50)])
                scores[str(length)] = accuracy(predictions, tokens, scored_mask(targets, window))
            out.mkdir(parents=True, exist_ok=True)
            (out / f"{name}.json").write_text(json.dumps(scores, indent=1))
            results[name] = scores
            del loaded
    return {name: results[name] for name in checkpoints}


def summarise(args: argparse.Namespace, results: dict, seeds: list[int]) -> dict:
    """Mean over seeds per encoding and length; SE combines the per-seed SEs and the spread."""
    summary = {}
    for encoding in args.encodings.split(","):
        rows = [results[f"{encoding}-s{seed}"] for seed in seeds]
        summary[encoding] = {}
        for length in rows[0]:
            values = [row[length]["accuracy"] for row in rows]
            mean = sum(values) / len(values)
            sampling = (sum(row[length]["se"] ** 2 for row in rows) ** 0.5) / len(rows)
            spread = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 \
                / len(values) ** 0.5 if len(values) > 1 else 0.0
            summary[encoding][length] = {"accuracy": mean, "se_samples": sampling,
                                         "se_seeds": spread, "per_seed": values}
    return summary


def table(summary: dict, seq_length: int) -> str:
    lengths = list(next(iter(summary.values())))
    head = " | ".join(f"{int(n) / seq_length:g}L = {n}" for n in lengths)
    lines = [f"| encoding | {head} |", "|---" * (len(lengths) + 1) + "|"]
    for encoding, cells in summary.items():
        lines.append(f"| {encoding} | " + " | ".join(
            f"{c['accuracy']:.1f} ± {max(c['se_samples'], c['se_seeds']):.1f}"
            for c in cells.values()) + " |")
    return "\n".join(lines)


def plot(summary: dict, seq_length: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5.5, 3.8))
    for encoding, cells in summary.items():
        xs = [int(n) / seq_length for n in cells]
        ys = [c["accuracy"] for c in cells.values()]
        errors = [max(c["se_samples"], c["se_seeds"]) for c in cells.values()]
        axis.errorbar(xs, ys, yerr=errors, marker="o", capsize=3, label=encoding)
    axis.set_xlabel("evaluation length / training length L")
    axis.set_ylabel("copy-token accuracy, last L/2 (%)")
    axis.set_ylim(-2, 102)
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    args = parse_args(argv)
    started = time.monotonic()
    work = Path(args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    prefix = work / "data" / "recall"
    write_data(args, prefix)
    seeds = [int(seed) for seed in args.seeds.split(",")]
    runs = {f"{encoding}-s{seed}": (encoding, seed)
            for encoding in args.encodings.split(",") for seed in seeds}
    checkpoints = {name: work / "checkpoints" / name for name in runs}
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [pool.submit(train, args, prefix, encoding, seed, checkpoints[name],
                               work / f"train-{name}.log")
                   for name, (encoding, seed) in runs.items()]
        for future in tqdm(as_completed(futures), total=len(futures), desc="train",
                           unit="model"):
            future.result()
    results = evaluate(args, checkpoints, work / "eval")
    summary = summarise(args, results, seeds)
    text = table(summary, args.seq_length)
    payload = {"settings": vars(args), "task": task_of(args).__dict__ | {
        "window": args.window or args.seq_length // 2}, "summary": summary, "runs": results,
        "wall_seconds_this_call": round(time.monotonic() - started, 1)}
    (work / "separation.json").write_text(json.dumps(payload, indent=1, default=list))
    (work / "separation.md").write_text(text + "\n")
    plot(summary, args.seq_length, work / "separation.png")
    print(text)
    print(f"wrote {work / 'separation.json'}, separation.md, separation.png "
          f"({payload['wall_seconds_this_call']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
