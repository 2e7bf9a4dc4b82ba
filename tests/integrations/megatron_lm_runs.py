"""Megatron-LM's `pretrain()` and `hope-pretrain` on the same flags, data and initial weights.

One flag list (`model_flags`) describes the tiny run; `hope-pretrain` parses it with its own
parser, Megatron-LM (`tools/pretrain_hope_gpt.py` under `megatron_lm_cpu_execution`, one
subprocess per rank, as torchrun would start them) with its own, plus what its loop needs on
CPU (`MEGATRON_LM_CPU_FLAGS`). Losses come back per iteration from both: Megatron-LM's from
its log lines, ours from `PretrainResult.train_losses`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.distributed import run_on_ranks
from tests.megatron_lm_archive import REPOSITORY

TRAIN_ITERS = 5
SEQ_LENGTH = 64
VOCAB_SIZE = 760
"""NullTokenizer's `--vocab-size`, the tokenizer type both loops accept with the same EOD and
pad: the golden tokenizer's 600 ids fit, and 760 pads to 768 rows at TP=1 and TP=2 alike (761
in core_v0.16.1's NullTokenizer, 760 in 0.19.0's). With 600 a TP=1 checkpoint has 640 rows and
Megatron-LM pads to 768 at TP=2: megatron-core loads the 640 saved rows and leaves the other 128
as initialised (it allows that shape mismatch for the embedding and output layer), so its TP=2
run would train another model. `hope-pretrain` keeps a checkpoint's padding where TP divides it."""

LOSS_LINE = re.compile(r"iteration\s+(\d+)/\s*\d+ \|.*?lm loss: ([0-9.E+-]+)")
GRAD_NORM = re.compile(r"iteration\s+(\d+)/\s*\d+ \|.*?grad norm: ([0-9.E+-]+)")

MEGATRON_LM_CPU_FLAGS = [
    # What Megatron-LM's loop needs on CPU (see /work/shared/megatron-lm/README.md).
    "--distributed-backend", "gloo", "--use-cpu-initialization", "--transformer-impl", "local",
    "--no-gradient-accumulation-fusion", "--no-rope-fusion", "--no-masked-softmax-fusion",
    "--no-bias-swiglu-fusion", "--no-bias-dropout-fusion", "--no-persist-layer-norm",
    "--ckpt-format", "torch_dist",
]


HOPE = ("--position-embedding-type", "hope", "--hope-train-length", str(SEQ_LENGTH))


def model_flags(data_prefix: str, train_iters: int = TRAIN_ITERS,
                encoding: tuple[str, ...] = HOPE) -> list[str]:
    """Flags both loops take with the same meaning: a Llama-shaped 2-layer model (SwiGLU,
    RMSNorm, no linear biases: what `hope-convert` exports), HoPE unless `encoding` says
    otherwise, its optimizer, schedule and data. Every value Megatron-LM and `hope-pretrain`
    default differently (dropout) is explicit."""
    return [
        "--num-layers", "2", "--hidden-size", "64", "--num-attention-heads", "4",
        "--seq-length", str(SEQ_LENGTH), "--max-position-embeddings", str(SEQ_LENGTH),
        "--swiglu", "--normalization", "RMSNorm", "--disable-bias-linear",
        "--init-method-std", "0.02", "--hidden-dropout", "0", "--attention-dropout", "0",
        *encoding, "--rotary-base", "10000",
        "--micro-batch-size", "2", "--global-batch-size", "4",
        "--train-iters", str(train_iters), "--lr", "3e-3", "--min-lr", "3e-4",
        "--lr-warmup-iters", "1", "--lr-decay-style", "cosine", "--weight-decay", "0.01",
        "--adam-beta1", "0.9", "--adam-beta2", "0.999", "--adam-eps", "1e-8",
        "--clip-grad", "1.0", "--seed", "1234",
        "--data-path", data_prefix, "--split", "90,10,0",
        "--tokenizer-type", "NullTokenizer", "--vocab-size", str(VOCAB_SIZE),
        "--eval-iters", "0", "--eval-interval", "1000", "--log-interval", "1",
    ]


def from_checkpoint(load: str | Path) -> list[str]:
    """Model-only load, the same on both sides: iteration, optimizer, schedule and RNG start
    anew (Megatron-LM's --finetune resets the iteration; hope-pretrain's --no-load-optim
    does)."""
    return ["--load", str(load), "--no-load-optim", "--no-load-rng", "--finetune"]


def hope_flags(flags: list[str]) -> list[str]:
    """`flags` for hope-pretrain's parser: Megatron-LM's --finetune is what --no-load-optim
    with --no-load-rng already means there."""
    return [flag for flag in flags if flag != "--finetune"] + ["--no-progress"]


# -- hope-pretrain ----------------------------------------------------------------------------


def _hope_pretrain(rank, argv):
    from megatron_hope.training.arguments import parse_config
    from megatron_hope.training.cli import run

    _, result = run(parse_config(argv))
    return {"train": result.train_losses, "grad_norms": result.grad_norms,
            "checkpoint": result.last_checkpoint, "final_iteration": result.final_iteration}


def run_hope_pretrain(flags: list[str], ranks: int = 1) -> dict:
    """hope-pretrain on `ranks` gloo ranks; the last pipeline stage's result."""
    per_rank = run_on_ranks(ranks, _hope_pretrain, hope_flags(flags))
    return next((r for r in per_rank if r["train"]), per_rank[0])


# -- Megatron-LM ------------------------------------------------------------------------------


def megatron_lm_env(folder: Path, rank: int, world_size: int, port: int) -> dict[str, str]:
    paths = [str(REPOSITORY), str(folder), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, paths)),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
            "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank),
            "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // world_size)),
            # Megatron-LM's validate_args asks for it with TP > 1, as its launch scripts set it.
            "CUDA_DEVICE_MAX_CONNECTIONS": "1",
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}


def run_megatron_lm(folder: Path, flags: list[str], cwd: Path, ranks: int = 1,
                    timeout: float = 400, upstream: bool = False,
                    legacy_model_provider: bool = False) -> dict:
    """`tools/pretrain_hope_gpt.py` with Megatron-LM's `pretrain()` on `ranks` processes
    (`upstream`: Megatron-LM's own `pretrain_gpt.py`, without our plug-in;
    `legacy_model_provider`: the launcher's `partial(model_provider, hope_gpt_builder)` where
    the tag also has the ModelConfig path).

    Returns {"losses": {iteration: lm loss}, "grad_norms": ..., "output": all ranks' logs}.
    """
    from megatron_hope.training.distributed import _free_port

    port = _free_port()
    argv = [sys.executable, "-m", "tests.integrations.megatron_lm_driver",
            "--megatron-lm-path", str(folder), *MEGATRON_LM_CPU_FLAGS, *flags,
            *(["--upstream"] if upstream else []),
            *(["--legacy-model-provider"] if legacy_model_provider else [])]
    cwd.mkdir(parents=True, exist_ok=True)
    procs = [subprocess.Popen(argv, cwd=cwd, env=megatron_lm_env(folder, rank, ranks, port),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in range(ranks)]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=timeout)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    output = "\n".join(outputs)
    failed = [rank for rank, proc in enumerate(procs) if proc.returncode != 0]
    if failed:
        raise AssertionError(f"Megatron-LM ranks {failed} failed:\n{output[-6000:]}")
    return {"losses": iteration_losses(_per_iteration(LOSS_LINE, output)),
            "grad_norms": _per_iteration(GRAD_NORM, output), "output": output}


def _per_iteration(pattern: re.Pattern, output: str) -> dict[int, float]:
    return {int(iteration): float(value) for iteration, value in pattern.findall(output)}


def iteration_losses(printed: dict[int, float]) -> dict[int, float]:
    """Each iteration's own loss from Megatron-LM's lines at --log-interval 1.

    Its `training_log` prints a run's first iteration without resetting the running sums
    (`should_reset = not is_first_iteration`, in core_v0.16.1 and core_v0.19.0 alike), so the
    next line is the mean of the first two iterations: that one's own loss is 2 x its line
    minus the first. The lines carry 7 significant digits: ~2e-7 relative after this step.
    """
    losses = dict(printed)
    if len(printed) > 1:
        first, second = sorted(printed)[:2]
        losses[second] = 2 * printed[second] - printed[first]
    return losses


# -- checkpoints ------------------------------------------------------------------------------


def checkpoint_at(save: str | Path, iteration: int, destination: Path) -> Path:
    """A copy of `save`'s checkpoint at `iteration` as a directory whose tracker names it: what
    a run stopped at `iteration` would have left."""
    name = f"iter_{iteration:07d}"
    destination.mkdir(parents=True)
    shutil.copytree(Path(save) / name, destination / name)
    (destination / "latest_checkpointed_iteration.txt").write_text(f"{iteration}\n")
    return destination


def max_relative_difference(losses: dict[int, float], reference: dict[int, float]) -> float:
    assert sorted(losses) == sorted(reference), (losses, reference)
    return max(abs(losses[i] - reference[i]) / abs(reference[i]) for i in reference)
