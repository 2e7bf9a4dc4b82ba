"""Rotary frequencies for RoPE, HoPE, p-RoPE, NoPE and the HoPE paper's ablations.

This is the one place where the frequency math lives: the megatron-core rotary module, the
HuggingFace export and the analysis tools all call `position_encoding_inv_freq`.

Conventions (shared with megatron-core's non-interleaved RoPE and HF's rope type `proportional`):
a head of `kv_channels = d` dimensions holds d/2 pairs; pair i couples dimensions (i, i + d/2) and
turns at θ_i = b^(-2i/d). A pair that is position independent keeps its slot and gets frequency
0, so cos = 1 and sin = 0 leave it untouched on every rotary path (unfused, fused, packed, CP).

Paper: Chen et al., "HoPE: A Novel Positional Encoding Without Long-Term Decay", arXiv 2410.21216.
"""

from __future__ import annotations

import math
from enum import Enum

import torch

POSITION_ENCODING_TYPES = ("hope", "rope", "p-rope", "none", "ab1", "ab2", "ab3")
"""Values of `--position-embedding-type` that this package implements."""

MAX_KV_CHANNELS = 1 << 16
"""The largest head dimension accepted; real models use 64-256."""


class PairBand(str, Enum):
    """Where a RoPE pair's frequency falls relative to the training length L (paper 3.3.2)."""

    HIGH = "high"
    """θ ≥ 2π/L: at least one full turn within L; HoPE keeps these rotating (eq. 6)."""
    ACTIVATED = "activated"
    """π/L < θ < 2π/L: the "doomed-to-be-activated" half-to-full cycle components."""
    LOW = "low"
    """θ ≤ π/L: the top low-frequency components, less than half a turn within L."""


def rope_inv_freq(kv_channels: int, rotary_base: float) -> torch.Tensor:
    """RoPE's θ_i = b^(-2i/d) for i = 0..d/2-1, `[d/2]` float32.

    Computed exactly as megatron-core's `RotaryEmbedding` does (float32 arange, float32 power),
    so `rope` here is bit-identical to upstream's full-width RoPE.
    """
    exponents = torch.arange(0, kv_channels, 2, dtype=torch.float32) / kv_channels
    return 1.0 / (rotary_base**exponents)


def rope_inv_freq_float64(kv_channels: int, rotary_base: float) -> torch.Tensor:
    """θ_i in float64, `[d/2]`: used to classify pairs so that float32 rounding never moves a
    pair across a band boundary."""
    exponents = torch.arange(0, kv_channels, 2, dtype=torch.float64) / kv_channels
    return torch.tensor(float(rotary_base), dtype=torch.float64) ** (-exponents)


def classify_pairs(kv_channels: int, rotary_base: float, train_length: int) -> list[PairBand]:
    """The band of every pair for training length L (paper 3.3.2 and eq. 6), `d/2` entries."""
    if train_length <= 0:
        raise ValueError(f"--hope-train-length ({train_length}) must be a positive token count")
    theta = rope_inv_freq_float64(kv_channels, rotary_base).tolist()
    full_turn = 2.0 * math.pi / train_length
    half_turn = math.pi / train_length
    bands = []
    for value in theta:
        if value >= full_turn:
            bands.append(PairBand.HIGH)
        elif value > half_turn:
            bands.append(PairBand.ACTIVATED)
        else:
            bands.append(PairBand.LOW)
    return bands


def hope_rotated_pairs(kv_channels: int, rotary_base: float, train_length: int) -> int:
    """a of eq. 6: the number of leading pairs with θ_i ≥ 2π/L (θ decreases with i)."""
    return sum(band is PairBand.HIGH for band in classify_pairs(kv_channels, rotary_base,
                                                                train_length))


def p_rope_kept_pairs(kv_channels: int, rope_fraction: float) -> int:
    """Pairs that p-RoPE keeps: the highest fraction p of the d/2 frequencies (Barbero et al.).

    Rounds down like Gemma's `int(p * d // 2)`, with a tolerance so that p = 2a/d gives back a
    exactly instead of a - 1 when p*d/2 is a hair below an integer in floating point.
    """
    return math.floor(rope_fraction * (kv_channels // 2) + 1e-9)


def rotary_percent_width(kv_channels: int, rotary_percent: float) -> int:
    """The leading dimensions Megatron-LM's `--rotary-percent` p rotates: `int(d * p)`, as
    megatron-core's `RotaryEmbedding` computes it (an odd width rotates one more dimension: its
    frequencies are `arange(0, width, 2)`, each applied to a pair)."""
    if not 0.0 < rotary_percent <= 1.0:
        raise ValueError(f"--rotary-percent ({rotary_percent}) must be in (0, 1]")
    width = kv_channels if rotary_percent == 1.0 else int(kv_channels * rotary_percent)
    if width == 0:
        raise ValueError(
            f"--rotary-percent ({rotary_percent}) rotates int({kv_channels} x {rotary_percent}) "
            f"= 0 of the {kv_channels} head dimensions; raise it to at least "
            f"{1.0 / kv_channels:.4g}")
    return width


def rotary_percent_inv_freq(kv_channels: int, rotary_base: float,
                            rotary_percent: float) -> torch.Tensor:
    """Megatron-LM's RoPE with `--rotary-percent` p, `[d/2]` float32: with r = int(d p), the
    first ceil(r/2) pairs turn at b^(-2j/r) (RoPE's frequencies re-spread over the smaller
    width, computed as megatron-core computes them), the rest are 0.

    These pairs are (j, j + ceil(r/2)) inside the head's leading block, not (i, i + d/2): see
    `PositionEncodingConfig.rotary_block`. Not HoPE: the same set is p-RoPE at base b^(d/r).
    """
    _validate_geometry(kv_channels, rotary_base)
    width = rotary_percent_width(kv_channels, rotary_percent)
    block = rope_inv_freq(width, rotary_base)  # upstream's expression at the block's width
    frequencies = torch.zeros(kv_channels // 2, dtype=torch.float32)
    frequencies[: block.numel()] = block
    return frequencies


def _validate_geometry(kv_channels: int, rotary_base: float) -> None:
    if kv_channels <= 0 or kv_channels % 2:
        raise ValueError(
            f"kv_channels ({kv_channels}) must be a positive even number: RoPE rotates pairs of "
            "dimensions; set --kv-channels or --hidden-size/--num-attention-heads accordingly"
        )
    # The frequency vector is materialised: a typo such as 2**63 would allocate exabytes.
    if kv_channels > MAX_KV_CHANNELS:
        raise ValueError(
            f"kv_channels ({kv_channels}) is above {MAX_KV_CHANNELS}, far beyond any real head "
            "dimension (64-256); set --kv-channels or --hidden-size/--num-attention-heads "
            "accordingly"
        )
    if not 1.0 < rotary_base < math.inf:
        raise ValueError(
            f"--rotary-base ({rotary_base}) must be a finite number greater than 1; the usual "
            "is 10000"
        )


def _validate_train_length(kind: str, train_length: int | None) -> int:
    if train_length is None or train_length <= 0:
        raise ValueError(
            f"position_embedding_type={kind} needs the training length L (--hope-train-length, "
            f"default --seq-length); got {train_length}"
        )
    return int(train_length)


def position_encoding_inv_freq(
    kind: str,
    kv_channels: int,
    rotary_base: float = 10000.0,
    train_length: int | None = None,
    rope_fraction: float | None = None,
) -> torch.Tensor:
    """Per-pair angular frequencies, `[kv_channels // 2]` float32; 0 marks a position-independent
    pair.

    kind:
      rope    every pair at θ_i = b^(-2i/d).
      hope    pairs with θ_i ≥ 2π/L keep θ_i (eq. 6); all others 0 (eq. 7).
      p-rope  the first floor(p·d/2) pairs keep θ_i; the rest 0.
      none    all 0 (NoPE).
      ab1     only the activated pairs (π/L < θ_i < 2π/L) become 0; the rest keep θ_i.
      ab2     only the low pairs (θ_i ≤ π/L) become 0; the rest keep θ_i.
      ab3     no position-independent pair. Our reading of "replacing these components with
              high-frequency components" (paper section 5): all d/2 pairs rotate at frequencies
              spread geometrically over the high band only, from θ_0 = 1 down to θ_{a-1}, the
              lowest frequency HoPE keeps: θ'_j = θ_{a-1}^(j / (d/2 - 1)). This is what a
              re-spread over fewer pairs (Megatron's rotary_percent) does, widened to the full head.
    """
    if kind not in POSITION_ENCODING_TYPES:
        raise ValueError(
            f"--position-embedding-type {kind!r} is unknown; choose one of "
            f"{', '.join(POSITION_ENCODING_TYPES)}"
        )
    _validate_geometry(kv_channels, rotary_base)
    theta = rope_inv_freq(kv_channels, rotary_base)
    half = kv_channels // 2

    if kind == "rope":
        return theta
    if kind == "none":
        return torch.zeros_like(theta)
    if kind == "p-rope":
        if rope_fraction is None or not 0.0 < rope_fraction <= 1.0:
            raise ValueError(
                f"--rope-fraction ({rope_fraction}) must be in (0, 1] for p-rope; "
                "use position_embedding_type=none for no rotation at all"
            )
        kept = p_rope_kept_pairs(kv_channels, rope_fraction)
        if kept == 0:
            raise ValueError(
                f"--rope-fraction ({rope_fraction}) keeps no pair of the {half} pairs of "
                f"kv_channels={kv_channels}; raise it to at least {1.0 / half:.4g}"
            )
        keep = torch.arange(half) < kept
        return torch.where(keep, theta, torch.zeros_like(theta))

    train_length = _validate_train_length(kind, train_length)
    bands = classify_pairs(kv_channels, rotary_base, train_length)
    rotated = sum(band is PairBand.HIGH for band in bands)
    if rotated == 0:
        raise ValueError(
            f"--hope-train-length ({train_length}) leaves no rotated pair for "
            f"kv_channels={kv_channels}, rotary_base={rotary_base:g}: the fastest pair turns at "
            f"θ_0 = 1 < 2π/L; raise --hope-train-length to at least 7 or use "
            "--position-embedding-type rope"
        )

    if kind == "hope":
        zero = [band is not PairBand.HIGH for band in bands]
    elif kind == "ab1":
        zero = [band is PairBand.ACTIVATED for band in bands]
    elif kind == "ab2":
        zero = [band is PairBand.LOW for band in bands]
    else:  # ab3
        if half == 1:
            return theta
        lowest_high = rope_inv_freq_float64(kv_channels, rotary_base)[rotated - 1]
        spread = torch.arange(half, dtype=torch.float64) / (half - 1)
        return (lowest_high**spread).to(torch.float32)
    return torch.where(torch.tensor(zero), torch.zeros_like(theta), theta)


def rotated_pair_count(inv_freq: torch.Tensor) -> int:
    """Pairs that carry position (nonzero frequency)."""
    return int((inv_freq != 0).sum().item())
