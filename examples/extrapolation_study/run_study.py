"""Extrapolation study: tiny RoPE, HoPE, p-RoPE and AB1-AB3 models, evaluated from half to 8x
their training length with every `hope-eval` subcommand, then one report.

    # CPU smoke run (minutes on 2 cores; numbers mean little at this size)
    python examples/extrapolation_study/run_study.py --work-dir runs/study-smoke \
        --seq-length 64 --train-iters 30 --samples-scale 0.1

    # The default study (CPU, a few hours on 2 cores)
    python examples/extrapolation_study/run_study.py --work-dir runs/study

    # On GPUs: the same, training with torchrun (one node)
    python examples/extrapolation_study/run_study.py --work-dir runs/study \
        --launcher "torchrun --nproc-per-node 8" --train-iters 5000

Steps (each skipped when its output exists, so an interrupted study resumes):
  1. the sample corpus (stdlib sources) + BPE tokenizer + .bin/.idx  (hope-pretrain's default);
     held-out text for perplexity: the stdlib's own test suites, which the corpus excludes
  2. hope-pretrain per position encoding at --seq-length L (rope, hope, p-rope 0.75, ab1-ab3)
  3. hope-eval ppl-vs-length / copy / fewshot / needle / attention per model, at L/2 .. 8L;
     rope and hope also with --rope-scaling linear:F and yarn:F (the paper's +PI and +YaRN)
  4. hope-eval report -> <work-dir>/report/report.md
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path

ENCODINGS = ("rope", "hope", "p-rope", "ab1", "ab2", "ab3")
SCALED = ("rope", "hope")
TASKS = ("ppl-vs-length", "copy", "fewshot", "needle", "passkey", "attention")


def heldout_jsonl(path: Path, max_bytes: int) -> Path:
    """The stdlib's test-suite sources (never in the sample corpus) as JSONL."""
    if path.exists():
        return path
    tests = sorted((Path(sysconfig.get_paths()["stdlib"]) / "test").glob("test_*.py"))
    written = 0
    with open(path, "w", encoding="utf-8") as handle:
        for source in tests:
            text = source.read_text(encoding="utf-8", errors="ignore")
            handle.write(json.dumps({"text": text}) + "\n")
            written += len(text)
            if written >= max_bytes:
                break
    return path


def run(command: list[str], log: Path) -> None:
    print("+", shlex.join(command), flush=True)
    with open(log, "a", encoding="utf-8") as handle:
        subprocess.run(command, check=True, stdout=handle, stderr=subprocess.STDOUT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work-dir", default="runs/extrapolation-study")
    parser.add_argument("--seq-length", type=int, default=128, help="training length L")
    parser.add_argument("--train-iters", type=int, default=600)
    parser.add_argument("--num-layers", type=int, default=4)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--num-attention-heads", type=int, default=4)
    parser.add_argument("--global-batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--encodings", default=",".join(ENCODINGS))
    parser.add_argument("--scaling-factor", type=float, default=4.0,
                        help="F of the +PI / +YaRN rows")
    parser.add_argument("--samples-scale", type=float, default=1.0,
                        help="multiplies every task's sample count (0.1 for a smoke run)")
    parser.add_argument("--launcher", default=None,
                        help='e.g. "torchrun --nproc-per-node 8" for training on GPUs')
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--tasks", default=",".join(TASKS),
                        help="subset of the hope-eval subcommands to run")
    args = parser.parse_args(argv)

    work = Path(args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    log = work / "study.log"
    length = args.seq_length
    python = [sys.executable]

    from megatron_hope.data.sample_data import prepare_sample_data

    sample = prepare_sample_data(work / "data", vocab_size=args.vocab_size)
    heldout = heldout_jsonl(work / "heldout.jsonl", max_bytes=2_000_000)

    def samples(count: int) -> str:
        return str(max(2, round(count * args.samples_scale)))

    lengths = {
        "ppl-vs-length": [length // 2, length, 2 * length, 4 * length, 8 * length],
        "copy": [],  # the paper's sequence numbers 30..80 x L/512
        "fewshot": [length // 2, length, 2 * length, 4 * length, 8 * length],
        # gkamradt's needle and question alone take about 80 tokens
        "needle": [2 * length, 4 * length, 8 * length],
        "passkey": [length // 2, length, 2 * length, 4 * length, 8 * length],
        "attention": [length, 2 * length],
    }
    counts = {"ppl-vs-length": 100, "copy": 200, "fewshot": 100, "needle": 1, "passkey": 20,
              "attention": 64}
    # The paper scores the last 256 tokens at L = 512: the last L/2 here, so that every length,
    # L/2 included, scores the same tokens.
    extra = {"ppl-vs-length": ["--data", str(heldout), "--last-tokens", str(length // 2)]}

    for encoding in args.encodings.split(","):
        save = work / "checkpoints" / encoding
        if not (save / "latest_checkpointed_iteration.txt").exists():
            # torchrun takes `-m module` like python does.
            launcher = shlex.split(args.launcher) if args.launcher else python
            train = [*launcher, "-m", "megatron_hope.training.cli",
                     "--num-layers", str(args.num_layers), "--hidden-size", str(args.hidden_size),
                     "--num-attention-heads", str(args.num_attention_heads),
                     "--seq-length", str(length), "--position-embedding-type", encoding,
                     "--micro-batch-size", str(min(8, args.global_batch_size)),
                     "--global-batch-size", str(args.global_batch_size),
                     "--train-iters", str(args.train_iters), "--lr", str(args.lr),
                     "--min-lr", str(args.lr / 10), "--lr-warmup-iters",
                     str(max(1, args.train_iters // 20)), "--data-path", str(sample.data_prefix),
                     "--tokenizer-model", str(sample.tokenizer_path), "--save", str(save),
                     "--eval-interval", str(args.train_iters), "--eval-iters", "4",
                     "--log-interval", str(max(1, args.train_iters // 10)), "--no-progress"]
            if encoding == "p-rope":
                train += ["--rope-fraction", "0.75"]
            run(train, log)
        variants = [(encoding, None)]
        if encoding in SCALED:
            variants += [(f"{encoding}+PI", f"linear:{args.scaling_factor:g}"),
                         (f"{encoding}+YaRN", f"yarn:{args.scaling_factor:g}")]
        for label, scaling in variants:
            out = work / "eval" / label
            for task in args.tasks.split(","):
                if task == "attention" and scaling:
                    continue
                stem = task.replace("-", "_")
                if (out / f"{stem}.json").exists():
                    continue
                command = [*python, "-m", "megatron_hope.eval.cli", task, "--load", str(save),
                           "--output-dir", str(out), "--label", label,
                           "--samples", samples(counts[task]), *extra.get(task, [])]
                if lengths[task]:
                    command += ["--lengths", ",".join(map(str, lengths[task]))]
                if scaling:
                    command += ["--rope-scaling", scaling]
                run(command, log)
    run([*python, "-m", "megatron_hope.eval.cli", "report", str(work / "eval"), "--output-dir",
         str(work / "report")], log)
    print(f"report: {work / 'report' / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
