"""The position-encoding settings of a run, validated once and stored with its checkpoints."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from megatron_hope.rope.frequencies import (
    POSITION_ENCODING_TYPES,
    position_encoding_inv_freq,
    rotary_percent_inv_freq,
    rotated_pair_count,
)

ROTARY_TYPES = tuple(kind for kind in POSITION_ENCODING_TYPES if kind != "none")
"""Types that go through a rotary module (NoPE skips it entirely)."""


@dataclass(frozen=True)
class PositionEncodingConfig:
    """Which position encoding a model uses and the numbers that define it."""

    position_embedding_type: str = "hope"
    """One of hope, rope, p-rope, none, ab1, ab2, ab3 (`--position-embedding-type`)."""

    kv_channels: int = 64
    """Head dimension d: the rotary module spans all of it (`--kv-channels`)."""

    rotary_base: float = 10000.0
    """RoPE base b: pair i turns at b^(-2i/d) (`--rotary-base`)."""

    hope_train_length: int | None = None
    """Training length L of eq. 6; hope and ab1-ab3 keep pairs by it (`--hope-train-length`)."""

    rope_fraction: float | None = None
    """p-RoPE only: the fraction of pairs, highest frequencies first, that rotate
    (`--rope-fraction`)."""

    rotary_percent: float = 1.0
    """`rope` only: Megatron-LM's `--rotary-percent` p. RoPE over the head's first int(p d)
    dimensions with its frequencies re-spread over them, pairs (j, j + a) inside that block
    (`rotary_block`). Read from Megatron-LM's RoPE runs so they export and continue as what they
    are; it is not HoPE (`rotary_percent_inv_freq`)."""

    def __post_init__(self) -> None:
        if self.position_embedding_type not in POSITION_ENCODING_TYPES:
            raise ValueError(
                f"--position-embedding-type {self.position_embedding_type!r} is not one of "
                f"{', '.join(POSITION_ENCODING_TYPES)}"
            )
        if self.rope_fraction is not None and self.position_embedding_type != "p-rope":
            raise ValueError(
                f"--rope-fraction ({self.rope_fraction}) only applies to "
                f"--position-embedding-type p-rope, not {self.position_embedding_type}"
            )
        if self.rotary_percent != 1.0 and self.position_embedding_type != "rope":
            raise ValueError(
                f"--rotary-percent ({self.rotary_percent}) re-spreads RoPE's frequencies over part "
                f"of the head; --position-embedding-type {self.position_embedding_type} decides "
                "which pairs rotate itself: drop --rotary-percent (p-RoPE's fraction is "
                "--rope-fraction)"
            )
        # Computing the frequencies once validates every combination with one set of messages.
        self.inv_freq()

    @property
    def uses_rotary(self) -> bool:
        return self.position_embedding_type in ROTARY_TYPES

    @property
    def rotary_block(self) -> bool:
        """The rotated pairs sit in a leading block of the head, pairs (j, j + a) as Megatron-LM's
        `--rotary-percent` rotates them, instead of our full-width pairs (i, i + d/2)."""
        return self.rotary_percent != 1.0

    def inv_freq(self) -> torch.Tensor:
        """Per-pair frequencies `[kv_channels // 2]`, zeros for position-independent pairs
        (in rotation order; `rotary_block` says where each pair's dimensions sit)."""
        if self.rotary_block:
            return rotary_percent_inv_freq(self.kv_channels, self.rotary_base,
                                           self.rotary_percent)
        return position_encoding_inv_freq(
            self.position_embedding_type,
            self.kv_channels,
            self.rotary_base,
            self.hope_train_length,
            self.rope_fraction,
        )

    @property
    def rotated_pairs(self) -> int:
        return rotated_pair_count(self.inv_freq())

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        if not self.rotary_block:  # the metadata of every full-width model stays as it was
            del values["rotary_percent"]
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PositionEncodingConfig:
        known = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})
