"""Model FLOPs of a dense GPT step, counted as Megatron-LM counts them, and MFU.

    from megatron_hope.training.flops import (
        num_floating_point_operations, peak_bf16_tflops, mfu, tflops_per_gpu)

    flops = num_floating_point_operations(arch, global_batch_size, padded_vocab_size=50304)
    achieved = tflops_per_gpu(flops, seconds_per_iteration, world_size=8)
    print(achieved, mfu(achieved, peak_bf16_tflops(torch.cuda.get_device_name())))

`num_floating_point_operations` transcribes Megatron-LM's function of the same name
(`megatron/training/training.py`) for the case this project trains: a dense GPT, no MoE, no
multi-latent or linear attention, no hybrid (Mamba) layers, no multi-token prediction, no
attention output gate. What it counts (forward + backward = 3x every GEMM, 2 FLOPs per FMA):

    per token:  6 * h * (q + 2k)      QKV projection     (q = kv_channels * heads,
              + 6 * q * h             output projection   k = kv_channels * query groups)
              + 6 * h * ffn * (3 if swiglu else 2)       MLP
              + 6 * h * vocab / layers                   logits (once, not per layer)
    per layer and sequence of length s:
                6 * q * s^2           QK^T and softmax(QK^T)V, each 2 * s^2 * q, halved by the
                                      causal mask

Norms, softmax, rotary, residuals and the loss are not counted (they are not GEMMs), so HoPE
and RoPE models of the same shape have the same FLOPs: any time difference is overhead.

Tags: `core_v0.16.1` folds the s^2 term into the per-token attention term
(`+ q * seq_length / 2 * 2`); `core_v0.19.0` splits it out as `sum_i L_i^2 * 6 * q` so packed (THD)
batches can count their real sub-sequence lengths. For full-length, unpacked samples (sum L_i^2 =
batch * s^2, sum L_i = batch * s) the two give the same number; `formula="v0.16"` reproduces the
older tag's arithmetic order and refuses the packed-batch arguments. Both are checked against
Megatron-LM's own function in tests/training/test_flops.py.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from megatron_hope.megatron.model import ModelArchitecture

FORMULAS = ("v0.19", "v0.16")

# Dense (no 2:4 sparsity) BF16 tensor-core peaks in TFLOP/s, from NVIDIA's datasheets, whose
# headline figures are "with sparsity" (twice these). Keys are tokens of
# `torch.cuda.get_device_name()`, which reads e.g. "NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe",
# "NVIDIA A100-SXM4-80GB", "NVIDIA GH200 480GB". Order matters: the first row whose tokens all
# appear wins, so the PCIe/NVL variants come before the bare SXM name.
PEAK_BF16_TFLOPS: tuple[tuple[tuple[str, ...], float], ...] = (
    (("GH200",), 989.0),  # Grace Hopper: the H100 SXM tensor cores
    (("H200", "NVL"), 835.0),  # datasheet, dense, no sparsity (1,671 with sparsity)
    (("H200",), 989.0),  # H200 SXM: same compute as H100 SXM, more and faster memory
    (("H100", "PCIE"), 756.0),
    (("H100", "NVL"), 835.0),  # datasheet, dense, no sparsity (1,671 with sparsity)
    (("H100",), 989.0),  # H100 SXM5 ("NVIDIA H100 80GB HBM3")
    (("A100",), 312.0),  # SXM and PCIe alike
    (("B200",), 2250.0),  # datasheet, dense, no sparsity (HGX B200, per GPU)
    (("L40S",), 362.0),
)
"""(device-name tokens, dense BF16 TFLOP/s); see `peak_bf16_tflops`."""


def num_floating_point_operations(
    arch: ModelArchitecture,
    batch_size: int,
    padded_vocab_size: int | None = None,
    *,
    formula: str = "v0.19",
    seqlen_squared_sum: int | None = None,
    total_real_tokens: int | None = None,
) -> float:
    """FLOPs of one global batch (forward + backward) of a dense GPT, as Megatron-LM counts them.

    Args:
        arch: the model's shape (layers, hidden, heads, query groups, kv_channels, ffn, swiglu,
            seq_length); `arch.ffn_size` and `arch.head_dim` give what the model builds.
        batch_size: samples in the global batch (all data-parallel ranks and micro-batches).
        padded_vocab_size: the output layer's rows; default `arch.vocab_size` padded to a
            multiple of 128 (Megatron-LM's default at tensor-parallel size 1).
        formula: "v0.19" (Megatron-LM core_v0.19.0, default) or "v0.16" (core_v0.16.1).
        seqlen_squared_sum: v0.19 only: sum_i L_i^2 over the real sub-sequences of a packed
            batch; default batch_size * seq_length^2.
        total_real_tokens: v0.19 only: sum_i L_i without padding; default batch_size *
            seq_length.

    Returns a float, as Megatron-LM's does (its causal `/ 2` makes it one).
    """
    if formula not in FORMULAS:
        raise ValueError(f"formula {formula!r} is not one of {', '.join(FORMULAS)}")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if padded_vocab_size is None:
        from megatron_hope.megatron.model import padded_vocab_size as pad

        padded_vocab_size = pad(arch.vocab_size, tensor_model_parallel_size=1)

    # The variable names and the operation order follow Megatron-LM's `transformer_flops()`, so
    # the float result is the same bit for bit, not merely close.
    forward_backward_expansion_factor = 3  # forward, backward wgrad, backward dgrad
    fma_expansion_factor = 2  # an m x n by n x k GEMM is 2mnk FLOPs
    ffn_expansion_factor = 3 if arch.swiglu else 2  # h->2ffn and ffn->h GEMMs, or h->ffn, ffn->h
    hidden = arch.hidden_size
    seq_length = arch.seq_length
    num_layers = arch.num_layers
    query_projection_size = arch.head_dim * arch.num_attention_heads
    key_projection_size = arch.head_dim * arch.query_groups
    value_projection_size = arch.head_dim * arch.query_groups
    qkv_projection_size = query_projection_size + key_projection_size + value_projection_size
    mlp_term = (
        forward_backward_expansion_factor
        * fma_expansion_factor
        * hidden
        * ((arch.ffn_size * ffn_expansion_factor) * num_layers)
    )
    logit_term = (
        forward_backward_expansion_factor * fma_expansion_factor * hidden * padded_vocab_size
    )

    if formula == "v0.16":
        if seqlen_squared_sum is not None or total_real_tokens is not None:
            raise ValueError(
                "seqlen_squared_sum / total_real_tokens (packed batches) exist only in "
                "formula='v0.19'; drop them or use the default formula"
            )
        self_attn_term = (
            forward_backward_expansion_factor
            * fma_expansion_factor
            * (
                hidden * qkv_projection_size
                + query_projection_size * seq_length / 2 * 2  # causal half; QK^T and (QK^T)V
                + query_projection_size * hidden
            )
        ) * num_layers
        return batch_size * seq_length * (mlp_term + self_attn_term + logit_term)

    if seqlen_squared_sum is None:
        seqlen_squared_sum = batch_size * seq_length * seq_length
    if total_real_tokens is None:
        total_real_tokens = batch_size * seq_length
    self_attn_term = (
        forward_backward_expansion_factor
        * fma_expansion_factor
        * (hidden * qkv_projection_size + query_projection_size * hidden)
    ) * num_layers
    self_attn_core_term = (
        forward_backward_expansion_factor
        * fma_expansion_factor
        * query_projection_size
        / 2  # causal mask: half the scores are computed
        * 2  # QK^T and (QK^T)V
    ) * num_layers
    return (
        total_real_tokens * (mlp_term + self_attn_term + logit_term)
        + seqlen_squared_sum * self_attn_core_term
    )


def num_parameters(arch: ModelArchitecture, padded_vocab_size: int | None = None) -> int:
    """Parameters of the dense GPT `arch` builds (embedding included; tied output counted once).

    Counted from the shapes megatron-core's layer specs create: per layer the QKV and output
    projections, the MLP's fc1 (doubled by swiglu) and fc2, two norms; then the final norm, the
    word embedding and, untied, the output layer. Rotary embeddings have no parameters.
    """
    if padded_vocab_size is None:
        from megatron_hope.megatron.model import padded_vocab_size as pad

        padded_vocab_size = pad(arch.vocab_size, tensor_model_parallel_size=1)
    hidden = arch.hidden_size
    query = arch.head_dim * arch.num_attention_heads
    qkv = query + 2 * arch.head_dim * arch.query_groups
    fc1 = arch.ffn_size * (2 if arch.swiglu else 1)
    bias = arch.add_bias_linear
    norm = hidden * (1 if arch.normalization == "RMSNorm" else 2)  # LayerNorm has a bias
    per_layer = (
        hidden * qkv + (qkv if bias else 0)
        + query * hidden + (hidden if bias else 0)
        + hidden * fc1 + (fc1 if bias else 0)
        + arch.ffn_size * hidden + (hidden if bias else 0)
        + 2 * norm
    )
    embedding = padded_vocab_size * hidden
    output = embedding if arch.untie_embeddings_and_output_weights else 0
    return arch.num_layers * per_layer + norm + embedding + output


def tflops_per_gpu(flops_per_iteration: float, seconds_per_iteration: float,
                   world_size: int = 1) -> float:
    """Achieved TFLOP/s per GPU, as Megatron-LM logs "throughput per GPU (TFLOP/s/GPU)"."""
    if seconds_per_iteration <= 0:
        raise ValueError(f"seconds_per_iteration must be positive, got {seconds_per_iteration}")
    return flops_per_iteration / (seconds_per_iteration * 10**12 * world_size)


def peak_bf16_tflops(device_name: str) -> float | None:
    """Dense BF16 peak of a GPU named like `torch.cuda.get_device_name()`; None if unknown.

    Matching is by whole tokens, so "GB200" is not taken for a B200 nor "GH200" for an H200.
    """
    tokens = set(re.split(r"[^A-Z0-9]+", device_name.upper()))
    for needed, peak in PEAK_BF16_TFLOPS:
        if all(token in tokens for token in needed):
            return peak
    return None


def mfu(tflops_per_gpu: float, peak_tflops: float) -> float:
    """Model FLOPs utilisation: achieved / peak, a fraction (0.4 means 40 %)."""
    if peak_tflops <= 0:
        raise ValueError(f"peak_tflops must be positive, got {peak_tflops}")
    return tflops_per_gpu / peak_tflops
