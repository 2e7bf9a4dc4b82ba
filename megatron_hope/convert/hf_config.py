"""HuggingFace `config.json` for a Megatron HoPE/p-RoPE/RoPE model, exact by construction.

The frequencies come from the one frequency function (`PositionEncodingConfig.inv_freq`). With a
the number of rotated pairs and d the head dim:

  llama  rope (a = d/2):      rope_type default, rope_theta b: plain Llama.
         hope/p-rope/none:    rope_type proportional, rope_theta b, partial_rotary_factor 2a/d:
                              HF keeps b^(-2i/d) for the first a pairs and zero-pads the rest, the
                              full-width layout we train in (transformers >= 5).
  phi3   hope/p-rope/rope:    rope_theta b^(2a/d), partial_rotary_factor 2a/d over a contiguous
                              block (the q/k rows are permuted, see weight_map): b'^(-2j/2a) =
                              b^(-2j/d) reproduces the original frequencies. Written both in
                              rope_parameters (5.x) and top level (4.x reads only those).

Megatron-LM's --rotary-percent p (RoPE at b^(-2j/r) over its first r = int(p d) dims, a =
ceil(r/2) pairs (j, j + a)) is the full-width RoPE of base b^(d/r) cut after a pairs, held in a
leading block: Phi3 takes its rows as they are (rope_theta b^(2a/r), which is b for even r),
Llama proportional (rope_theta b^(d/r)) after the rows move to full-width pairs.

HF derives the rotated width with `int(d * p)` (Phi3) or `int(p * d // 2)` (proportional), which
rounds 2a/d down to 2a - 1 (or a - 1) for some (d, a), e.g. d = 44, a = 15. The factor is nudged
up by ulps until HF's own formula gives back a, and `check_hf_frequencies` builds the target's
rotary module from the written config and compares its `inv_freq` with ours.

Inference-time scaling (`--rope-scaling`):
  linear:F        position interpolation: every rotated θ_i becomes θ_i / F.
                  llama: proportional/linear `factor`; phi3: longrope with constant factor lists
                  and attention_factor 1.
  yarn:F[:orig]   YaRN (Peng et al. 2023) as HF computes it for the full-width RoPE of base b
                  (ramp between beta_fast 32 and beta_slow 1 rotations within orig, attention
                  factor 0.1 ln F + 1), restricted to the rotated pairs.
                  llama: RoPE models only (rope_type yarn); phi3: longrope with per-frequency
                  factors θ_i / θ'_i and an explicit attention_factor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from megatron_hope.convert.mcore_checkpoint import ConversionError
from megatron_hope.megatron.model import ModelArchitecture
from megatron_hope.rope.frequencies import (
    rope_inv_freq,
    rope_inv_freq_float64,
    rotary_percent_width,
)
from megatron_hope.rope.scaling import (
    RopeScaling,
    check_scaling_of_rotary_percent,
    scaled_inv_freq,
)


def _proportional_angles(p: float, d: int) -> int:
    return int(p * d // 2)  # HF's `_compute_proportional_rope_parameters`


def _phi3_width(p: float, d: int) -> int:
    return int(d * p)  # HF's Phi3 rotary embedding and validation


def exact_rotary_factor(rotated_pairs: int, head_dim: int, target: str) -> float:
    """2a/d, nudged up by ulps if needed so that HF's integer conversion gives back a."""
    p = 2 * rotated_pairs / head_dim
    for _ in range(64):
        if target == "phi3" and _phi3_width(p, head_dim) == 2 * rotated_pairs:
            return p
        if target == "llama" and _proportional_angles(p, head_dim) == rotated_pairs:
            return p
        p = math.nextafter(p, math.inf)
    raise ConversionError(  # not reachable for d < 2**40; kept as a guard
        f"no partial_rotary_factor near {2 * rotated_pairs / head_dim} makes HF rotate exactly "
        f"{rotated_pairs} pairs of head dim {head_dim}")


def check_architecture(arch: ModelArchitecture, target: str) -> None:
    """What the target's modeling code cannot express, as a clear error."""
    problems = []
    if arch.normalization != "RMSNorm":
        problems.append(f"--normalization {arch.normalization} (both HF targets use RMSNorm)")
    if not arch.swiglu:
        problems.append("a GELU MLP (both HF targets use a SwiGLU MLP: train with --swiglu)")
    if target == "phi3":
        if arch.add_bias_linear:
            problems.append("linear biases (Phi3 has none: train with --disable-bias-linear, or "
                            "use --target llama)")
        if arch.head_dim * arch.num_attention_heads != arch.hidden_size:
            problems.append(f"kv_channels {arch.head_dim} != hidden_size / num_attention_heads "
                            f"(Phi3 derives the head dim from them; use --target llama)")
    if arch.no_rope_freq is not None and any(arch.no_rope_freq):
        layers = [i for i, skip in enumerate(arch.no_rope_freq) if skip]
        problems.append(
            f"--no-rope-freq layers {layers} (both HF targets rotate in every layer; "
            "transformers' per-layer NoPE lives in Llama 4 and SmolLM3 only)")
    if problems:
        raise ConversionError(f"--target {target} cannot express this checkpoint: "
                              + "; ".join(problems))


@dataclass(frozen=True)
class RotarySpec:
    """The position encoding as a target writes it, plus the frequencies HF must reproduce."""

    fields: dict[str, Any]
    """Config fields (rope_parameters and, for phi3, top-level copies)."""
    expected_inv_freq: torch.Tensor
    """`[n]` float64: what the target's rotary module must hold (n = d/2 for llama, a for phi3)."""
    attention_scaling: float


def rotary_fields(arch: ModelArchitecture, target: str, scaling: RopeScaling | None
                  ) -> RotarySpec:
    encoding = arch.position_encoding
    kind = encoding.position_embedding_type
    d, b = arch.head_dim, float(encoding.rotary_base)
    inv = encoding.inv_freq()
    a = int((inv != 0).sum())
    if encoding.rotary_block:
        # Megatron-LM's --rotary-percent: b^(-2j/r) over r = int(p d) dims is the full-width
        # RoPE of base b^(d/r), cut after a pairs, by construction (rotary_percent_inv_freq);
        # the rows move between layouts (weight_map).
        try:
            check_scaling_of_rotary_percent(encoding.rotary_percent, scaling)
        except ValueError as error:
            raise ConversionError(str(error)) from None
        b = b ** (d / rotary_percent_width(d, encoding.rotary_percent))
    else:
        original = rope_inv_freq(d, b)
        prefix = bool((inv[:a] == original[:a]).all()) and bool((inv[a:] == 0).all())
        if not prefix:
            raise ConversionError(
                f"position_embedding_type {kind} turns pairs at frequencies that are not the "
                f"first {a} RoPE frequencies of base {b:g} followed by zeros; neither --target "
                "llama (proportional) nor --target phi3 (contiguous partial rotary) can express "
                "it")
    if target == "phi3" and a == 0:
        raise ConversionError(
            "position_embedding_type none (NoPE) has no rotated pair: Phi3 cannot express it "
            "(its partial rotary needs a width > 0); use --target llama")
    original_length = arch.seq_length
    if scaling is not None and scaling.original_length is not None:
        original_length = scaling.original_length
    exact = inv.to(torch.float64)
    if scaling is not None and scaling.kind == "yarn":
        # HF computes YaRN from b^(-2i/d) itself: start from the float64 frequencies.
        exact = torch.where(inv != 0, rope_inv_freq_float64(d, b), torch.zeros_like(exact))
    expected, attention = scaled_inv_freq(exact, scaling, arch.seq_length, d, b,
                                          dtype=torch.float64)

    if target == "llama":
        if a == d // 2:
            params: dict[str, Any] = {"rope_type": "default", "rope_theta": b}
            if scaling is not None and scaling.kind == "linear":
                params = {"rope_type": "linear", "rope_theta": b, "factor": scaling.factor}
            elif scaling is not None:
                params = {"rope_type": "yarn", "rope_theta": b, "factor": scaling.factor,
                          "original_max_position_embeddings": original_length,
                          "attention_factor": attention}
        else:
            if scaling is not None and scaling.kind == "yarn":
                raise ConversionError(
                    f"--rope-scaling yarn: Llama's proportional RoPE (needed for {kind}) has no "
                    "YaRN; use --target phi3 (longrope reproduces YaRN exactly) or linear:F")
            params = {"rope_type": "proportional", "rope_theta": b,
                      "partial_rotary_factor": exact_rotary_factor(a, d, "llama")}
            if scaling is not None:
                params["factor"] = scaling.factor
        # Top-level rope_theta (and rope_scaling for RoPE) too: transformers 4.x and the engines
        # built on it (vLLM, TensorRT-LLM) read those and silently default rope_theta to 1e4.
        fields = {"rope_parameters": params, "rope_theta": b}
        if scaling is not None and a == d // 2:
            fields["rope_scaling"] = dict(params)
        return RotarySpec(fields, expected, attention)

    # phi3: a contiguous block of 2a dims with base b^(2a/d) (see module docstring).
    p = exact_rotary_factor(a, d, "phi3")
    theta = b ** (2 * a / d)
    params = {"rope_type": "default", "rope_theta": theta, "partial_rotary_factor": p}
    fields: dict[str, Any] = {"rope_theta": theta, "partial_rotary_factor": p,
                              "original_max_position_embeddings": arch.max_positions}
    expected = expected[:a]
    if scaling is not None:
        block = rope_inv_freq_float64(d, b)[:a]
        factors = (block / expected).tolist()
        params = {"rope_type": "longrope", "rope_theta": theta, "partial_rotary_factor": p,
                  "short_factor": factors, "long_factor": factors, "attention_factor": attention,
                  "original_max_position_embeddings": original_length}
        fields["original_max_position_embeddings"] = original_length
        fields["rope_scaling"] = dict(params)  # what transformers 4.x reads
    fields["rope_parameters"] = params
    return RotarySpec(fields, expected, attention)


def build_hf_config(arch: ModelArchitecture, target: str, vocab_size: int, eos_token_id: int,
                    pad_token_id: int | None, dtype: torch.dtype,
                    scaling: RopeScaling | None = None, bos_token_id: int | None = None,
                    ) -> tuple[dict[str, Any], RotarySpec]:
    """`config.json` contents for `target` and the frequencies its rotary module must hold."""
    check_architecture(arch, target)
    rotary = rotary_fields(arch, target, scaling)
    max_positions = arch.max_positions
    if scaling is not None:
        original = scaling.original_length or arch.seq_length
        max_positions = max(max_positions, math.ceil(scaling.factor * original))
    dtype_name = str(dtype).removeprefix("torch.")
    common = {
        "vocab_size": vocab_size,
        "hidden_size": arch.hidden_size,
        "intermediate_size": arch.ffn_size,
        "num_hidden_layers": arch.num_layers,
        "num_attention_heads": arch.num_attention_heads,
        "num_key_value_heads": arch.query_groups,
        "hidden_act": "silu",
        "max_position_embeddings": max_positions,
        "initializer_range": arch.init_method_std,
        "rms_norm_eps": 1e-5,  # megatron-core's layernorm_epsilon default
        "use_cache": True,
        "tie_word_embeddings": not arch.untie_embeddings_and_output_weights,
        "bos_token_id": bos_token_id,
        "eos_token_id": eos_token_id,
        "pad_token_id": pad_token_id,
        "attention_dropout": 0.0,
        "dtype": dtype_name,
        "torch_dtype": dtype_name,  # the 4.x spelling
    }
    if target == "llama":
        config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", **common,
                  "head_dim": arch.head_dim, "attention_bias": arch.add_bias_linear,
                  "mlp_bias": arch.add_bias_linear, "pretraining_tp": 1}
    else:
        config = {"architectures": ["Phi3ForCausalLM"], "model_type": "phi3", **common,
                  "resid_pdrop": 0.0, "embd_pdrop": 0.0, "sliding_window": None}
    config.update(rotary.fields)
    return config, rotary


def hf_rotary_frequencies(config_dict: dict[str, Any]) -> tuple[torch.Tensor, float]:
    """The `inv_freq` and attention scaling that transformers builds from `config_dict`."""
    from transformers import AutoConfig

    config = AutoConfig.for_model(**config_dict)
    if config_dict["model_type"] == "llama":
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding as Rotary
    else:
        from transformers.models.phi3.modeling_phi3 import Phi3RotaryEmbedding as Rotary
    module = Rotary(config=config)
    return module.inv_freq.detach().to(torch.float64), float(module.attention_scaling)


def check_hf_frequencies(config_dict: dict[str, Any], rotary: RotarySpec) -> None:
    """The rounding-trap guard: HF's rotary module must hold exactly our frequencies."""
    inv, attention = hf_rotary_frequencies(config_dict)
    want = rotary.expected_inv_freq
    if inv.numel() != want.numel():
        raise ConversionError(
            f"transformers builds {inv.numel()} frequencies from the exported config where "
            f"{want.numel()} are needed (partial_rotary_factor rounding); please report this")
    if not torch.allclose(inv, want, rtol=1e-5, atol=0.0) or not math.isclose(
            attention, rotary.attention_scaling, rel_tol=1e-6):
        worst = float(((inv - want).abs() / want.abs().clamp_min(1e-30)).max())
        raise ConversionError(
            f"transformers' frequencies from the exported config differ from the model's "
            f"(max relative difference {worst:.2e}, attention scaling {attention} vs "
            f"{rotary.attention_scaling})")
