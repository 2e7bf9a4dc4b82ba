"""Megatron-LM's log lines, TensorBoard scalars and the progress bar of a training run.

The line formats are Megatron-LM's (`training.py: training_log` and `evaluate_and_print_results`)
so existing log parsers keep working, e.g.

    [2026-11-22 07:40:01] iteration        5/      20 | consumed samples:           40 | ...
     validation loss at iteration 20 | lm loss value: 5.123456E+00 | lm loss PPL: 1.678E+02 |
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field

from tqdm import tqdm


def format_iteration_line(
    iteration: int,
    train_iters: int,
    consumed_samples: int,
    elapsed_ms_per_iteration: float,
    learning_rate: float,
    global_batch_size: int,
    losses: dict[str, float],
    grad_norm: float | None,
    tokens_per_second: float,
    skipped_iterations: int = 0,
    nan_iterations: int = 0,
    flops_fields: str = "",
) -> str:
    """One training log line, field by field as Megatron-LM prints it."""
    line = f" [{time.strftime('%Y-%m-%d %H:%M:%S')}]"
    line += f" iteration {iteration:8d}/{train_iters:8d} |"
    line += f" consumed samples: {consumed_samples:12d} |"
    line += f" elapsed time per iteration (ms): {elapsed_ms_per_iteration:.1f} |"
    line += flops_fields  # --log-throughput: TFLOP/s per GPU (and MFU), where Megatron-LM puts it
    line += f" throughput (tokens/s): {tokens_per_second:.1f} |"
    line += f" learning rate: {learning_rate:.6E} |"
    line += f" global batch size: {global_batch_size:5d} |"
    for key, value in losses.items():
        line += f" {key}: {value:.6E} |"
    if grad_norm is not None:
        line += f" grad norm: {grad_norm:.3f} |"
    line += f" number of skipped iterations: {skipped_iterations:3d} |"
    line += f" number of nan iterations: {nan_iterations:3d} |"
    return line


def format_validation_line(iteration: int, losses: dict[str, float], split: str = "validation"):
    """Megatron-LM's evaluation line with value and perplexity per loss."""
    line = f" {split} loss at iteration {iteration} |"
    for key, value in losses.items():
        line += f" {key} value: {value:.6E} | {key} PPL: {math.exp(min(20.0, value)):.6E} |"
    return line


@dataclass
class IntervalStats:
    """Sums over the current logging interval."""

    losses: dict[str, float] = field(default_factory=dict)
    iterations: int = 0
    seconds: float = 0.0
    skipped: int = 0
    """Iterations whose update was skipped (NaN/Inf among them)."""
    nan: int = 0
    """Iterations with a NaN/Inf loss or gradient; their losses stay out of the mean."""

    def add(self, losses: dict[str, float], seconds: float, skipped: bool = False,
            nan: bool = False) -> None:
        if not nan:
            for key, value in losses.items():
                self.losses[key] = self.losses.get(key, 0.0) + value
        self.iterations += 1
        self.seconds += seconds
        self.skipped += int(skipped)
        self.nan += int(nan)

    def mean_losses(self) -> dict[str, float]:
        counted = max(1, self.iterations - self.nan)
        return {key: value / counted for key, value in self.losses.items()}


class Reporter:
    """Prints, plots and shows progress on the one rank that logs (the last pipeline stage's
    first rank); other ranks get a Reporter with `active=False` that does nothing."""

    def __init__(self, active: bool, train_iters: int, start_iteration: int,
                 tensorboard_dir: str | None, progress: bool) -> None:
        self.active = active
        self.writer = None
        self.bar = None
        if not active:
            return
        if tensorboard_dir:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=tensorboard_dir)
        if progress and train_iters > start_iteration:
            interactive = sys.stderr.isatty()
            self.bar = tqdm(total=train_iters, initial=start_iteration, unit="it",
                            desc="pretraining", dynamic_ncols=True,
                            mininterval=0.5 if interactive else 30.0)

    def print(self, line: str) -> None:
        if not self.active:
            return
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def advance(self, postfix: dict[str, float] | None = None) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if postfix:
                self.bar.set_postfix({key: f"{value:.4f}" for key, value in postfix.items()},
                                     refresh=False)

    def scalars(self, iteration: int, values: dict[str, float]) -> None:
        if self.writer is None:
            return
        for key, value in values.items():
            if value is not None:
                self.writer.add_scalar(key, value, iteration)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
