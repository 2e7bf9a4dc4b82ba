"""Exported configs: HF's rotary modules rebuild exactly our frequencies (no checkpoint needed)."""

from __future__ import annotations

import math

import pytest
import torch

from megatron_hope.convert.hf_config import (
    RopeScaling,
    build_hf_config,
    check_hf_frequencies,
    exact_rotary_factor,
    hf_rotary_frequencies,
)
from megatron_hope.convert.mcore_checkpoint import ConversionError
from megatron_hope.megatron.model import ModelArchitecture
from megatron_hope.rope.config import PositionEncodingConfig

pytest.importorskip("transformers")


def llama_style(encoding: PositionEncodingConfig, heads: int = 4, **changes):
    values = dict(
        num_layers=1, hidden_size=encoding.kv_channels * heads, num_attention_heads=heads,
        vocab_size=100, seq_length=encoding.hope_train_length or 64,
        position_encoding=encoding, swiglu=True, normalization="RMSNorm",
        add_bias_linear=False)
    return ModelArchitecture(**{**values, **changes})


def test_rounding_trap_is_guarded():
    d, a = 44, 15
    naive = 2 * a / d
    assert int(d * naive) == 2 * a - 1  # what a naive export would make Phi3 rotate
    assert int(d * exact_rotary_factor(a, d, "phi3")) == 2 * a
    encoding = PositionEncodingConfig("p-rope", d, 10000.0, None, a / (d // 2))
    assert encoding.rotated_pairs == a
    for target in ("llama", "phi3"):
        config, rotary = build_hf_config(llama_style(encoding, heads=2), target, 100, 0, 1,
                                         torch.float32)
        check_hf_frequencies(config, rotary)
        inv, _ = hf_rotary_frequencies(config)
        assert int((inv != 0).sum()) == a


@pytest.mark.parametrize("target", ["llama", "phi3"])
def test_hope_frequencies_are_the_papers(target):
    encoding = PositionEncodingConfig("hope", 64, 10000.0, 512)  # README: 16 of 32 pairs
    config, _rotary = build_hf_config(llama_style(encoding), target, 100, 0, 1, torch.float32)
    inv, scaling = hf_rotary_frequencies(config)
    ours = encoding.inv_freq().double()
    want = ours if target == "llama" else ours[:16]
    assert inv.numel() == want.numel() and scaling == 1.0
    assert torch.allclose(inv, want, rtol=1e-6, atol=0)
    if target == "phi3":  # transformers 4.x reads only the top-level fields
        assert config["partial_rotary_factor"] == config["rope_parameters"]["partial_rotary_factor"]
        assert config["rope_theta"] == pytest.approx(10000.0 ** 0.5)
        assert config["pad_token_id"] == 1 and config["original_max_position_embeddings"] == 512


@pytest.mark.parametrize("target", ["llama", "phi3"])
def test_linear_scaling_divides_rotated_frequencies(target):
    encoding = PositionEncodingConfig("hope", 32, 10000.0, 128)
    config, rotary = build_hf_config(llama_style(encoding), target, 100, 0, 1, torch.float32,
                                     RopeScaling.parse("linear:4"))
    check_hf_frequencies(config, rotary)
    inv, scaling = hf_rotary_frequencies(config)
    ours = encoding.inv_freq().double() / 4
    assert torch.allclose(inv, ours[: inv.numel()], rtol=1e-6) and scaling == 1.0


def test_yarn_on_phi3_via_longrope():
    encoding = PositionEncodingConfig("hope", 64, 10000.0, 512)
    config, rotary = build_hf_config(llama_style(encoding), "phi3", 100, 0, 1, torch.float32,
                                     RopeScaling.parse("yarn:8"))
    assert config["rope_parameters"]["rope_type"] == "longrope"
    check_hf_frequencies(config, rotary)
    inv, scaling = hf_rotary_frequencies(config)
    assert scaling == pytest.approx(0.1 * math.log(8) + 1)
    # The fastest pairs extrapolate (unchanged), the slowest kept ones interpolate.
    ours = encoding.inv_freq().double()[:16]
    assert float(inv[0]) == pytest.approx(float(ours[0]), rel=1e-6)
    assert inv[15] < ours[15]


def test_yarn_on_rope_llama_matches_hf_yarn():
    encoding = PositionEncodingConfig("rope", 32, 10000.0)
    config, rotary = build_hf_config(llama_style(encoding), "llama", 100, 0, 1, torch.float32,
                                     RopeScaling.parse("yarn:4:64"))
    assert config["rope_parameters"]["rope_type"] == "yarn"
    check_hf_frequencies(config, rotary)


@pytest.mark.parametrize("text,message", [
    ("ntk:2", "unsupported"), ("linear:0.5", "must be > 1"), ("linear:2:64", "only a factor"),
    ("yarn", "unsupported"),
])
def test_bad_scaling_is_a_clear_error(text, message):
    # The parser is shared with hope-eval (megatron_hope.rope.scaling): a plain ValueError that
    # the export turns into a ConversionError.
    with pytest.raises(ValueError, match=f"--rope-scaling .*{message}"):
        RopeScaling.parse(text)


def test_inexpressible_models_name_what_is_wrong():
    hope = PositionEncodingConfig("hope", 64, 10000.0, 512)
    with pytest.raises(ConversionError, match=r"proportional RoPE.*has no YaRN.*--target phi3"):
        build_hf_config(llama_style(hope), "llama", 100, 0, 1, torch.float32,
                        RopeScaling.parse("yarn:4"))
    nope = PositionEncodingConfig("none", 64, 10000.0)
    with pytest.raises(ConversionError, match=r"NoPE.*use --target llama"):
        build_hf_config(llama_style(nope), "phi3", 100, 0, 1, torch.float32)
    config, rotary = build_hf_config(llama_style(nope), "llama", 100, 0, 1, torch.float32)
    check_hf_frequencies(config, rotary)  # NoPE is proportional with factor 0
    ab3 = PositionEncodingConfig("ab3", 64, 10000.0, 512)
    with pytest.raises(ConversionError, match=r"ab3.*neither --target llama"):
        build_hf_config(llama_style(ab3), "llama", 100, 0, 1, torch.float32)
    with pytest.raises(ConversionError, match="LayerNorm"):
        build_hf_config(llama_style(hope, normalization="LayerNorm"), "llama", 100, 0, 1,
                        torch.float32)
    with pytest.raises(ConversionError, match=r"biases.*--disable-bias-linear"):
        build_hf_config(llama_style(hope, add_bias_linear=True), "phi3", 100, 0, 1, torch.float32)


@pytest.mark.parametrize("target", ["llama", "phi3"])
def test_no_rope_layers_are_a_clear_error(target):
    hope = PositionEncodingConfig("hope", 64, 10000.0, 512)
    arch = llama_style(hope, num_layers=2, no_rope_freq=(0, 1))
    with pytest.raises(ConversionError, match=r"--no-rope-freq layers \[1\]"):
        build_hf_config(arch, target, 100, 0, 1, torch.float32)


@pytest.mark.parametrize("d,rotary_percent", [(64, 0.5), (16, 0.6), (128, 0.3)])
def test_megatron_lm_rotary_percent_configs(d, rotary_percent):
    """Megatron-LM's block RoPE (r = int(p d) dims at b^(-2j/r)), checked against that
    definition: Phi3 rotates the block with base b^(2a/r) (b for even r), Llama's proportional
    RoPE holds the same frequencies at base b^(d/r); YaRN is refused, linear scaling divides."""
    width = int(d * rotary_percent)
    pairs = (width + 1) // 2
    definition = torch.tensor([10000.0 ** (-2.0 * j / width) for j in range(pairs)],
                              dtype=torch.float64)
    encoding = PositionEncodingConfig("rope", d, 10000.0, rotary_percent=rotary_percent)
    for target, theta in (("phi3", 10000.0 ** (2 * pairs / width)),
                          ("llama", 10000.0 ** (d / width))):
        config, rotary = build_hf_config(llama_style(encoding), target, 100, 0, 1, torch.float32)
        check_hf_frequencies(config, rotary)
        assert config["rope_theta"] == pytest.approx(theta, rel=1e-12)
        inv, scaling = hf_rotary_frequencies(config)
        assert scaling == 1.0 and int((inv != 0).sum()) == pairs
        assert torch.allclose(inv[:pairs], definition, rtol=1e-6, atol=0)
        linear, _ = build_hf_config(llama_style(encoding), target, 100, 0, 1, torch.float32,
                                    RopeScaling.parse("linear:2"))
        assert torch.allclose(hf_rotary_frequencies(linear)[0][:pairs], definition / 2, rtol=1e-6)
        with pytest.raises(ConversionError, match="--rope-scaling yarn on a --rotary-percent"):
            build_hf_config(llama_style(encoding), target, 100, 0, 1, torch.float32,
                            RopeScaling.parse("yarn:4"))
