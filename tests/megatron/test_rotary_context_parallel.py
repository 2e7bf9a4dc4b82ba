"""Context parallelism: each CP rank's slice of HoPE's rotary embedding, zero-frequency pairs
included, is what Megatron's load-balanced layout gives that rank.

With CP size c the sequence is cut into 2c chunks and rank r holds chunks r and 2c-1-r (so that
causal attention costs every rank the same). The expected angles are written from the paper's
eq. 6 and that rule alone; the slicing under test is upstream's, inherited by
`HopeRotaryEmbedding`, run on a real 2-rank gloo group.
"""

from __future__ import annotations

import math

import pytest

from tests.distributed import run_on_ranks

pytestmark = pytest.mark.distributed

D, BASE, TRAIN_LENGTH, SEQ = 64, 10000.0, 512, 96


def eq6_angles(positions: list[int]) -> list[list[float]]:
    """[position][dim] angles in megatron-core's layout: the d/2 pair frequencies, twice."""
    theta = [BASE ** (-2.0 * i / D) for i in range(D // 2)]
    theta = [t if t >= 2 * math.pi / TRAIN_LENGTH else 0.0 for t in theta]
    return [[p * t for t in theta + theta] for p in positions]


def load_balanced_positions(rank: int, cp_size: int, seq: int) -> list[int]:
    chunk = seq // (2 * cp_size)
    first, second = rank, 2 * cp_size - 1 - rank
    return ([first * chunk + i for i in range(chunk)]
            + [second * chunk + i for i in range(chunk)])


def _angles_on_this_cp_rank(rank: int) -> list[list[float]]:
    import torch
    import torch.distributed as dist

    from megatron_hope.megatron.rotary import HopeRotaryEmbedding
    from megatron_hope.rope.config import PositionEncodingConfig

    group = dist.new_group(ranks=[0, 1])
    rotary = HopeRotaryEmbedding(PositionEncodingConfig("hope", D, BASE, TRAIN_LENGTH),
                                 use_cpu_initialization=True, cp_group=group)
    emb = rotary(SEQ)  # [s / cp, 1, 1, d] on the device
    assert emb.shape == (SEQ // 2, 1, 1, D)
    return emb.view(SEQ // 2, D).to(torch.float64).cpu().tolist()


def test_each_cp_rank_holds_its_load_balanced_chunks_of_eq6():
    per_rank = run_on_ranks(2, _angles_on_this_cp_rank)
    for rank, angles in enumerate(per_rank):
        expected = eq6_angles(load_balanced_positions(rank, 2, SEQ))
        assert len(angles) == len(expected)
        for got_row, want_row in zip(angles, expected, strict=True):
            assert got_row == pytest.approx(want_row, rel=1e-6, abs=1e-6)
    # The 18 position-independent pairs (θ_i < 2π/512 for i >= 16) stay at angle 0 everywhere.
    assert all(row[16:32] == [0.0] * 16 and row[48:] == [0.0] * 16
               for angles in per_rank for row in angles)
