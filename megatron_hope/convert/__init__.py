"""Megatron <-> HuggingFace checkpoints with exact HoPE (`hope-convert`).

`export` writes a `hope-pretrain` checkpoint as a stock `LlamaForCausalLM` (rope type
`proportional`) or `Phi3ForCausalLM` (partial rotary, permuted q/k rows); `import_hf` goes back
to a Megatron checkpoint. `weight_map` holds the name table and the tensor transforms.
"""
