"""Numbers that go bad: what a run does with a NaN or Inf loss or gradient.

Policy (also in the README, `hope-pretrain` section):

- Before every optimizer step, every rank checks its loss (last pipeline stage) and its
  gradient buffers for NaN/Inf, and all ranks agree on the answer (one all-reduce of a flag).
- A non-finite iteration skips the update: weights, optimizer state and learning-rate schedule
  stay as they were, so no NaN/Inf ever reaches a checkpoint. The iteration still consumes its
  batch and counts in the iteration line under "number of skipped iterations" and
  "number of nan iterations" (Megatron-LM's fields).
- After `--max-consecutive-nan-iterations` non-finite iterations in a row, the run stops with
  `NonFiniteTrainingError` (exit status 1) naming the iterations; its last checkpoint is finite.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist


class NonFiniteTrainingError(RuntimeError):
    """Too many NaN/Inf iterations in a row: the run stops instead of training on garbage."""


def _local_grads(model_chunks):
    """The gradient tensors of this rank: megatron-core DDP's flat buffers where it has them."""
    for chunk in model_chunks:
        buffers = list(getattr(chunk, "buffers", []) or [])
        buffers += list(getattr(chunk, "expert_parallel_buffers", []) or [])
        if buffers:
            yield from (buffer.grad_data for buffer in buffers)
            continue
        for param in chunk.parameters():
            grad = getattr(param, "main_grad", None)
            if grad is None:
                grad = param.grad
            if grad is not None:
                yield grad


def nonfinite_on_any_rank(loss: float | None, model_chunks) -> bool:
    """True when the loss or any gradient is NaN/Inf on any rank (every rank gets the answer)."""
    bad = loss is not None and not math.isfinite(loss)
    if not bad:
        for grad in _local_grads(model_chunks):
            if not bool(torch.isfinite(grad).all()):
                bad = True
                break
    # A device tensor: NCCL (the GPU backend) reduces nothing else.
    flag = torch.tensor([1.0 if bad else 0.0], device=torch.cuda.current_device())
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item() > 0)


class NanStreak:
    """Counts non-finite iterations in a row; stops the run past the limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.first: int | None = None
        self.count = 0

    def record(self, iteration: int, nonfinite: bool, last_checkpoint: str | None) -> None:
        if not nonfinite:
            self.first, self.count = None, 0
            return
        self.first = iteration if self.first is None else self.first
        self.count += 1
        if self.count >= self.limit:
            kept = (f"the last checkpoint ({last_checkpoint}) holds only finite numbers"
                    if last_checkpoint else "no checkpoint was written")
            raise NonFiniteTrainingError(
                f"iterations {self.first}-{iteration}: the loss or gradients were NaN/Inf "
                f"{self.count} times in a row (--max-consecutive-nan-iterations {self.limit}); "
                f"their updates were skipped and {kept}. Lower --lr or raise --lr-warmup-iters, "
                "check the data around these iterations, then resume with --load")
