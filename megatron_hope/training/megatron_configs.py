"""megatron-core's own configs from `PretrainConfig`, as Megatron-LM's `training.py` builds them.

`transformer_overrides` feeds `build_transformer_config`; `ddp_config` and `optimizer_config`
feed `DistributedDataParallel` and `get_megatron_optimizer`; `wire_overlap` sets the schedule's
hooks for overlapped gradient reduction and parameter gathering (Megatron-LM's `train()`).
"""

from __future__ import annotations

import torch
from megatron.core.distributed import DistributedDataParallelConfig
from megatron.core.distributed.finalize_model_grads import finalize_model_grads
from megatron.core.optimizer import OptimizerConfig
from megatron.core.transformer.enums import AttnBackend

from megatron_hope.training.config import PretrainConfig


def transformer_overrides(config: PretrainConfig) -> dict:
    """TransformerConfig fields set by the memory and numerics flags."""
    overrides = {
        "recompute_granularity": config.recompute_granularity,
        "recompute_method": config.recompute_method,
        "recompute_num_layers": config.recompute_num_layers,
        # Megatron-LM turns sequence parallelism off at TP 1: nothing to shard over.
        "sequence_parallel": config.sequence_parallel and config.tensor_model_parallel_size > 1,
        "calculate_per_token_loss": config.calculate_per_token_loss,
    }
    if config.attention_backend != "auto":  # megatron-core's default
        overrides["attention_backend"] = AttnBackend[config.attention_backend]
    if config.fp8_param_gather:
        overrides["fp8_param"] = True
    if config.context_parallel_size > 1:
        overrides["cp_comm_type"] = config.cp_comm_type
    if config.virtual_pipeline_model_parallel_size:
        # Megatron-LM's defaults for the interleaved schedule: the p2p exchange overlaps compute
        # (what lets PP=2 interleave at all), which excludes batching the sends.
        overrides.update(
            virtual_pipeline_model_parallel_size=config.virtual_pipeline_model_parallel_size,
            overlap_p2p_comm=True, batch_p2p_comm=False)
    return overrides


def ddp_config(config: PretrainConfig) -> DistributedDataParallelConfig:
    return DistributedDataParallelConfig(
        grad_reduce_in_fp32=True,
        overlap_grad_reduce=config.overlap_grad_reduce,
        overlap_param_gather=config.overlap_param_gather,
        use_distributed_optimizer=config.use_distributed_optimizer,
        # Off: megatron-core's DDP check raises on a NaN gradient, before `training.numerics`
        # can apply the documented policy (skip the update, count it, stop after N in a row).
        check_for_nan_in_grad=False,
        bucket_size=config.ddp_bucket_size,
        fp8_param_gather=config.fp8_param_gather,
    )


def optimizer_config(config: PretrainConfig) -> OptimizerConfig:
    bf16 = config.arch.bf16
    return OptimizerConfig(
        optimizer="adam",
        lr=config.lr,
        min_lr=config.min_lr,
        weight_decay=config.weight_decay,
        adam_beta1=config.adam_beta1,
        adam_beta2=config.adam_beta2,
        adam_eps=config.adam_eps,
        clip_grad=config.clip_grad,
        bf16=bf16,
        params_dtype=torch.bfloat16 if bf16 else torch.float32,
        use_distributed_optimizer=config.use_distributed_optimizer,
    )


def _one_or_list(functions: list):
    return functions[0] if len(functions) == 1 else functions


def wire_overlap(model_config, model_chunks, optimizer, config: PretrainConfig) -> None:
    """The schedule's hooks, as Megatron-LM sets them (align_grad_reduce on, align_param_gather
    off: the forward pre-hooks of megatron-core's DDP then issue each bucket's all-gather)."""
    model_config.grad_scale_func = optimizer.scale_loss
    model_config.finalize_model_grads_func = finalize_model_grads
    if config.overlap_grad_reduce:
        model_config.no_sync_func = _one_or_list([chunk.no_sync for chunk in model_chunks])
        model_config.grad_sync_func = _one_or_list(
            [chunk.start_grad_sync for chunk in model_chunks])


def force_param_sync(model_chunks, config: PretrainConfig) -> None:
    """With --overlap-param-gather the last step's all-gather is still pending: finish it before
    reading the weights (evaluation, checkpoints), as Megatron-LM's `force_param_sync`."""
    if config.overlap_param_gather:
        for chunk in model_chunks:
            chunk.start_param_sync(force_sync=True)
