"""Position-related attention patterns (paper section 3): random-token logits, eq. 4, eq. 5.

Inputs (3.1): one random token repeated at every position except the first, which is the start
token (BOS, or EOD for tokenizers without BOS, which is what a document follows in our data).
For the last query position m = s - 1 we take the pre-softmax logits against every key position
n, `scale * q_m·k_n`, and average over samples, layers and heads (Figures 2 and 6; per layer too,
Figure 3c).

Eq. 4 splits each logit into one component per rotary pair i (dimensions i and i + d/2):

    C_i(m, n) = (q_i0 k_i0 + q_i1 k_i1) cos((m-n)θ_i) + (q_i0 k_i1 - q_i1 k_i0) sin((m-n)θ_i)

with q, k before rotation. After rotation the same number is simply the pair's share of the dot
product, q'_i0 k'_i0 + q'_i1 k'_i1 (rotations are orthogonal), which is how `pair_components`
computes it from the captured post-rotary q and k; `eq4_components` is the formula itself, kept
for the test that the two agree. The components sum exactly to the logits.

Eq. 5, variance accounted for, of a component curve ŷ of the whole curve y (over positions):

    VAF(ŷ, y) = [1 - Σ (y - ŷ)² / Σ y²] x 100

(literal: y is not centred, as in the paper's formula, so a band's VAF is not a share of the
variance: the bands' VAFs need not add up to 100 and one can be negative). Each pair is put in a
band by the frequency it was TRAINED with and the L of eq. 6 (`hope_train_length`): "high"
(θ ≥ 2π/L), "activated" (π/L < θ < 2π/L), "low" (0 < θ ≤ π/L) and "independent" (θ = 0, the
pairs HoPE, p-RoPE and AB1-AB3 stop rotating), so ab3's replaced pairs land where they now turn.

Defaults follow the paper: 5,000 samples per length (section 3.1). With fewer, the result carries
standard errors: of the mean logit at each key position (over samples) and of each band's VAF
(batch means over `SE_GROUPS` interleaved groups of samples, divided by sqrt(groups)). Layer 0's
own components are kept (`layer_components`) for Figure 3c's first-layer view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tqdm import tqdm

from megatron_hope.eval.common import generator

DEFAULT_SAMPLES = 5000
SE_GROUPS = 10
"""Interleaved sample groups whose spread gives the standard error of each band's VAF."""
BANDS = ("high", "activated", "low", "independent")
LENGTH_FRACTIONS = (1.0, 2.0)
"""Default lengths / L: the paper's 512 and 1024 for L = 512."""


def pair_components(query: torch.Tensor, keys: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Eq. 4's components from post-rotary vectors: query `[..., d]`, keys `[..., s, d]` ->
    `[..., d/2, s]`; summing over the pair axis gives `scale * query·keys`."""
    half = query.shape[-1] // 2
    product = query.unsqueeze(-2) * keys
    return ((product[..., :half] + product[..., half:]) * scale).transpose(-1, -2)


def eq4_components(query: torch.Tensor, key: torch.Tensor, theta: torch.Tensor,
                   m: int, n: int) -> torch.Tensor:
    """Eq. 4 literally, from pre-rotation q, k `[d]` at positions m, n: `[d/2]`."""
    half = query.shape[-1] // 2
    q0, q1 = query[:half], query[half:]
    k0, k1 = key[:half], key[half:]
    angle = (m - n) * theta.to(query.dtype)
    return (q0 * k0 + q1 * k1) * torch.cos(angle) + (q0 * k1 - q1 * k0) * torch.sin(angle)


def vaf(component: torch.Tensor, whole: torch.Tensor) -> float:
    """Eq. 5 in percent: 100 when `component` is `whole`, 0 when it is zero."""
    component = component.double()
    whole = whole.double()
    denominator = float((whole**2).sum())
    if denominator == 0.0:
        return float("nan")
    return (1.0 - float(((whole - component) ** 2).sum()) / denominator) * 100.0


def random_token_inputs(samples: int, length: int, token_pool: torch.Tensor,
                        start_id: int | None, seed: int) -> torch.Tensor:
    """`[samples, length]`: one random token per sample everywhere but position 0 (start)."""
    gen = generator(seed * 1000003 + length)
    chosen = token_pool[torch.randint(len(token_pool), (samples,), generator=gen)]
    tokens = chosen[:, None].expand(samples, length).clone()
    if start_id is not None:
        tokens[:, 0] = start_id
    return tokens


@dataclass
class Profile:
    """One batch's last-query logits, split by pair (eq. 4), summed over the batch as noted."""

    components: torch.Tensor
    """`[d/2, s]` summed over samples, layers and heads."""
    per_layer: torch.Tensor
    """`[layers, s]` logits summed over samples and heads."""
    layer0: torch.Tensor
    """`[d/2, s]` layer 0's components summed over samples and heads."""
    per_sample: torch.Tensor
    """`[b, d/2, s]` components summed over layers and heads, per sample."""


def last_query_profile(layers) -> Profile:
    """The last query position's eq. 4 components from one batch's captured layers."""
    per_sample = None
    per_layer = []
    layer0 = None
    for qk in layers:
        parts = pair_components(qk.query[:, :, -1], qk.key, qk.scale).sum(dim=1)  # [b, d/2, s]
        per_sample = parts if per_sample is None else per_sample + parts
        per_layer.append(parts.sum(dim=(0, 1)))
        layer0 = parts.sum(dim=0) if layer0 is None else layer0
    return Profile(per_sample.sum(dim=0), torch.stack(per_layer), layer0, per_sample)


def bands_from_frequencies(theta: list[float], band_length: int) -> list[str]:
    """Band of each pair from the frequency it turns at and the L of eq. 6 (module docstring)."""
    if band_length <= 0:
        raise ValueError(f"hope_train_length ({band_length}) must be a positive token count")
    full_turn, half_turn = 2.0 * math.pi / band_length, math.pi / band_length
    return ["independent" if value == 0.0 else "high" if value >= full_turn
            else "activated" if value > half_turn else "low" for value in theta]


def pair_bands(scorer) -> list[str]:
    """Band of each pair of the scorer's trained frequencies and hope_train_length."""
    theta = getattr(scorer, "trained_inv_freq", None)
    if theta is None:
        theta = scorer.inv_freq
    if theta is None:
        return []
    length = scorer.info.get("hope_train_length") or scorer.train_length
    return bands_from_frequencies([float(v) for v in theta.double()], int(length))


def band_vaf(components: torch.Tensor, bands: list[str]) -> dict[str, float | None]:
    """Eq. 5 of each band's summed components `[d/2, s]` against their total."""
    logits = components.sum(dim=0)
    out: dict[str, float | None] = {}
    for band in BANDS:
        chosen = [i for i, b in enumerate(bands) if b == band]
        out[band] = vaf(components[chosen].sum(0), logits) if chosen else None
    return out


def standard_error(values: list[float]) -> float | None:
    """Standard error of the mean of `values` (None with fewer than two)."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if len(values) < 2:
        return None
    centre = sum(values) / len(values)
    spread = sum((v - centre) ** 2 for v in values) / (len(values) - 1)
    return math.sqrt(spread / len(values))


def run_attention(scorer, lengths: list[int] | None = None, samples: int = DEFAULT_SAMPLES,
                  seed: int = 1234, batch_size: int = 8, progress: bool = True) -> dict:
    """Random-token attention profiles, eq. 4 components and eq. 5 VAF at each length."""
    lengths = lengths or [max(2, int(f * scorer.train_length)) for f in LENGTH_FRACTIONS]
    for length in lengths:
        scorer.check_length(length, "attention: input length")
    tokenizer = scorer.tokenizer
    start_id = tokenizer.start_id if tokenizer is not None else None
    special = tokenizer.special_ids if tokenizer is not None else set()
    pool = torch.tensor([i for i in range(scorer.vocab_size) if i not in special])
    bands = pair_bands(scorer)
    theta = scorer.inv_freq.tolist() if scorer.inv_freq is not None else []
    groups = max(1, min(SE_GROUPS, samples))
    results = []
    for length in lengths:
        tokens = random_token_inputs(samples, length, pool, start_id, seed)
        components = per_layer = layer0 = grouped = None
        sample_logits = []
        heads = 0
        for start in tqdm(range(0, samples, batch_size), desc=f"attention {length}",
                          disable=not progress):
            _, layers = scorer.capture_qk(tokens[start: start + batch_size])
            if not layers:
                raise ValueError("attention: no attention inputs were captured; is this a "
                                 "supported model (megatron local spec, HF sdpa/eager)?")
            profile = last_query_profile(layers)
            if components is None:
                components, per_layer, layer0 = (profile.components, profile.per_layer,
                                                 profile.layer0)
                grouped = torch.zeros(groups, *profile.components.shape, dtype=torch.float64)
            else:
                components = components + profile.components
                per_layer = per_layer + profile.per_layer
                layer0 = layer0 + profile.layer0
            index = torch.arange(start, start + profile.per_sample.shape[0]) % groups
            grouped.index_add_(0, index, profile.per_sample.double())
            sample_logits.append(profile.per_sample.sum(dim=1))
            heads = layers[0].query.shape[1]
        count = samples * heads
        depth = per_layer.shape[0]
        components = components / (count * depth)
        per_layer = per_layer / count
        layer0 = layer0 / count
        logits = components.sum(dim=0)
        # Standard error of the mean logit at each key position, over samples.
        per_sample = torch.cat(sample_logits).double() / (heads * depth)
        logit_se = (per_sample.std(dim=0) / math.sqrt(samples)).tolist() if samples > 1 else None
        group_vafs = [band_vaf(group, bands) for group in grouped]
        results.append({
            "length": length,
            "logits": logits.tolist(),
            "logits_standard_error": logit_se,
            "per_layer_logits": per_layer.tolist(),
            "components": components.tolist(),
            "layer_components": {"0": layer0.tolist()},
            "vaf": [vaf(component, logits) for component in components],
            "band_vaf": band_vaf(components, bands),
            "band_vaf_standard_error": {
                band: standard_error([g[band] for g in group_vafs]) for band in BANDS},
        })
    return {"lengths": lengths, "bands": bands, "theta": theta, "samples": samples,
            "seed": seed, "query_position": "last", "train_length": scorer.train_length,
            "band_length": scorer.info.get("hope_train_length") or scorer.train_length,
            "standard_error_groups": groups,
            "head_dim": 2 * len(bands) if bands else None, "results": results,
            "nan_free": all(not math.isnan(v) for r in results for v in r["vaf"])}
