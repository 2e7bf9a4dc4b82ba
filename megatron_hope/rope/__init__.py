"""Pure rotary-frequency math for RoPE, HoPE, p-RoPE, NoPE and the HoPE ablations (torch only).

`position_encoding_inv_freq` is the one function every consumer (megatron-core rotary module,
HF export, analysis tools, the `hope-rope` CLI) calls; `PositionEncodingConfig` validates a run's
settings once.
"""

from megatron_hope.rope.config import ROTARY_TYPES, PositionEncodingConfig
from megatron_hope.rope.frequencies import (
    POSITION_ENCODING_TYPES,
    PairBand,
    classify_pairs,
    hope_rotated_pairs,
    p_rope_kept_pairs,
    position_encoding_inv_freq,
    rope_inv_freq,
    rope_inv_freq_float64,
    rotated_pair_count,
)

__all__ = [
    "POSITION_ENCODING_TYPES",
    "ROTARY_TYPES",
    "PairBand",
    "PositionEncodingConfig",
    "classify_pairs",
    "hope_rotated_pairs",
    "p_rope_kept_pairs",
    "position_encoding_inv_freq",
    "rope_inv_freq",
    "rope_inv_freq_float64",
    "rotated_pair_count",
]
