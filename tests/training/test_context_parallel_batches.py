"""Context parallelism, the parts of hope-pretrain that run without Transformer Engine: each CP
rank's micro-batch is its two load-balanced chunks of every sequence, and the reported loss is
the mean over the whole sequence (the attention itself needs TE: a `gpu` test's business).
"""

from __future__ import annotations

import pytest

from tests.distributed import run_on_ranks
from tests.megatron.test_rotary_context_parallel import load_balanced_positions

pytestmark = pytest.mark.distributed

SEQ, BATCH = 16, 2


def _cp_rank_batch(rank):
    import torch

    from megatron_hope.training.data import get_batch
    from megatron_hope.training.distributed import initialize_distributed
    from megatron_hope.training.step import LOSS_KEY, loss_func

    initialize_distributed(context_parallel_size=2)
    tokens = torch.arange(BATCH * SEQ).view(BATCH, SEQ)
    batch = get_batch(iter([{"tokens": tokens, "labels": tokens + 1000,
                             "loss_mask": torch.ones(BATCH, SEQ),
                             "position_ids": torch.arange(SEQ).expand(BATCH, SEQ)}]))
    # Per-token "losses" t^2 (t: the token value): the two ranks' own means differ, the mean
    # over every token of the batch is known exactly.
    _, report = loss_func(batch["loss_mask"], batch["tokens"].float() ** 2)
    return {key: value.cpu().tolist() for key, value in batch.items()} | {
        "reported": float(report[LOSS_KEY])}


def test_each_cp_rank_gets_its_chunks_and_the_loss_is_the_sequence_mean():
    per_rank = run_on_ranks(2, _cp_rank_batch)
    for rank, batch in enumerate(per_rank):
        positions = load_balanced_positions(rank, 2, SEQ)
        assert batch["position_ids"] == [positions] * BATCH
        assert batch["tokens"] == [[row * SEQ + p for p in positions] for row in range(BATCH)]
        assert batch["labels"] == [[row * SEQ + p + 1000 for p in positions]
                                   for row in range(BATCH)]
        n = BATCH * SEQ
        assert batch["reported"] == pytest.approx((n - 1) * (2 * n - 1) / 6)
