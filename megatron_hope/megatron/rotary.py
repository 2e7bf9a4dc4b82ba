"""megatron-core's RotaryEmbedding with HoPE (and its relatives') frequencies.

Only the frequency vector differs from upstream: everything else (the `lru_cache`d forward, the
context-parallel zigzag slicing, packed-sequence handling, `inv_freq` never entering the state
dict, TE's fused kernel through `apply_rotary_pos_emb`) is inherited unchanged. The module always
spans the full head (`rotary_percent=1.0`): position-independent pairs carry frequency 0, which
every rotary path applies as cos 0 = 1, sin 0 = 0, i.e. exactly eq. 7 of the HoPE paper.

The one exception is Megatron-LM's own RoPE over a `--rotary-percent` block (read from its
checkpoints): that is upstream's module with upstream's frequencies, unchanged.
"""

from __future__ import annotations

import torch
from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding

from megatron_hope.rope.config import PositionEncodingConfig


class HopeRotaryEmbedding(RotaryEmbedding):
    """Rotary embedding whose per-pair frequencies come from `PositionEncodingConfig`.

    Args:
        position_encoding: type, head dim, base and training length; must use a rotary module
            (`none` has no rotary embedding at all).
        rotary_interleaved: megatron-core's interleaved pairing (2i, 2i+1) instead of (i, i+d/2).
        seq_len_interpolation_factor: positions divided by this factor (linear interpolation, PI).
        use_cpu_initialization: build `inv_freq` on CPU; megatron-core moves it on first forward.
        cp_group: the context-parallel group (upstream slices the embedding per CP rank).
    """

    def __init__(
        self,
        position_encoding: PositionEncodingConfig,
        rotary_interleaved: bool = False,
        seq_len_interpolation_factor: float | None = None,
        use_cpu_initialization: bool = False,
        cp_group: torch.distributed.ProcessGroup | None = None,
    ) -> None:
        if not position_encoding.uses_rotary:
            raise ValueError(
                f"position_embedding_type={position_encoding.position_embedding_type} has no "
                "rotary embedding; build the model with position_embedding_type='none' instead"
            )
        super().__init__(
            kv_channels=position_encoding.kv_channels,
            rotary_percent=position_encoding.rotary_percent,
            rotary_interleaved=rotary_interleaved,
            seq_len_interpolation_factor=seq_len_interpolation_factor,
            rotary_base=position_encoding.rotary_base,
            use_cpu_initialization=use_cpu_initialization,
            cp_group=cp_group,
        )
        self.position_encoding = position_encoding
        if position_encoding.rotary_block:
            return
        # The one override: upstream's b^(-2i/d) becomes the chosen type's frequencies, with
        # zeros for position-independent pairs (same length d/2, same device and dtype).
        self.inv_freq = position_encoding.inv_freq().to(
            device=self.inv_freq.device, dtype=self.inv_freq.dtype
        )

    @property
    def rotated_pairs(self) -> int:
        return int((self.inv_freq != 0).sum().item())
