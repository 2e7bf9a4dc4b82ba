"""HoPE plugged into other training stacks (Megatron-LM's own loop: `megatron_lm`)."""
