"""One micro-batch through one pipeline stage: megatron-core's `forward_step_func` and loss.

As Megatron-LM's `pretrain_gpt.py`: the loss is the token mean of one micro-batch (megatron-core's
schedule then averages micro-batches), or with `--calculate-per-token-loss` the token sum and
token count, which the schedule and `finalize_model_grads` turn into the mean over every token of
the global batch. Reported losses are `[sum, count]` pairs in the second case.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.distributed as dist
from megatron.core import parallel_state
from megatron.core.utils import get_model_config

from megatron_hope.training.data import get_batch

LOSS_KEY = "lm loss"


def loss_func(loss_mask: torch.Tensor, output_tensor: torch.Tensor):
    """Mean token loss of one micro-batch; the report is averaged over data- (and context-)
    parallel ranks."""
    losses = output_tensor.float().reshape(-1)
    mask = loss_mask.float().reshape(-1)
    loss = torch.sum(losses * mask) / mask.sum().clamp(min=1.0)
    reported = loss.detach().clone()
    # Context-parallel ranks hold equal slices of the same sequences: their mean is the mean.
    group = parallel_state.get_data_parallel_group(with_context_parallel=True)
    dist.all_reduce(reported, group=group)
    reported /= dist.get_world_size(group)
    return loss, {LOSS_KEY: reported}


def per_token_loss_func(loss_mask: torch.Tensor, output_tensor: torch.Tensor):
    """(token-loss sum, token count, report) for `calculate_per_token_loss`; the report is the
    `[sum, count]` pair summed over data-parallel ranks."""
    losses = output_tensor.float().reshape(-1)
    mask = loss_mask.float().reshape(-1)
    loss = torch.sum(losses * mask)
    num_tokens = mask.sum().to(torch.int)
    reported = torch.stack([loss.detach().clone(), mask.sum()])
    dist.all_reduce(reported, group=parallel_state.get_data_parallel_group(
        with_context_parallel=True))
    return loss, num_tokens, {LOSS_KEY: reported}


def forward_step(data_iterator, model):
    """One micro-batch through one pipeline stage (megatron-core's forward_step_func contract)."""
    batch = get_batch(data_iterator)
    output = model(batch["tokens"], batch["position_ids"], batch.get("attention_mask"),
                   labels=batch["labels"])
    per_token = get_model_config(model).calculate_per_token_loss
    return output, partial(per_token_loss_func if per_token else loss_func, batch["loss_mask"])


def mean_loss(losses_reduced: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Mean of the reported losses of a global batch: of the micro-batch means, or, for
    `[sum, count]` pairs, total sum over total count."""
    if not losses_reduced:
        return {}
    means = {}
    for key in losses_reduced[0]:
        values = [item[key] for item in losses_reduced]
        if values[0].numel() == 2:
            total = torch.stack(values).sum(dim=0)
            means[key] = float(total[0] / total[1].clamp(min=1.0))
        else:
            means[key] = float(sum(values) / len(values))
    return means
