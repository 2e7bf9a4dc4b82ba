"""The memory, overlap, long-context and reporting flags: parsed under Megatron-LM's names,
checked before any process starts, and the throughput figures they print.

    python -m pytest -q tests/training/test_feature_flags.py
"""

from __future__ import annotations

import re

import pytest

from megatron_hope.training.arguments import parse_config
from megatron_hope.training.flops import num_floating_point_operations
from megatron_hope.training.megatron_configs import ddp_config, transformer_overrides
from megatron_hope.training.throughput import ThroughputMeter


def test_flags_reach_megatron_core_configs():
    config = parse_config([
        "--recompute-granularity", "full", "--recompute-method", "block",
        "--recompute-num-layers", "2", "--use-distributed-optimizer", "--overlap-grad-reduce",
        "--overlap-param-gather", "--ddp-bucket-size", "1000000", "--calculate-per-token-loss",
        "--check-for-nan-in-loss-and-grad", "--sequence-parallel",  # TP 1: off, as upstream
    ])
    overrides = transformer_overrides(config)
    assert overrides == {"recompute_granularity": "full", "recompute_method": "block",
                         "recompute_num_layers": 2, "sequence_parallel": False,
                         "calculate_per_token_loss": True}
    ddp = ddp_config(config)
    # megatron-core's own NaN check stays off: it would raise before training.numerics skips.
    assert (ddp.overlap_grad_reduce, ddp.overlap_param_gather, ddp.use_distributed_optimizer,
            ddp.bucket_size, ddp.check_for_nan_in_grad) == (True, True, True, 1000000, False)
    assert config.check_for_nan_in_loss_and_grad


def test_attention_backend_reaches_the_transformer_config():
    """Megatron-LM's --attention-backend; auto stays megatron-core's default (no override)."""
    from megatron.core.transformer.enums import AttnBackend

    assert "attention_backend" not in transformer_overrides(parse_config([]))
    local = transformer_overrides(parse_config(["--attention-backend", "local"]))
    assert local["attention_backend"] == AttnBackend.local


@pytest.mark.parametrize("argv, message", [
    (["--tensor-model-parallel-size", "2", "--sequence-parallel"],
     "--sequence-parallel needs Transformer Engine"),
    (["--overlap-param-gather"], "--overlap-param-gather needs --use-distributed-optimizer"),
    (["--recompute-granularity", "full"], "needs --recompute-method"),
    (["--recompute-method", "uniform"], "apply to --recompute-granularity full only"),
    (["--recompute-granularity", "full", "--recompute-method", "uniform",
      "--recompute-num-layers", "9"], r"must lie in \[1, 4\]"),
    (["--context-parallel-size", "2"], "--context-parallel-size 2 needs Transformer Engine"),
    (["--num-layers-per-virtual-pipeline-stage", "1"],
     "interleaves the stages of a pipeline: add --pipeline-model-parallel-size"),
    (["--pipeline-model-parallel-size", "2", "--num-layers-per-virtual-pipeline-stage", "3"],
     r"must divide the layers per pipeline stage \(--num-layers 4 / "),
    (["--fp8-param-gather"], "--fp8-param-gather keeps FP8 weights"),
    (["--mock-data", "--data-path", "x"], "--mock-data trains on random tokens"),
    (["--async-save"], "--async-save writes the checkpoints of --save DIR"),
    (["--train-samples", "0"], "--train-samples must be positive"),
    (["--distributed-timeout-minutes", "0"], "--distributed-timeout-minutes must be at least 1"),
    (["--attention-backend", "fused"], "--attention-backend fused selects a Transformer Engine"),
    (["--attention-backend", "sdpa"], "invalid choice: 'sdpa'"),
])
def test_bad_combinations_name_the_flag_and_the_fix(argv, message, capsys):
    with pytest.raises(SystemExit):
        parse_config(argv)
    assert re.search(message, capsys.readouterr().err)


def test_throughput_is_megatron_lm_tflops_per_gpu_and_mfu():
    config = parse_config(["--swiglu", "--seq-length", "512"])
    meter = ThroughputMeter(config.arch, 64, 4096, world_size=8, peak_tflops=100.0)
    flops = num_floating_point_operations(config.arch, 64, 4096)
    achieved, utilisation = meter.figures(0.5)
    assert achieved == flops / (0.5 * 10**12 * 8)
    assert utilisation == achieved / 100.0
    fields = ThroughputMeter.log_fields(123.456, 0.4321)
    assert fields == " throughput per GPU (TFLOP/s/GPU): 123.5 | MFU: 43.2% |"
    assert ThroughputMeter.log_fields(1.0, None) == " throughput per GPU (TFLOP/s/GPU): 1.0 |"


def test_interleaving_needs_a_micro_batch_per_pipeline_stage():
    config = parse_config(["--num-layers", "4", "--pipeline-model-parallel-size", "2",
                           "--num-layers-per-virtual-pipeline-stage", "1",
                           "--micro-batch-size", "2", "--global-batch-size", "2"])
    assert config.virtual_pipeline_model_parallel_size == 2
    with pytest.raises(ValueError, match="at least --pipeline-model-parallel-size \\(2\\) micro"):
        config.layout(world_size=2)
    assert parse_config(["--num-layers", "4", "--pipeline-model-parallel-size", "2",
                         "--num-layers-per-virtual-pipeline-stage", "2"]
                        ).virtual_pipeline_model_parallel_size is None  # one chunk: plain 1F1B
