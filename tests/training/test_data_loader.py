"""The pretraining DataLoader draws Megatron-LM's sample order and resumes exactly.

Micro-batch k of data-parallel rank r after `consumed` samples holds the indices
`consumed + k*mbs*dp + r*mbs ... + mbs` (Megatron-LM's `MegatronPretrainingSampler`): a global
batch is the same contiguous block of samples at every data-parallel size.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from megatron_hope.training.data import PretrainingBatchSampler, build_data_loader

DATASET_SIZE = 50


class IndexDataset:
    """Sample i is i, in every field the loader collates."""

    def __len__(self) -> int:
        return DATASET_SIZE

    def __getitem__(self, index: int) -> dict:
        row = np.full(4, index, dtype=np.int64)
        return {"tokens": row, "labels": row, "loss_mask": row.astype(np.float32),
                "position_ids": row}


def megatron_order(consumed: int, mbs: int, rank: int, dp: int, count: int) -> list[list[int]]:
    """Megatron-LM's formula, written out independently of the sampler."""
    return [[(consumed + k * mbs * dp + rank * mbs + j) % DATASET_SIZE for j in range(mbs)]
            for k in range(count)]


@pytest.mark.parametrize("consumed,mbs,dp", [(0, 2, 1), (6, 2, 2), (12, 3, 4), (47, 2, 2)])
def test_sampler_draws_megatron_lm_order(consumed, mbs, dp):
    for rank in range(dp):
        sampler = PretrainingBatchSampler(DATASET_SIZE, consumed, mbs, rank, dp)
        assert list(itertools.islice(sampler, 7)) == megatron_order(consumed, mbs, rank, dp, 7)


def test_a_global_batch_is_one_contiguous_block_at_every_dp_size():
    step_of = {}
    for dp in (1, 2, 4):
        per_rank = [list(itertools.islice(PretrainingBatchSampler(DATASET_SIZE, 8, 2, r, dp),
                                          4 // dp)) for r in range(dp)]
        step_of[dp] = sorted(i for batches in per_rank for batch in batches for i in batch)
    assert step_of[1] == step_of[2] == step_of[4] == list(range(8, 16))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_loader_yields_the_sampler_order_and_resumes_at_consumed_samples(num_workers):
    def tokens(consumed: int, count: int) -> list[list[int]]:
        loader = build_data_loader(IndexDataset(), consumed, 2, 1, 2, num_workers)
        return [batch["tokens"][:, 0].tolist() for batch in itertools.islice(loader, count)]

    uninterrupted = tokens(0, 6)
    assert uninterrupted == megatron_order(0, 2, 1, 2, 6)
    # A run stopped after 2 steps of 4 samples resumes at consumed_samples = 8.
    assert tokens(8, 4) == uninterrupted[2:]


def test_sampler_refuses_a_bad_rank():
    with pytest.raises(ValueError, match="data-parallel rank 2"):
        PretrainingBatchSampler(DATASET_SIZE, 0, 2, 2, 2)


def test_workers_outlive_the_exit_signal_so_the_rank_can_save():
    """Slurm signals every process of a step, DataLoader workers included. Under fork the
    workers inherit the rank's handler, but under spawn/forkserver (Python 3.14's default) they
    would die of the signal and the rank's next batch would raise before it could save."""
    import multiprocessing
    import os
    import signal
    import time

    loader = build_data_loader(IndexDataset(), 0, 2, 0, 1, 1, exit_signal="SIGUSR1")
    loader.multiprocessing_context = multiprocessing.get_context("spawn")
    batches = iter(loader)
    next(batches)
    [worker] = batches._workers
    os.kill(worker.pid, signal.SIGUSR1)
    time.sleep(0.5)
    assert worker.is_alive()
    assert len(list(itertools.islice(batches, 3))) == 3


@pytest.mark.parametrize("weighted", [True, False])
def test_a_blend_with_unused_splits_builds_only_the_used_ones(weighted, tmp_path,
                                                          single_rank_megatron):
    """`hope-preprocess` writes weighted blends (`W1 PREFIX1 W2 PREFIX2`); megatron-core refuses a
    weighted blend whose unused split has no size, and loops on one without documents."""
    from megatron_hope.data.tokenizer import HopeTokenizer
    from megatron_hope.training.data import DatasetSizes, build_gpt_datasets
    from tests.synthetic_corpus import prepare_golden_data

    data = prepare_golden_data(tmp_path, num_documents=200)
    blend = [data["prefix"], data["prefix"]]
    data_path = ["0.7", blend[0], "0.3", blend[1]] if weighted else blend
    train, validation, test = build_gpt_datasets(
        data_path, "969,30,1", DatasetSizes(train=16, validation=0, test=0), 32,
        HopeTokenizer(data["tokenizer"]), seed=1234, cache_path=str(tmp_path / "cache"))
    assert len(train) >= 16 and validation is None and test is None
