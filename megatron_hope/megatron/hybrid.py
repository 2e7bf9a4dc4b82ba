"""HoPE in megatron-core's HybridModel (megatron-core >= 0.19, where GPTModel is deprecated).

Upstream's hybrid stack always builds Transformer Engine norms (`HybridStack.final_norm` is a
`TENorm`), so this model runs only where TE is installed (the GPU image). As with
`HopeGPTModel`, only the rotary module changes.

    from megatron.core.models.hybrid.hybrid_layer_specs import hybrid_stack_spec
    model = HopeHybridModel(config, hybrid_stack_spec, vocab_size, 8192, position_encoding,
                            hybrid_layer_pattern="*-" * 32)
"""

from __future__ import annotations

import importlib.util

from megatron_hope.megatron.rotary import HopeRotaryEmbedding
from megatron_hope.rope.config import PositionEncodingConfig


def hybrid_model_available() -> bool:
    """HybridModel exists (megatron-core >= 0.19) and Transformer Engine is importable."""
    return (
        importlib.util.find_spec("megatron.core.models.hybrid") is not None
        and importlib.util.find_spec("transformer_engine") is not None
    )


def hope_hybrid_model_class():
    """`HopeHybridModel`, defined on first use: importing HybridModel needs megatron-core 0.19."""
    global _HOPE_HYBRID_MODEL
    if _HOPE_HYBRID_MODEL is not None:
        return _HOPE_HYBRID_MODEL
    if not hybrid_model_available():
        raise ValueError(
            "HybridModel needs megatron-core >= 0.19 and Transformer Engine (its stack builds TE "
            "norms); use the GPT model class or run in the GPU image"
        )
    from megatron.core.models.hybrid.hybrid_model import HybridModel

    class HopeHybridModel(HybridModel):
        """megatron-core's HybridModel with `HopeRotaryEmbedding` frequencies."""

        def __init__(self, config, hybrid_stack_spec, vocab_size, max_sequence_length,
                     position_encoding: PositionEncodingConfig,
                     seq_len_interpolation_factor: float | None = None, **kwargs) -> None:
            super().__init__(
                config, hybrid_stack_spec, vocab_size, max_sequence_length,
                position_embedding_type="rope" if position_encoding.uses_rotary else "none",
                rotary_percent=1.0, rotary_base=position_encoding.rotary_base,
                seq_len_interpolation_factor=seq_len_interpolation_factor, **kwargs,
            )
            self.position_encoding = position_encoding
            if position_encoding.uses_rotary:
                self.rotary_pos_emb = HopeRotaryEmbedding(
                    position_encoding,
                    seq_len_interpolation_factor=seq_len_interpolation_factor,
                    use_cpu_initialization=config.use_cpu_initialization,
                    cp_group=self.pg_collection.cp,
                )

    _HOPE_HYBRID_MODEL = HopeHybridModel
    return HopeHybridModel


_HOPE_HYBRID_MODEL = None
