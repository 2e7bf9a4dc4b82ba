"""A checkpoint of either loop resumes under the other and continues the losses of an
uninterrupted run of the loop that continues it (the parity tests show both loops' runs equal).

Restored across the loops, in both directions: model, optimizer (regular, and the distributed
optimizer's `dp_reshardable` form, Megatron-LM's default, at the layout that saved it; it
reshards across data-parallel sizes only), scheduler, iteration, data position (consumed
samples: Megatron-LM reads them from the checkpoint's `args`, which `hope-pretrain` now writes)
and RNG states (Megatron-LM's list of `{random, np, torch, cuda, rng_tracker}` states, which
`hope-pretrain` now writes and reads; its older dict form still loads in `hope-pretrain`).
The runs have no dropout, so the losses check everything but the RNG; that the RNG states are
read is checked by loading them (a state Megatron-LM cannot read stops its run).

Not restored: Megatron-LM's `--dist-ckpt-optim-fully-reshardable` form into torch's Adam (no
apex/TE, i.e. on CPU): megatron-core's load copies a per-parameter `step` that form does not
hold (KeyError 'step', in 0.16.1 and 0.19.2 alike); `hope-pretrain` says so and names
`--no-load-optim` (`tests/training/test_megatron_lm_checkpoint.py`). Megatron-LM's rerun-state
machine and `num_floating_point_operations_so_far` are not written by `hope-pretrain`
(Megatron-LM starts them anew).
"""

from __future__ import annotations

import pytest

from tests.integrations import megatron_lm_runs as runs
from tests.integrations.conftest import RESUME_AT

pytestmark = pytest.mark.megatron_lm

CONTINUED = list(range(RESUME_AT + 1, runs.TRAIN_ITERS + 1))


def assert_continues(losses: dict[int, float], uninterrupted: dict[int, float]) -> None:
    assert sorted(losses) == CONTINUED
    expected = {iteration: uninterrupted[iteration] for iteration in CONTINUED}
    assert runs.max_relative_difference(losses, expected) < 1e-6, (losses, expected)


def test_megatron_lm_checkpoint_resumes_under_hope_pretrain(flags, megatron_lm_run, hope_run,
                                                            tmp_path):
    load = runs.checkpoint_at(megatron_lm_run["save"], RESUME_AT, tmp_path / "load")
    resumed = runs.run_hope_pretrain([*flags, "--load", str(load)])
    print(f"hope-pretrain from Megatron-LM's iteration {RESUME_AT}: {resumed['train']}")
    assert_continues(resumed["train"], hope_run["train"])


def test_megatron_lm_distributed_optimizer_resumes_under_hope_pretrain(
        flags, megatron_lm_tp2_run, hope_run, tmp_path):
    """Megatron-LM's distributed-optimizer checkpoint at TP=2, continued at TP=2."""
    load = runs.checkpoint_at(megatron_lm_tp2_run["save"], RESUME_AT, tmp_path / "load")
    resumed = runs.run_hope_pretrain(
        [*flags, "--load", str(load), "--tensor-model-parallel-size", "2",
         "--use-distributed-optimizer"], ranks=2)
    print(f"hope-pretrain TP=2 from Megatron-LM's iteration {RESUME_AT}: {resumed['train']}")
    assert_continues(resumed["train"], hope_run["train"])


def test_hope_pretrain_checkpoint_resumes_under_megatron_lm(
        megatron_lm_folder, flags, initial_checkpoint, megatron_lm_run, tmp_path):
    """`hope-pretrain`'s distributed-optimizer checkpoint, continued by Megatron-LM's loop
    (its load of torch Adam's state on CPU is the CPU module's L7)."""
    distributed = [*flags, "--use-distributed-optimizer"]
    save = tmp_path / "hope"
    runs.run_hope_pretrain([*distributed, *runs.from_checkpoint(initial_checkpoint),
                            "--save", str(save), "--exit-interval", str(RESUME_AT)])
    resumed = runs.run_megatron_lm(megatron_lm_folder, [*distributed, "--load", str(save)],
                                   tmp_path / "megatron_lm")
    print(f"Megatron-LM from hope-pretrain's iteration {RESUME_AT}: {resumed['losses']}")
    output = resumed["output"]
    assert "could not find arguments in the checkpoint" not in output
    assert "Unable to load" not in output
    assert f"consumed samples: {4 * (RESUME_AT + 1):12d}" in output  # the data continued
    assert_continues(resumed["losses"], megatron_lm_run["losses"])
