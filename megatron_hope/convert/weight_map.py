"""Megatron <-> HuggingFace parameter names and the pure tensor transforms between them.

One declarative table per target: `{megatron name template: hf name template(s)}` with the
transform that connects them. Megatron names are the model's state-dict names under the local
spec (`decoder.layers.{i}.input_layernorm.weight`); `TE_ALIASES` lists the Transformer Engine
spec's names for the same tensors, and `CHECKPOINT_KEYS` the keys `dist_checkpointing` stores
them under (megatron-core writes the TE names for both specs, with the layers stacked on a
leading axis).

Transforms (all pure functions of tensors; `to_hf` and `from_hf` are exact inverses):
  copy    the same tensor.
  qkv     Megatron's fused `linear_qkv` rows are grouped per query group:
          `[q_0 .. q_{h/g-1}, k, v]` for each of the g groups, each block `d` rows.
          HF Llama keeps `q_proj`, `k_proj`, `v_proj`; HF Phi3 concatenates `[all q; all k; all v]`.
  fc1     `linear_fc1` with --swiglu is `[gate; up]` (gate first, as megatron-core's GLU chunks);
          Llama splits it into `gate_proj`/`up_proj`, Phi3 keeps `gate_up_proj` as is.
  vocab   embedding / output rows: Megatron pads the vocabulary for TP; HF keeps the tokenizer's.

Phi3's partial rotary rotates a contiguous block of each head (`q[..., :2a]`, rotate-half inside
it) and passes the rest through; we rotate the full head with pairs (i, i + d/2) and zero
frequencies for the position-independent pairs (eq. 7). `Geometry.qk_row_order`
(`rope.layout.qk_row_order`) reorders each head's q/k rows so that the a rotated pairs form that
block, or, for Megatron-LM's `--rotary-percent` block exported to Llama, the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

LAYER_PREFIX = "decoder.layers.{i}."

CHECKPOINT_KEYS: dict[str, str] = {
    # model state-dict name (local spec) -> dist_checkpointing key (layers stacked on axis 0)
    "embedding.word_embeddings.weight": "embedding.word_embeddings.weight",
    "decoder.layers.{i}.input_layernorm.weight":
        "decoder.layers.self_attention.linear_qkv.layer_norm_weight",
    "decoder.layers.{i}.input_layernorm.bias":
        "decoder.layers.self_attention.linear_qkv.layer_norm_bias",
    "decoder.layers.{i}.self_attention.linear_qkv.weight":
        "decoder.layers.self_attention.linear_qkv.weight",
    "decoder.layers.{i}.self_attention.linear_qkv.bias":
        "decoder.layers.self_attention.linear_qkv.bias",
    "decoder.layers.{i}.self_attention.linear_proj.weight":
        "decoder.layers.self_attention.linear_proj.weight",
    "decoder.layers.{i}.self_attention.linear_proj.bias":
        "decoder.layers.self_attention.linear_proj.bias",
    "decoder.layers.{i}.pre_mlp_layernorm.weight":
        "decoder.layers.mlp.linear_fc1.layer_norm_weight",
    "decoder.layers.{i}.pre_mlp_layernorm.bias": "decoder.layers.mlp.linear_fc1.layer_norm_bias",
    "decoder.layers.{i}.mlp.linear_fc1.weight": "decoder.layers.mlp.linear_fc1.weight",
    "decoder.layers.{i}.mlp.linear_fc1.bias": "decoder.layers.mlp.linear_fc1.bias",
    "decoder.layers.{i}.mlp.linear_fc2.weight": "decoder.layers.mlp.linear_fc2.weight",
    "decoder.layers.{i}.mlp.linear_fc2.bias": "decoder.layers.mlp.linear_fc2.bias",
    "decoder.final_layernorm.weight": "decoder.final_layernorm.weight",
    "decoder.final_layernorm.bias": "decoder.final_layernorm.bias",
    "output_layer.weight": "output_layer.weight",
}

TE_ALIASES: dict[str, str] = {
    # Transformer Engine spec name -> local spec name (TE fuses the norms into the linears)
    "decoder.layers.{i}.self_attention.linear_qkv.layer_norm_weight":
        "decoder.layers.{i}.input_layernorm.weight",
    "decoder.layers.{i}.self_attention.linear_qkv.layer_norm_bias":
        "decoder.layers.{i}.input_layernorm.bias",
    "decoder.layers.{i}.mlp.linear_fc1.layer_norm_weight":
        "decoder.layers.{i}.pre_mlp_layernorm.weight",
    "decoder.layers.{i}.mlp.linear_fc1.layer_norm_bias":
        "decoder.layers.{i}.pre_mlp_layernorm.bias",
}


@dataclass(frozen=True)
class Rule:
    """One Megatron tensor and the HF tensor(s) it becomes."""

    megatron: str
    """Megatron template (local spec name; `{i}` is the layer)."""
    hf: tuple[str, ...]
    """HF template(s); several when the transform splits the tensor."""
    transform: str = "copy"
    """copy | qkv | fc1 | vocab"""
    optional: bool = False
    """Present only with biases (--add-bias-linear) or untied embeddings."""

    @property
    def per_layer(self) -> bool:
        return "{i}" in self.megatron


LLAMA_RULES: tuple[Rule, ...] = (
    Rule("embedding.word_embeddings.weight", ("model.embed_tokens.weight",), "vocab"),
    Rule("decoder.layers.{i}.input_layernorm.weight",
         ("model.layers.{i}.input_layernorm.weight",)),
    Rule("decoder.layers.{i}.self_attention.linear_qkv.weight",
         ("model.layers.{i}.self_attn.q_proj.weight", "model.layers.{i}.self_attn.k_proj.weight",
          "model.layers.{i}.self_attn.v_proj.weight"), "qkv"),
    Rule("decoder.layers.{i}.self_attention.linear_qkv.bias",
         ("model.layers.{i}.self_attn.q_proj.bias", "model.layers.{i}.self_attn.k_proj.bias",
          "model.layers.{i}.self_attn.v_proj.bias"), "qkv", optional=True),
    Rule("decoder.layers.{i}.self_attention.linear_proj.weight",
         ("model.layers.{i}.self_attn.o_proj.weight",)),
    Rule("decoder.layers.{i}.self_attention.linear_proj.bias",
         ("model.layers.{i}.self_attn.o_proj.bias",), optional=True),
    Rule("decoder.layers.{i}.pre_mlp_layernorm.weight",
         ("model.layers.{i}.post_attention_layernorm.weight",)),
    Rule("decoder.layers.{i}.mlp.linear_fc1.weight",
         ("model.layers.{i}.mlp.gate_proj.weight", "model.layers.{i}.mlp.up_proj.weight"), "fc1"),
    Rule("decoder.layers.{i}.mlp.linear_fc1.bias",
         ("model.layers.{i}.mlp.gate_proj.bias", "model.layers.{i}.mlp.up_proj.bias"), "fc1",
         optional=True),
    Rule("decoder.layers.{i}.mlp.linear_fc2.weight", ("model.layers.{i}.mlp.down_proj.weight",)),
    Rule("decoder.layers.{i}.mlp.linear_fc2.bias", ("model.layers.{i}.mlp.down_proj.bias",),
         optional=True),
    Rule("decoder.final_layernorm.weight", ("model.norm.weight",)),
    Rule("output_layer.weight", ("lm_head.weight",), "vocab", optional=True),
)

PHI3_RULES: tuple[Rule, ...] = (
    Rule("embedding.word_embeddings.weight", ("model.embed_tokens.weight",), "vocab"),
    Rule("decoder.layers.{i}.input_layernorm.weight",
         ("model.layers.{i}.input_layernorm.weight",)),
    Rule("decoder.layers.{i}.self_attention.linear_qkv.weight",
         ("model.layers.{i}.self_attn.qkv_proj.weight",), "qkv"),
    Rule("decoder.layers.{i}.self_attention.linear_proj.weight",
         ("model.layers.{i}.self_attn.o_proj.weight",)),
    Rule("decoder.layers.{i}.pre_mlp_layernorm.weight",
         ("model.layers.{i}.post_attention_layernorm.weight",)),
    Rule("decoder.layers.{i}.mlp.linear_fc1.weight", ("model.layers.{i}.mlp.gate_up_proj.weight",)),
    Rule("decoder.layers.{i}.mlp.linear_fc2.weight", ("model.layers.{i}.mlp.down_proj.weight",)),
    Rule("decoder.final_layernorm.weight", ("model.norm.weight",)),
    Rule("output_layer.weight", ("lm_head.weight",), "vocab", optional=True),
)

RULES = {"llama": LLAMA_RULES, "phi3": PHI3_RULES}
TARGETS = tuple(RULES)


def canonical_name(name: str) -> str:
    """A Megatron state-dict name in the local spec's naming (TE names are mapped)."""
    parts = name.split(".")
    if len(parts) > 2 and parts[0] == "decoder" and parts[1] == "layers" and parts[2].isdigit():
        template = ".".join([*parts[:2], "{i}", *parts[3:]])
        if template in TE_ALIASES:
            return TE_ALIASES[template].replace("{i}", parts[2])
    return name


@dataclass(frozen=True)
class Geometry:
    """What the transforms need to know about the model."""

    num_attention_heads: int
    num_query_groups: int
    head_dim: int
    vocab_size: int
    """The tokenizer's vocabulary (HF side)."""
    padded_vocab_size: int
    """Megatron's padded vocabulary (rows in the checkpoint)."""
    qk_row_order: torch.Tensor | None = None
    """`[head_dim]`: the HF row order of every q/k head (`rope.layout.qk_row_order`); None
    means the rows stay in Megatron's order."""

    @property
    def heads_per_group(self) -> int:
        return self.num_attention_heads // self.num_query_groups


def _permute_heads(rows: torch.Tensor, head_dim: int, perm: torch.Tensor) -> torch.Tensor:
    """Apply `perm` to every head of a `[heads * d, ...]` tensor."""
    shape = rows.shape
    heads = rows.reshape(shape[0] // head_dim, head_dim, *shape[1:])
    return heads[:, perm.to(rows.device)].reshape(shape)


def qkv_to_hf(qkv: torch.Tensor, geo: Geometry) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Megatron `linear_qkv` `[g * (h/g + 2) * d, ...]` -> q `[h*d, ...]`, k, v `[g*d, ...]`."""
    d, g, per = geo.head_dim, geo.num_query_groups, geo.heads_per_group
    rest = qkv.shape[1:]
    grouped = qkv.reshape(g, per + 2, d, *rest)
    q = grouped[:, :per].reshape(g * per * d, *rest)
    k = grouped[:, per].reshape(g * d, *rest)
    v = grouped[:, per + 1].reshape(g * d, *rest)
    return q.contiguous(), k.contiguous(), v.contiguous()


def qkv_from_hf(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, geo: Geometry) -> torch.Tensor:
    """Inverse of `qkv_to_hf`."""
    d, g, per = geo.head_dim, geo.num_query_groups, geo.heads_per_group
    rest = q.shape[1:]
    grouped = torch.cat(
        [q.reshape(g, per, d, *rest), k.reshape(g, 1, d, *rest), v.reshape(g, 1, d, *rest)], dim=1)
    return grouped.reshape(g * (per + 2) * d, *rest).contiguous()


def to_hf(rule: Rule, tensor: torch.Tensor, geo: Geometry, target: str) -> list[torch.Tensor]:
    """The HF tensor(s) for one Megatron tensor, in the order of `rule.hf`."""
    if rule.transform == "copy":
        return [tensor]
    if rule.transform == "vocab":
        return [tensor[: geo.vocab_size].contiguous()]
    if rule.transform == "fc1":
        gate, up = torch.chunk(tensor, 2, dim=0)
        return [gate.contiguous(), up.contiguous()]
    if rule.transform == "qkv":
        q, k, v = qkv_to_hf(tensor, geo)
        if geo.qk_row_order is not None:
            order = geo.qk_row_order
            q, k = _permute_heads(q, geo.head_dim, order), _permute_heads(k, geo.head_dim, order)
        if target == "phi3":
            return [torch.cat([q, k, v], dim=0)]
        return [q, k, v]
    raise ValueError(f"unknown transform {rule.transform!r}")


def from_hf(rule: Rule, tensors: list[torch.Tensor], geo: Geometry, target: str) -> torch.Tensor:
    """The Megatron tensor for the HF tensor(s) of `rule` (inverse of `to_hf`); vocabulary rows
    beyond the HF vocabulary are zero-filled up to the padded size."""
    if rule.transform == "copy":
        return tensors[0]
    if rule.transform == "vocab":
        [rows] = tensors
        if rows.shape[0] == geo.padded_vocab_size:
            return rows
        padded = rows.new_zeros((geo.padded_vocab_size, *rows.shape[1:]))
        padded[: rows.shape[0]] = rows
        return padded
    if rule.transform == "fc1":
        return torch.cat(tensors, dim=0)
    if rule.transform == "qkv":
        if target == "phi3":
            [fused] = tensors
            d, h, g = geo.head_dim, geo.num_attention_heads, geo.num_query_groups
            q, k, v = torch.split(fused, [h * d, g * d, g * d], dim=0)
        else:
            q, k, v = tensors
        if geo.qk_row_order is not None:
            inverse, d = torch.argsort(geo.qk_row_order), geo.head_dim
            q, k = _permute_heads(q, d, inverse), _permute_heads(k, d, inverse)
        return qkv_from_hf(q, k, v, geo)
    raise ValueError(f"unknown transform {rule.transform!r}")


def expand(template: str, layer: int | None) -> str:
    return template if layer is None else template.replace("{i}", str(layer))
