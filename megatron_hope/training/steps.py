"""One training step's pieces: the forward step and loss megatron-core's schedules call, and the
SIGTERM flag every rank checks between steps."""

from __future__ import annotations

import signal
from functools import partial

import torch
import torch.distributed as dist
from megatron.core import parallel_state

from megatron_hope.training.data import get_batch

LOSS_KEY = "lm loss"


def loss_func(loss_mask: torch.Tensor, output_tensor: torch.Tensor):
    """Mean token loss of one micro-batch; the report is averaged over data-parallel ranks."""
    losses = output_tensor.float().reshape(-1)
    mask = loss_mask.float().reshape(-1)
    loss = torch.sum(losses * mask) / mask.sum().clamp(min=1.0)
    reported = loss.detach().clone()
    group = parallel_state.get_data_parallel_group()
    dist.all_reduce(reported, group=group)
    reported /= dist.get_world_size(group)
    return loss, {LOSS_KEY: reported}


def forward_step(data_iterator, model):
    """One micro-batch through one pipeline stage (megatron-core's forward_step_func contract)."""
    batch = get_batch(data_iterator)
    output = model(batch["tokens"], batch["position_ids"], None, labels=batch["labels"])
    return output, partial(loss_func, batch["loss_mask"])


def _mean_loss(losses_reduced: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    if not losses_reduced:
        return {}
    return {
        key: float(sum(item[key] for item in losses_reduced) / len(losses_reduced))
        for key in losses_reduced[0]
    }


class _SignalFlag:
    """Set by SIGTERM (`--exit-signal-handler`): the run saves and stops at the next step."""

    def __init__(self, enabled: bool) -> None:
        self.received = False
        self._previous = None
        if enabled:
            self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:
        self.received = True

    def any_rank(self) -> bool:
        # A device tensor: NCCL (the GPU backend) reduces nothing else.
        flag = torch.tensor([1.0 if self.received else 0.0], device=torch.cuda.current_device())
        dist.all_reduce(flag)
        return bool(flag.item() > 0)

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
