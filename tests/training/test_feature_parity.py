"""The memory, overlap and numerics flags change how a step is computed, not what it computes:
from one initial checkpoint they give the plain run's losses. And the cluster flags (mock data,
--train-samples, --exit-duration-in-mins, --manual-gc, packed documents) run on CPU.

    python -m pytest -q tests/training/test_feature_parity.py
"""

from __future__ import annotations

import math

import pytest

from tests.distributed import run_on_ranks
from tests.training import test_parallel_parity as parity
from tests.training.test_parallel_parity import RTOL, _pretrain, from_initial, last_stage_losses

# The plain run's fixtures: sample data, one initial checkpoint, the single-process losses.
data = parity.data
initial_checkpoint = parity.initial_checkpoint
baseline = parity.baseline

pytestmark = pytest.mark.distributed


@pytest.mark.parametrize(
    "flags",
    [
        {"recompute_granularity": "selective", "calculate_per_token_loss": True,
         "overlap_grad_reduce": True, "ddp_bucket_size": 4000},
        {"recompute_granularity": "full", "recompute_method": "uniform",
         "recompute_num_layers": 1, "use_distributed_optimizer": True,
         "overlap_grad_reduce": True, "overlap_param_gather": True, "ddp_bucket_size": 4000},
    ],
    ids=["dp2-selective-per-token-overlap-grad-reduce", "dp2-full-distopt-overlap-param-gather"],
)
def test_flags_give_the_baseline_losses(data, initial_checkpoint, baseline, flags):
    """Two ranks (DP=2), several flags per run to keep the suite short. Per-token loss equals
    the micro-batch mean here: every sample has all its tokens. Small buckets make the overlap
    issue several reductions (and gathers) per step."""
    per_rank = run_on_ranks(2, _pretrain, data, from_initial(initial_checkpoint, **flags))
    losses = last_stage_losses(per_rank)
    assert sorted(losses) == sorted(baseline["train"])
    for iteration, expected in baseline["train"].items():
        assert losses[iteration] == pytest.approx(expected, rel=RTOL), iteration
    validation = per_rank[0]["validation"]
    for iteration, expected in baseline["validation"].items():
        assert validation[iteration] == pytest.approx(expected, rel=RTOL), iteration


def test_mock_data_train_samples_manual_gc_and_throughput(data):
    changes = {"data_path": None, "mock_data": True, "tokenizer_type": "NullTokenizer",
               "tokenizer_model": None, "tokenizer_vocab_size": 600, "train_samples": 12,
               "eval_iters": 0, "manual_gc": True, "manual_gc_interval": 1,
               "log_throughput": True, "peak_tflops": 1.0}
    [result] = run_on_ranks(1, _pretrain, data, changes)
    assert result["final_iteration"] == 3  # 12 samples / global batch 4
    assert all(math.isfinite(loss) for loss in result["train"].values())


def test_exit_duration_saves_and_stops_with_packed_documents(data, tmp_path):
    save = str(tmp_path / "ckpt")
    changes = {"exit_duration_in_mins": 1e-6, "save": save, "eval_iters": 0,
               "reset_position_ids": True, "reset_attention_mask": True, "eod_mask_loss": True}
    [result] = run_on_ranks(1, _pretrain, data, changes)
    assert result["final_iteration"] == 1
    assert result["checkpoint"] and result["checkpoint"].startswith(save)
    assert math.isfinite(result["train"][1])


def _pretrain_4_layers(rank, data, changes):
    import dataclasses

    from megatron_hope.training.cli import run

    config = parity.tiny_config(data, **changes)
    config = config.replace(arch=dataclasses.replace(config.arch, num_layers=4))
    _, result = run(config)
    return {"train": result.train_losses, "final_iteration": result.final_iteration}


def test_virtual_pipeline_gives_the_baseline_losses_and_resumes(data, tmp_path):
    """Interleaved 1F1B: a 4-layer model at PP=2 with one layer per virtual stage, so rank 0
    holds layers 1 and 3 and rank 1 layers 2 and 4. From the single process's initial
    checkpoint it gives the single process's losses, and it resumes from its own checkpoint
    (saved as model0/model1, Megatron-LM's layout for chunks)."""
    initial = str(tmp_path / "init")
    run_on_ranks(1, _pretrain_4_layers, data, {"train_iters": 0, "save": initial})
    [single] = run_on_ranks(1, _pretrain_4_layers, data, from_initial(initial))
    layout = {"pipeline_model_parallel_size": 2, "num_layers_per_virtual_pipeline_stage": 1}
    save = str(tmp_path / "vpp")
    first = last_stage_losses(run_on_ranks(2, _pretrain_4_layers, data, from_initial(
        initial, save=save, exit_interval=3, **layout)))
    resumed = last_stage_losses(run_on_ranks(2, _pretrain_4_layers, data,
                                             {"load": save, "save": save, **layout}))
    assert sorted(first) == [1, 2, 3] and sorted(resumed) == [4, 5]
    for iteration, expected in single["train"].items():
        got = first.get(iteration, resumed.get(iteration))
        assert got == pytest.approx(expected, rel=RTOL), iteration
    # Evaluation and export read the chunked checkpoint as one single-process model.
    [loaded] = run_on_ranks(1, parity._loaded_model_loss, data, save)
    assert loaded["iteration"] == 5 and math.isfinite(loaded["loss"])
