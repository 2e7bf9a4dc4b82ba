"""Where a head's rotated dimensions sit: our full-width layout vs a contiguous rotary block.

We (like megatron-core's non-interleaved RoPE and HF's rope type `proportional`) pair dimension i
with i + d/2 across the whole head and give position-independent pairs frequency 0. Models whose
partial rotary rotates only a leading block (HF Phi3: `q[..., :rot]` with pairs (j, j + a);
Megatron-LM's own `--rotary-percent`) need each head's rows reordered; this is the one
definition of that order.
"""

from __future__ import annotations

import torch


def rotary_block_permutation(head_dim: int, rotated_pairs: int) -> torch.Tensor:
    """Row order `[d]` that moves a head from full-width pairing (i, i + d/2) to
    `[rotated block of 2a | pass-through]` with pairing (j, j + a) inside the block.

    `new[j] = old[perm[j]]`: the first halves of the a rotated pairs, their second halves, then
    the position-independent dimensions (their order is free: q and k get the same permutation).
    """
    half = head_dim // 2
    a = rotated_pairs
    order = (list(range(a)) + list(range(half, half + a)) + list(range(a, half))
             + list(range(half + a, head_dim)))
    return torch.tensor(order, dtype=torch.long)


def qk_row_order(head_dim: int, rotated_pairs: int, model_block: bool,
                 hf_block: bool) -> torch.Tensor | None:
    """Row order `[d]` of every q/k head from a Megatron model to an HF target (`hf[j] =
    megatron[order[j]]`); None where both pair the same way.

    `model_block`: the model rotates a leading block (`PositionEncodingConfig.rotary_block`);
    `hf_block`: the target does (Phi3), rather than pairing across the full head (Llama).
    """
    if model_block == hf_block:
        return None
    order = rotary_block_permutation(head_dim, rotated_pairs)
    return order if hf_block else torch.argsort(order)
