"""megatron-hope: HoPE rotary position encoding for megatron-core."""

__version__ = "0.1.0"
