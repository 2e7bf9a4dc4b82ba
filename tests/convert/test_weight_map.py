"""Pure tensor transforms: exact inverses, and Phi3's block permutation computes eq. 7."""

from __future__ import annotations

import pytest
import torch

from megatron_hope.convert import weight_map
from megatron_hope.convert.weight_map import Geometry
from megatron_hope.rope.layout import qk_row_order, rotary_block_permutation


@pytest.mark.parametrize("heads,groups", [(4, 4), (4, 2), (8, 1)])
def test_qkv_split_merge_round_trip(heads, groups):
    d, hidden = 8, 16
    geo = Geometry(heads, groups, d, 10, 16)
    qkv = torch.randn((heads + 2 * groups) * d, hidden)
    q, k, v = weight_map.qkv_to_hf(qkv, geo)
    assert q.shape == (heads * d, hidden) and k.shape == v.shape == (groups * d, hidden)
    assert torch.equal(weight_map.qkv_from_hf(q, k, v, geo), qkv)
    # Megatron's layout: group g holds its heads' queries, then its key, then its value.
    per = heads // groups
    block = qkv.reshape(groups, per + 2, d, hidden)
    assert torch.equal(k.reshape(groups, d, hidden), block[:, per])
    assert torch.equal(q.reshape(groups, per, d, hidden), block[:, :per])


@pytest.mark.parametrize("model_block", [False, True], ids=["full-width", "rotary-block"])
@pytest.mark.parametrize("target", weight_map.TARGETS)
def test_every_rule_round_trips(target, model_block):
    order = qk_row_order(8, 3, model_block, hf_block=target == "phi3")
    assert (order is None) == (model_block == (target == "phi3"))
    geo = Geometry(4, 2, 8, 10, 16, qk_row_order=order)
    shapes = {"qkv": ((4 + 4) * 8, 32), "fc1": (2 * 24, 32), "vocab": (16, 32), "copy": (32,)}
    for rule in weight_map.RULES[target]:
        tensor = torch.randn(shapes[rule.transform])
        out = weight_map.to_hf(rule, tensor, geo, target)
        assert len(out) == len(rule.hf)
        back = weight_map.from_hf(rule, out, geo, target)
        if rule.transform == "vocab":
            assert out[0].shape[0] == 10
            assert torch.equal(back[:10], tensor[:10]) and not back[10:].any()
        else:
            assert torch.equal(back, tensor), rule.megatron


def _full_width_rotary(x, inv_freq, positions):
    """Megatron's layout: pairs (i, i + d/2), frequency 0 for position-independent pairs."""
    angles = positions[:, None] * torch.cat([inv_freq, inv_freq])[None]
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * angles.cos() + rotated * angles.sin()


def _phi3_rotary(x, inv_freq_block, positions):
    """HF Phi3: rotate-half inside the first 2a dims, the rest passed through."""
    width = 2 * inv_freq_block.numel()
    return torch.cat([_full_width_rotary(x[..., :width], inv_freq_block, positions),
                      x[..., width:]], dim=-1)


def test_block_permutation_reproduces_full_width_attention():
    d, a, s = 16, 3, 12
    inv = torch.tensor([1.0, 0.3, 0.1] + [0.0] * 5)
    positions = torch.arange(s, dtype=torch.float32)
    q, k = torch.randn(s, d, dtype=torch.float64), torch.randn(s, d, dtype=torch.float64)
    reference = _full_width_rotary(q, inv.double(), positions) @ _full_width_rotary(
        k, inv.double(), positions).T
    perm = rotary_block_permutation(d, a)
    phi3 = _phi3_rotary(q[:, perm], inv[:a].double(), positions) @ _phi3_rotary(
        k[:, perm], inv[:a].double(), positions).T
    assert torch.allclose(phi3, reference, atol=1e-12)
    assert sorted(perm.tolist()) == list(range(d))


def test_te_names_map_to_local_names():
    assert weight_map.canonical_name(
        "decoder.layers.3.self_attention.linear_qkv.layer_norm_weight"
    ) == "decoder.layers.3.input_layernorm.weight"
    assert weight_map.canonical_name("decoder.layers.0.mlp.linear_fc1.layer_norm_weight") == (
        "decoder.layers.0.pre_mlp_layernorm.weight")
    assert weight_map.canonical_name("output_layer.weight") == "output_layer.weight"
