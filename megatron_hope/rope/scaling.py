"""Inference-time context extension of rotary frequencies: PI (`linear:F`) and YaRN (`yarn:F`).

One definition for the HF export (which writes it into a config) and for evaluation (which applies
it on the fly), so that an exported model and an on-the-fly run compute the same thing.

  linear:F  Position Interpolation (Chen et al. 2023): every θ_i becomes θ_i / F.
  yarn:F    YaRN (Peng et al. 2023) exactly as HF transformers' `rope_type: yarn` computes it
            (`_compute_yarn_parameters`, truncate=True, β_fast = 32, β_slow = 1): with
            i(θ) = d ln(1/θ) / (2 ln b) the pair position of frequency θ (= i for θ_i = b^(-2i/d)),
            low = floor(i(2π β_fast / L)), high = ceil(i(2π β_slow / L)),
              γ_i = clamp((i(θ_i) - low) / (high - low), 0, 1)
              θ'_i = γ_i θ_i / F + (1 - γ_i) θ_i
            and cos/sin multiplied by 0.1 ln F + 1 (HF's `attention_scaling`). Writing the ramp
            through i(θ) rather than the pair index makes it apply to any frequency vector
            (HoPE's zeros stay zero, p-RoPE, AB3's re-spread, a partial-rotary block).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

ROPE_SCALING_KINDS = ("linear", "yarn")
YARN_BETA_FAST = 32.0
YARN_BETA_SLOW = 1.0
USAGE = "use linear:FACTOR or yarn:FACTOR[:ORIGINAL_LENGTH], e.g. linear:4 or yarn:8:2048"


@dataclass(frozen=True)
class RopeScaling:
    """One `--rope-scaling KIND:FACTOR[:ORIGINAL_LENGTH]` setting."""

    kind: str
    """linear (PI) or yarn."""
    factor: float
    """F > 1: how many times the training length the model is meant to be asked."""
    original_length: int | None = None
    """YaRN's original context L; default: the model's training length."""

    def __post_init__(self) -> None:
        if self.kind not in ROPE_SCALING_KINDS:
            raise ValueError(f"--rope-scaling {self}: unsupported kind {self.kind!r}; {USAGE}")
        if not self.factor > 1.0:
            raise ValueError(f"--rope-scaling {self}: the factor must be > 1 (it stretches the "
                             f"training length), got {self.factor:g}")
        if self.original_length is not None:
            if self.kind == "linear":
                raise ValueError(f"--rope-scaling {self}: linear takes only a factor; {USAGE}")
            if self.original_length <= 0:
                raise ValueError(f"--rope-scaling {self}: the original length must be positive")

    @classmethod
    def parse(cls, text: str | None) -> RopeScaling | None:
        """`"linear:4"` -> RopeScaling("linear", 4.0); None, "" or "none" -> None."""
        if text is None or text in ("", "none"):
            return None
        parts = text.split(":")
        if parts[0] not in ROPE_SCALING_KINDS or len(parts) not in (2, 3):
            raise ValueError(f"--rope-scaling {text!r}: unsupported; {USAGE}")
        try:
            factor = float(parts[1])
            original = int(parts[2]) if len(parts) == 3 else None
        except ValueError:
            raise ValueError(f"--rope-scaling {text!r}: {USAGE}") from None
        if math.isnan(factor):
            raise ValueError(f"--rope-scaling {text!r}: {USAGE}")
        return cls(parts[0], factor, original)

    @property
    def label(self) -> str:
        """Row suffix in reports: the paper's "+PI" and "+YaRN", with the factor F that the
        paper leaves implicit ("+YaRN F=4")."""
        name = {"linear": "+PI", "yarn": "+YaRN"}.get(self.kind, f"+{self.kind}")
        return f"{name} F={self.factor:g}"

    def __str__(self) -> str:
        text = f"{self.kind}:{self.factor:g}"
        return text if self.original_length is None else f"{text}:{self.original_length}"


def parse_rope_scaling(text: str | None) -> RopeScaling | None:
    return RopeScaling.parse(text)


def check_scaling_of_rotary_percent(rotary_percent: float, scaling: RopeScaling | None) -> None:
    """YaRN on Megatron-LM's `--rotary-percent` RoPE: refused (ValueError naming both flags)."""
    if rotary_percent != 1.0 and scaling is not None and scaling.kind == "yarn":
        raise ValueError(
            f"--rope-scaling yarn on a --rotary-percent {rotary_percent} model: YaRN's ramp is "
            "defined over RoPE's own frequencies, not re-spread ones; use linear:F")


def yarn_attention_factor(factor: float) -> float:
    """YaRN's cos/sin multiplier sqrt(1/t) = 0.1 ln F + 1 (1 for F <= 1)."""
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
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, float]:
    """(θ' in `dtype`, cos/sin multiplier) for `scaling` of frequencies `inv_freq` (any length).

    yarn needs the head dim d and base b of the frequencies' RoPE, and uses
    `scaling.original_length` as L when given, else `train_length`.
    """
    theta = inv_freq.detach().to(torch.float64).cpu()
    if scaling is None:
        return theta.to(dtype), 1.0
    if scaling.kind == "linear":
        return (theta / scaling.factor).to(dtype), 1.0
    if not kv_channels or not rotary_base:
        raise ValueError(f"--rope-scaling {scaling}: YaRN needs the model's head dim and rotary "
                         "base, which it does not say")
    length = scaling.original_length or train_length

    def correction(rotations: float) -> float:
        return kv_channels * math.log(length / (rotations * 2 * math.pi)) / (
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
    return blended.to(dtype), yarn_attention_factor(scaling.factor)
