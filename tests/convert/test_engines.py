"""--target auto and the serving engines' config fields, checked without the engines.

PYTHONPATH=. python -m pytest tests/convert/test_engines.py -q
"""

from __future__ import annotations

import pytest
import torch

from megatron_hope.convert.engines import (
    ENGINE_FIELDS,
    REACH,
    choose_target,
    missing_fields,
    reach_key,
)
from megatron_hope.convert.hf_config import build_hf_config
from megatron_hope.convert.model_card import gguf_safe_name
from megatron_hope.megatron.model import ModelArchitecture
from megatron_hope.rope.config import PositionEncodingConfig
from megatron_hope.rope.scaling import RopeScaling


def arch(kind="hope", bias=False, kv_channels=None, rope_fraction=None):
    encoding = PositionEncodingConfig(kind, kv_channels or 16, 10000.0,
                                      64 if kind == "hope" else None, rope_fraction)
    return ModelArchitecture(
        num_layers=2, hidden_size=64, num_attention_heads=4, seq_length=64, vocab_size=100,
        num_query_groups=2, position_encoding=encoding, swiglu=True, normalization="RMSNorm",
        add_bias_linear=bias, kv_channels=kv_channels)


@pytest.mark.parametrize("model,scaling,expected", [
    (arch("hope"), None, ("phi3", "phi3")),
    (arch("hope"), "yarn:4", ("phi3", "phi3")),
    (arch("p-rope", rope_fraction=0.5), "linear:2", ("phi3", "phi3")),
    (arch("rope"), None, ("llama", "llama-rope")),
    (arch("rope"), "yarn:4", ("llama", "llama-rope")),
    (arch("none"), None, ("llama", "llama-proportional")),        # Phi3 needs a rotated pair
    (arch("hope", bias=True), None, ("llama", "llama-proportional")),  # Phi3 has no biases
])
def test_auto_picks_the_widest_exact_target(model, scaling, expected):
    target, why = choose_target(model, RopeScaling.parse(scaling))
    config, _ = build_hf_config(model, target, 100, 2, None, torch.float32,
                                RopeScaling.parse(scaling))
    assert (target, reach_key(target, config)) == expected
    assert why.startswith(f"--target auto: {target} (") and "\n" not in why
    assert all(engine in why for engine in REACH[expected[1]])


def test_proportional_reaches_fewer_engines_than_phi3():
    assert set(REACH["llama-proportional"]) < set(REACH["phi3"]) < set(REACH["llama-rope"])
    assert "llama.cpp" not in REACH["llama-proportional"]


@pytest.mark.parametrize("engine,target", sorted(ENGINE_FIELDS))
@pytest.mark.parametrize("kind", ["hope", "rope", "p-rope"])
def test_config_has_every_field_the_engine_reads(engine, target, kind):
    """Required keys and silently defaulted ones (a missing rope_theta or partial_rotary_factor
    would run another model without an error)."""
    model = arch(kind, rope_fraction=0.5 if kind == "p-rope" else None)
    config, _ = build_hf_config(model, target, 100, 2, 2, torch.float32, bos_token_id=1)
    assert missing_fields(config, engine, target) == []
    if target == "phi3":  # what llama.cpp / TensorRT-LLM / vLLM derive the rotary width from
        assert config["hidden_size"] // config["num_attention_heads"] == 16
        assert int(config["partial_rotary_factor"] * 64) // 4 == 2 * model.position_encoding\
            .rotated_pairs


def test_missing_field_is_reported():
    config, _ = build_hf_config(arch(), "phi3", 100, 2, None, torch.float32)
    del config["partial_rotary_factor"], config["original_max_position_embeddings"]
    assert missing_fields(config, "llama.cpp", "phi3") == [
        "original_max_position_embeddings", "partial_rotary_factor"]


@pytest.mark.parametrize("name,safe", [("hf-phi3", "hf-phi_3"),
                                       ("HoPE-Phi-3-mini", "HoPE-phi_3-mini"),
                                       ("hope-125m", "hope-125m")])
def test_gguf_name_avoids_llama_cpps_phi3_vocabulary_special_case(name, safe):
    assert gguf_safe_name(name) == safe
