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

(literal: y is not centred, as in the paper's formula). Pairs are marked with the bands of
`classify_pairs` for the model's head dim, base and training length: "activated" (π/L < θ < 2π/L)
and "low" (θ ≤ π/L), the ones `hope-rope` reports and HoPE makes position independent.
"""

from __future__ import annotations

import math

import torch
from tqdm import tqdm

from megatron_hope.eval.common import generator
from megatron_hope.rope.frequencies import PairBand, classify_pairs

DEFAULT_SAMPLES = 64
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


def last_query_profile(layers) -> tuple[torch.Tensor, torch.Tensor]:
    """From one batch's captured layers: (components summed over batch, layers, heads
    `[d/2, s]`, per-layer logits summed over batch and heads `[layers, s]`)."""
    components = None
    per_layer = []
    for qk in layers:
        parts = pair_components(qk.query[:, :, -1], qk.key, qk.scale)  # [b, h, d/2, s]
        summed = parts.sum(dim=(0, 1))
        components = summed if components is None else components + summed
        per_layer.append(parts.sum(dim=(0, 1, 2)))
    return components, torch.stack(per_layer)


def pair_bands(scorer) -> list[str]:
    """Band of each pair for the scorer's head dim, base and training length ("?" unknown)."""
    head_dim = scorer.info.get("kv_channels")
    base = scorer.info.get("rotary_base")
    if not head_dim or not base:
        return ["?"] * (len(scorer.inv_freq) if scorer.inv_freq is not None else 0)
    return [band.value for band in classify_pairs(int(head_dim), float(base),
                                                  scorer.train_length)]


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
    results = []
    for length in lengths:
        tokens = random_token_inputs(samples, length, pool, start_id, seed)
        components = per_layer = None
        heads = 0
        for start in tqdm(range(0, samples, batch_size), desc=f"attention {length}",
                          disable=not progress):
            _, layers = scorer.capture_qk(tokens[start: start + batch_size])
            if not layers:
                raise ValueError("attention: no attention inputs were captured; is this a "
                                 "supported model (megatron local spec, HF sdpa/eager)?")
            parts, layer_logits = last_query_profile(layers)
            components = parts if components is None else components + parts
            per_layer = layer_logits if per_layer is None else per_layer + layer_logits
            heads = layers[0].query.shape[1]
        count = samples * heads
        components = components / (count * per_layer.shape[0])
        per_layer = per_layer / count
        logits = components.sum(dim=0)
        group_vaf = {}
        for band in (PairBand.ACTIVATED.value, PairBand.LOW.value, PairBand.HIGH.value):
            chosen = [i for i, b in enumerate(bands) if b == band]
            group_vaf[band] = vaf(components[chosen].sum(0), logits) if chosen else None
        results.append({
            "length": length,
            "logits": logits.tolist(),
            "per_layer_logits": per_layer.tolist(),
            "components": components.tolist(),
            "vaf": [vaf(component, logits) for component in components],
            "band_vaf": group_vaf,
        })
    return {"lengths": lengths, "bands": bands, "theta": theta, "samples": samples,
            "seed": seed, "query_position": "last", "train_length": scorer.train_length,
            "head_dim": 2 * len(bands) if bands else None, "results": results,
            "nan_free": all(not math.isnan(v) for r in results for v in r["vaf"])}
