"""Checks of the memory, overlap, long-context and cluster flags of `PretrainConfig`.

Each rule is Megatron-LM's (`arguments.py: validate_args`) or megatron-core's
(`TransformerConfig.__post_init__`), raised before any process group starts, with the flag and
the fix in the message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from megatron_hope.training.config import PretrainConfig

RECOMPUTE_GRANULARITIES = ("full", "selective")
RECOMPUTE_METHODS = ("uniform", "block")
CP_COMM_TYPES = ("p2p", "a2a", "allgather", "a2a+p2p")
ATTENTION_BACKENDS = ("auto", "flash", "fused", "unfused", "local")
TE_ATTENTION_BACKENDS = ("flash", "fused", "unfused")
"""Backends that select one of Transformer Engine's attention kernels (megatron-core sets TE's
NVTE_*_ATTN variables from them)."""


def check_features(config: PretrainConfig) -> None:
    """Raise ValueError naming the flag at fault; see each field's docstring for its meaning."""
    _check_recompute(config)
    _check_overlap(config)
    _check_long_context(config)
    _check_run_control(config)
    te = config.arch.transformer_impl == "transformer_engine"
    if config.sequence_parallel and config.tensor_model_parallel_size > 1 and not te:
        raise ValueError(
            "--sequence-parallel needs Transformer Engine's layers (torch LayerNorm cannot shard "
            "over the sequence); add --transformer-impl transformer_engine in the GPU image, or "
            "drop --sequence-parallel"
        )
    if config.attention_backend not in ATTENTION_BACKENDS:
        raise ValueError(f"--attention-backend {config.attention_backend!r} is not one of "
                         f"{', '.join(ATTENTION_BACKENDS)}")
    if config.attention_backend in TE_ATTENTION_BACKENDS and not te:
        raise ValueError(
            f"--attention-backend {config.attention_backend} selects a Transformer Engine "
            "kernel; add --transformer-impl transformer_engine, or use auto"
        )
    if config.attention_backend == "local" and te:
        raise ValueError(
            "--attention-backend local turns off every Transformer Engine attention kernel, "
            "which the transformer_engine spec's attention needs; use flash, fused or auto"
        )
    if config.fp8_param_gather and (config.arch.fp8_format is None
                                    or not config.use_distributed_optimizer):
        raise ValueError(
            "--fp8-param-gather keeps FP8 weights and gathers them through the distributed "
            "optimizer: add --fp8-format (Transformer Engine) and --use-distributed-optimizer, "
            "or drop --fp8-param-gather"
        )


def _check_recompute(config: PretrainConfig) -> None:
    granularity, method = config.recompute_granularity, config.recompute_method
    if granularity not in (None, *RECOMPUTE_GRANULARITIES):
        raise ValueError(f"--recompute-granularity {granularity!r} is not one of "
                         f"{', '.join(RECOMPUTE_GRANULARITIES)}")
    if method not in (None, *RECOMPUTE_METHODS):
        raise ValueError(f"--recompute-method {method!r} is not one of "
                         f"{', '.join(RECOMPUTE_METHODS)}")
    if granularity == "full" and (method is None or config.recompute_num_layers is None):
        raise ValueError(
            "--recompute-granularity full needs --recompute-method {uniform,block} and "
            "--recompute-num-layers N (e.g. uniform 1: recompute every layer)"
        )
    if granularity != "full" and (method is not None or config.recompute_num_layers is not None):
        raise ValueError(
            "--recompute-method and --recompute-num-layers apply to --recompute-granularity "
            "full only; drop them or use full"
        )
    if config.recompute_num_layers is not None:
        layers_per_stage = config.arch.num_layers // config.pipeline_model_parallel_size
        if not 1 <= config.recompute_num_layers <= layers_per_stage:
            raise ValueError(
                f"--recompute-num-layers ({config.recompute_num_layers}) must lie in [1, "
                f"{layers_per_stage}] (layers per pipeline stage)"
            )


def _check_overlap(config: PretrainConfig) -> None:
    if config.overlap_param_gather and not (
        config.use_distributed_optimizer and config.overlap_grad_reduce
    ):
        raise ValueError(
            "--overlap-param-gather needs --use-distributed-optimizer and --overlap-grad-reduce "
            "(as in Megatron-LM); add both"
        )
    if config.ddp_bucket_size is not None and config.ddp_bucket_size < 1:
        raise ValueError(f"--ddp-bucket-size must be positive, got {config.ddp_bucket_size}")


def _check_long_context(config: PretrainConfig) -> None:
    if config.cp_comm_type not in CP_COMM_TYPES:
        raise ValueError(f"--cp-comm-type {config.cp_comm_type!r} is not one of "
                         f"{', '.join(CP_COMM_TYPES)}")
    cp = config.context_parallel_size
    if cp < 1:
        raise ValueError(f"--context-parallel-size must be at least 1, got {cp}")
    if cp > 1 and config.arch.transformer_impl != "transformer_engine":
        raise ValueError(
            f"--context-parallel-size {cp} needs Transformer Engine's attention (megatron-core's "
            "local attention has no context parallelism): add --transformer-impl "
            "transformer_engine in the GPU image, or use 1")
    if cp > 1 and config.arch.seq_length % (2 * cp):
        raise ValueError(
            f"--seq-length ({config.arch.seq_length}) must be divisible by 2 x "
            f"--context-parallel-size ({2 * cp}): each rank holds two load-balanced chunks")
    per_virtual_stage = config.num_layers_per_virtual_pipeline_stage
    if per_virtual_stage is not None:
        pp = config.pipeline_model_parallel_size
        per_stage = config.arch.num_layers // pp
        if pp < 2:
            raise ValueError(
                "--num-layers-per-virtual-pipeline-stage interleaves the stages of a pipeline: "
                "add --pipeline-model-parallel-size 2 or more, or drop it")
        if per_virtual_stage < 1 or per_stage % per_virtual_stage:
            raise ValueError(
                f"--num-layers-per-virtual-pipeline-stage ({per_virtual_stage}) must divide the "
                f"layers per pipeline stage (--num-layers {config.arch.num_layers} / "
                f"--pipeline-model-parallel-size {pp} = {per_stage})")
    if config.reset_attention_mask and config.arch.transformer_impl == "transformer_engine":
        raise ValueError(
            "--reset-attention-mask passes a [b, 1, s, s] mask, which the Transformer Engine "
            "spec's causal attention ignores; use --transformer-impl local, or drop the flag"
        )


def _check_run_control(config: PretrainConfig) -> None:
    positive = ("train_samples", "exit_duration_in_mins", "peak_tflops")
    for name in positive:
        value = getattr(config, name)
        if value is not None and value <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {value}")
    if config.distributed_timeout_minutes < 1:
        raise ValueError("--distributed-timeout-minutes must be at least 1, got "
                         f"{config.distributed_timeout_minutes}")
    if config.manual_gc_interval < 0:
        raise ValueError(f"--manual-gc-interval must be >= 0, got {config.manual_gc_interval}")
    if config.mock_data and config.data_path is not None:
        raise ValueError("--mock-data trains on random tokens: drop --data-path, or --mock-data")
    if config.async_save and config.save is None:
        raise ValueError("--async-save writes the checkpoints of --save DIR: add --save")
