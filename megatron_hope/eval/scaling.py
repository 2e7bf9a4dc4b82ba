"""Inference-time context extension applied on the fly: PI (`linear:F`) and YaRN (`yarn:F`).

Both act on a model's per-pair frequencies `[d/2]` as given by `position_encoding_inv_freq`
(HoPE's position-independent pairs have frequency 0 and stay 0 under either method):

  linear:F  Position Interpolation (Chen et al. 2023): every θ_i becomes θ_i / F.
  yarn:F    YaRN (Peng et al. 2023) exactly as HF transformers' `rope_type: yarn` computes it
            (`_compute_yarn_parameters`, truncate=True, β_fast = 32, β_slow = 1), so that an
            on-the-fly Megatron run and an HF model exported with YaRN agree: with
            i(θ) = d ln(1/θ) / (2 ln b) the pair position of frequency θ (= i for θ_i = b^(-2i/d)),
            low = floor(i(2π β_fast / L)), high = ceil(i(2π β_slow / L)),
              γ_i = clamp((i(θ_i) - low) / (high - low), 0, 1)
              θ'_i = γ_i θ_i / F + (1 - γ_i) θ_i
            and cos/sin multiplied by 0.1 ln F + 1 (HF's `attention_scaling`; logits scale by its
            square). Writing the ramp through i(θ) rather than the pair index makes it apply to
            any frequency vector (HoPE's zeros, p-RoPE, AB3's re-spread, a partial-rotary block).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

ROPE_SCALING_KINDS = ("linear", "yarn")
YARN_BETA_FAST = 32.0
YARN_BETA_SLOW = 1.0


@dataclass(frozen=True)
class RopeScaling:
    """One `--rope-scaling KIND:F` setting."""

    kind: str
    """linear (PI) or yarn."""
    factor: float
    """F > 1: how many times the training length the model is meant to be asked."""

    def __post_init__(self) -> None:
        if self.kind not in ROPE_SCALING_KINDS:
            raise ValueError(f"--rope-scaling {self.kind}:{self.factor:g}: unknown kind "
                             f"{self.kind!r}; use one of {', '.join(ROPE_SCALING_KINDS)}")
        if not self.factor >= 1.0:
            raise ValueError(f"--rope-scaling {self.kind}:{self.factor:g}: the factor must be "
                             ">= 1 (it stretches the training length)")

    @property
    def label(self) -> str:
        """Row suffix in reports: the paper's "+PI" and "+YaRN"."""
        return {"linear": "+PI", "yarn": "+YaRN"}[self.kind]

    def __str__(self) -> str:
        return f"{self.kind}:{self.factor:g}"


def parse_rope_scaling(text: str | None) -> RopeScaling | None:
    """`"linear:4"` -> RopeScaling("linear", 4.0); None or "" -> None."""
    if not text:
        return None
    kind, sep, factor = text.partition(":")
    try:
        value = float(factor)
    except ValueError:
        value = float("nan")
    if not sep or math.isnan(value):
        raise ValueError(f"--rope-scaling {text!r}: expected KIND:FACTOR such as linear:4 or "
                         "yarn:4")
    return RopeScaling(kind, value)


def yarn_attention_factor(factor: float) -> float:
    """YaRN's cos/sin multiplier sqrt(1/t) = 0.1 ln F + 1 (1 for F = 1)."""
    return 0.1 * math.log(factor) + 1.0 if factor > 1.0 else 1.0


def _pair_position(theta: torch.Tensor, kv_channels: int, rotary_base: float) -> torch.Tensor:
    """i(θ) = d ln(1/θ) / (2 ln b), snapped to the integer it is within 1e-6 of (float32 θ)."""
    position = kv_channels * torch.log(1.0 / theta) / (2.0 * math.log(rotary_base))
    nearest = position.round()
    return torch.where((position - nearest).abs() < 1e-6, nearest, position)


def scaled_inv_freq(
    inv_freq: torch.Tensor,
    scaling: RopeScaling | None,
    train_length: int,
    kv_channels: int | None = None,
    rotary_base: float | None = None,
) -> tuple[torch.Tensor, float]:
    """(θ' float32, cos/sin multiplier) for `scaling` of frequencies `inv_freq` (any length).

    yarn needs the head dim d and base b of the frequencies' RoPE (see the module docstring).
    """
    theta = inv_freq.detach().to(torch.float64).cpu()
    if scaling is None:
        return theta.to(torch.float32), 1.0
    if scaling.kind == "linear":
        return (theta / scaling.factor).to(torch.float32), 1.0
    if not kv_channels or not rotary_base:
        raise ValueError(f"--rope-scaling {scaling}: YaRN needs the model's head dim and rotary "
                         "base, which it does not say")

    def correction(rotations: float) -> float:
        return kv_channels * math.log(train_length / (rotations * 2 * math.pi)) / (
            2 * math.log(rotary_base))

    low = max(math.floor(correction(YARN_BETA_FAST)), 0)
    high = min(math.ceil(correction(YARN_BETA_SLOW)), kv_channels - 1)
    if low == high:
        high += 0.001  # HF's guard against a zero-width ramp
    rotating = theta > 0
    position = _pair_position(torch.where(rotating, theta, torch.ones_like(theta)), kv_channels,
                              rotary_base)
    ramp = ((position - low) / (high - low)).clamp(0.0, 1.0)
    blended = ramp * theta / scaling.factor + (1.0 - ramp) * theta
    blended = torch.where(rotating, blended, torch.zeros_like(theta))
    return blended.to(torch.float32), yarn_attention_factor(scaling.factor)
