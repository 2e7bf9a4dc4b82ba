"""Memory per GPU before training starts, as Megatron-LM estimates it.

    from megatron_hope.training.memory import theoretical_memory
    estimate = theoretical_memory(arch, padded_vocab_size=32768, tensor_model_parallel_size=2,
                                  data_parallel_size=4, micro_batch_size=2,
                                  use_distributed_optimizer=True)
    print(estimate.line())   # Megatron-LM's "Theoretical memory footprints: ..." line

`theoretical_memory` transcribes Megatron-LM's `megatron/training/theoretical_memory_usage.py`
(`compute_weight_and_optimizer_memory`, `compute_activation_memory[_without_sp]`,
`report_theoretical_memory`) for a dense GPT: no MoE, no multi-token prediction, no multi-latent
attention. Variable names and operation order follow it, so the float results are the same.
What it models (the most loaded rank, i.e. the first pipeline stage):

    weights + optimizer: parameters on the rank x 18 bytes (bf16 weight 2, fp32 grad 4, fp32
                         main weight 4, Adam moments 8), or 6 + 12 / DP with the distributed
                         optimizer (the fp32 state sharded over data-parallel ranks)
    activations:         Korthikanti et al. 2022 (arXiv 2205.05198) Table 2: with sequence
                         parallelism and selective recompute 34 -> 18 + 4 ffn/h bytes per token
                         and hidden unit per layer, divided by TP; otherwise a 10 + 24/TP
                         variant plus the logits, times 1.05 for temporaries

It ignores full recompute (Megatron-LM's estimate does too): treat the figure as an upper bound
there. Tags: core_v0.19.0 keeps norms replicated across TP ranks (not divided by TP);
core_v0.16.1 divides every parameter by TP. `formula="v0.16"` reproduces the older tag.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from megatron_hope.megatron.model import ModelArchitecture
    from megatron_hope.training.config import PretrainConfig

NUM_BYTES_IN_MEGABYTE = 1024 * 1024
FORMULAS = ("v0.19", "v0.16")


@dataclass(frozen=True)
class MemoryEstimate:
    """Megatron-LM's theoretical footprint of the most loaded rank, in MiB ("MB" in its log)."""

    weight_and_optimizer_mb: float
    activation_mb: float

    @property
    def total_mb(self) -> float:
        return self.weight_and_optimizer_mb + self.activation_mb

    @property
    def total_gib(self) -> float:
        return self.total_mb / 1024

    def line(self) -> str:
        """Megatron-LM's log line, verbatim."""
        return (
            f"Theoretical memory footprints: weight and optimizer="
            f"{self.weight_and_optimizer_mb:.2f} MB, activation={self.activation_mb:.2f} MB, "
            f"total={self.total_mb:.2f} MB"
        )


def weight_and_optimizer_bytes(
    arch: ModelArchitecture, padded_vocab_size: int, tensor_model_parallel_size: int,
    pipeline_model_parallel_size: int, data_parallel_size: int,
    use_distributed_optimizer: bool, formula: str = "v0.19",
) -> float:
    """Bytes of weights, gradients and optimizer state on the most loaded rank."""
    hidden = arch.hidden_size
    tp, pp = tensor_model_parallel_size, pipeline_model_parallel_size
    query_projection_size = arch.head_dim * arch.num_attention_heads
    query_projection_to_hidden_size_ratio = query_projection_size / hidden
    gated_linear_multiplier = 3 / 2 if arch.swiglu else 1
    norm_size = 1 if arch.normalization == "RMSNorm" else 2
    self_attn_term = (
        2 * hidden * hidden
        * ((1 + (arch.query_groups / arch.num_attention_heads))
           * query_projection_to_hidden_size_ratio)
    )
    embedding_size = hidden * padded_vocab_size
    final_layernorm = norm_size * hidden
    num_layers = arch.num_layers
    bytes_per_parameter = 18 if not use_distributed_optimizer else 6 + (12 / data_parallel_size)
    untied_single_stage = arch.untie_embeddings_and_output_weights and pp == 1

    if formula == "v0.16":
        layer = 2 * hidden * ((arch.ffn_size * gated_linear_multiplier) + norm_size)
        layer += self_attn_term
        block = layer * num_layers + final_layernorm
        most_loaded = ((block / pp) + 0 + embedding_size) / tp
        if untied_single_stage:
            most_loaded += embedding_size / tp
        return most_loaded * bytes_per_parameter
    if formula != "v0.19":
        raise ValueError(f"formula {formula!r} is not one of {', '.join(FORMULAS)}")

    dense_mlp_params = 2 * hidden * arch.ffn_size * gated_linear_multiplier
    layernorm_params = 2 * hidden * norm_size
    tp_sharded_in_block = (self_attn_term + dense_mlp_params) * num_layers
    replicated_in_block = layernorm_params * num_layers + final_layernorm
    tp_sharded_on_most_loaded = ((tp_sharded_in_block / pp) + 0 + embedding_size) / tp
    replicated_on_most_loaded = (replicated_in_block / pp) + 0
    if untied_single_stage:
        tp_sharded_on_most_loaded += embedding_size / tp
    return (tp_sharded_on_most_loaded + replicated_on_most_loaded) * bytes_per_parameter


def activation_bytes(
    arch: ModelArchitecture, padded_vocab_size: int, tensor_model_parallel_size: int,
    pipeline_model_parallel_size: int, virtual_pipeline_model_parallel_size: int | None,
    micro_batch_size: int, num_microbatches: int | None, sequence_parallel_selective: bool,
) -> float:
    """Activation bytes of the first pipeline stage at the peak of the schedule."""
    s, b, h = arch.seq_length, micro_batch_size, arch.hidden_size
    tp, pp, vpp = (tensor_model_parallel_size, pipeline_model_parallel_size,
                   virtual_pipeline_model_parallel_size)
    if sequence_parallel_selective:
        memory = (s * b * h) * (18 + (4 * (arch.ffn_size / h)))
    else:
        memory = s * b * h * (10 + (24 / tp))
    memory *= arch.num_layers
    memory += 8 * s * b * pp  # input to embedding (pp micro-batches in flight)
    memory += s * b * h * pp  # embedding dropout
    if vpp is not None:
        memory *= 1 + ((pp - 1) / (pp * vpp))  # interleaved schedule penalty
    if vpp is None and pp > 1 and num_microbatches is not None:
        memory *= min(1, num_microbatches / pp)
    if sequence_parallel_selective:
        if pp == 1:
            memory += s * b * h * 4 * (1 + (padded_vocab_size / h))
        return memory / tp
    if pp == 1:
        logits_size = s * b * padded_vocab_size
        logits_size /= tp
        final_ln_output = s * b * h
        memory += (logits_size + final_ln_output) * 2
    return memory * 1.05


def theoretical_memory(
    arch: ModelArchitecture,
    *,
    padded_vocab_size: int,
    tensor_model_parallel_size: int = 1,
    pipeline_model_parallel_size: int = 1,
    virtual_pipeline_model_parallel_size: int | None = None,
    data_parallel_size: int = 1,
    micro_batch_size: int = 1,
    num_microbatches: int | None = None,
    use_distributed_optimizer: bool = False,
    sequence_parallel: bool = False,
    recompute_granularity: str | None = None,
    formula: str = "v0.19",
) -> MemoryEstimate:
    """Megatron-LM's `report_theoretical_memory` for a dense GPT, in MiB per rank.

    `sequence_parallel` counts only with TP > 1 (Megatron-LM turns it off at TP = 1); the
    smaller activation formula applies only with `recompute_granularity="selective"` too.
    """
    weights = weight_and_optimizer_bytes(
        arch, padded_vocab_size, tensor_model_parallel_size, pipeline_model_parallel_size,
        data_parallel_size, use_distributed_optimizer, formula,
    )
    selective = (sequence_parallel and tensor_model_parallel_size > 1
                 and recompute_granularity == "selective")
    activations = activation_bytes(
        arch, padded_vocab_size, tensor_model_parallel_size, pipeline_model_parallel_size,
        virtual_pipeline_model_parallel_size, micro_batch_size, num_microbatches, selective,
    )
    return MemoryEstimate(weights / NUM_BYTES_IN_MEGABYTE, activations / NUM_BYTES_IN_MEGABYTE)


def megatron_core_formula() -> str:
    """The formula of the Megatron-LM tag that pairs with the installed megatron-core."""
    import megatron.core

    return "v0.16" if megatron.core.__version__.startswith("0.16") else "v0.19"


def estimate_for(config: PretrainConfig, world_size: int, padded_vocab_size: int,
                 **overrides) -> MemoryEstimate:
    """The estimate of a `hope-pretrain` run on `world_size` ranks (the installed megatron-core's
    tag's formula), as printed before its first step; `overrides` replace `theoretical_memory`
    arguments (e.g. `sequence_parallel=True` to size a TE run from a CPU machine)."""
    layout = config.layout(world_size)
    arch = config.arch
    vpp = None
    if config.num_layers_per_virtual_pipeline_stage:
        layers_per_stage = arch.num_layers // config.pipeline_model_parallel_size
        vpp = layers_per_stage // config.num_layers_per_virtual_pipeline_stage
    arguments = dict(
        padded_vocab_size=padded_vocab_size,
        tensor_model_parallel_size=config.tensor_model_parallel_size,
        pipeline_model_parallel_size=config.pipeline_model_parallel_size,
        virtual_pipeline_model_parallel_size=vpp,
        data_parallel_size=layout.data_parallel_size,
        micro_batch_size=config.micro_batch_size,
        num_microbatches=config.num_microbatches(layout),
        use_distributed_optimizer=config.use_distributed_optimizer,
        sequence_parallel=config.sequence_parallel,
        recompute_granularity=config.recompute_granularity,
        formula=megatron_core_formula(),
    ) | overrides
    return theoretical_memory(arch, **arguments)


def device_memory_bytes() -> int:
    """Total memory of this rank's device: the GPU's, or the host's under the CPU shim."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    import psutil

    return psutil.virtual_memory().total


def check_weights_fit(arch: ModelArchitecture, padded_vocab_size: int,
                      tensor_model_parallel_size: int, pipeline_model_parallel_size: int,
                      device_bytes: int | None = None) -> None:
    """ValueError naming the size flags when the most loaded rank's weights alone (2 bytes per
    parameter with --bf16, else 4; no gradient, no optimizer state: a bound no run gets under)
    exceed the device's memory. A typo such as --ffn-hidden-size 10**30 then stops here with
    the flags to fix, not in torch's allocator with an overflow or out-of-memory traceback."""
    per_parameter = 18  # what weight_and_optimizer_bytes charges without the distributed optimizer
    parameters = weight_and_optimizer_bytes(
        arch, padded_vocab_size, tensor_model_parallel_size, pipeline_model_parallel_size,
        data_parallel_size=1, use_distributed_optimizer=False,
    ) / per_parameter
    weight_bytes = parameters * (2 if arch.bf16 else 4)
    device_bytes = device_memory_bytes() if device_bytes is None else device_bytes
    if weight_bytes > device_bytes:
        raise ValueError(
            f"the model's weights alone need {weight_bytes / 2**30:.3g} GiB on the most loaded "
            f"rank (--num-layers {arch.num_layers}, --hidden-size {arch.hidden_size}, "
            f"--ffn-hidden-size {arch.ffn_size}, --num-attention-heads "
            f"{arch.num_attention_heads}, --kv-channels {arch.head_dim}, padded vocabulary "
            f"{padded_vocab_size}), more than this device's {device_bytes / 2**30:.3g} GiB; "
            "shrink the model or split it with --tensor-model-parallel-size / "
            "--pipeline-model-parallel-size"
        )
