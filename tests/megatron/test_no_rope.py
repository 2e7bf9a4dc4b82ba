"""`--no-rope-freq`: the marked layers see no rotary, whatever the rotary type; the others do.

Checked on the attention logits of a real `HopeGPTModel`. The input repeats one token, so every
layer's input is the same vector at every position (attention over identical values returns
that value), and a layer's logits q_m·k_n then vary with m - n only through rotary: a NoPE
layer's logit matrix is constant, a rotary layer's is not.
"""

from __future__ import annotations

import pytest
import torch

from megatron_hope.megatron.model import ModelArchitecture, build_model, build_transformer_config
from megatron_hope.megatron.no_rope import parse_no_rope_freq
from megatron_hope.rope.config import PositionEncodingConfig

SEQ = 32


def attention_logits_per_layer(encoding_type: str, no_rope_freq) -> list[torch.Tensor]:
    arch = ModelArchitecture(
        num_layers=4, hidden_size=64, num_attention_heads=2, vocab_size=128, seq_length=SEQ,
        position_encoding=PositionEncodingConfig(encoding_type, 32, 10000.0, SEQ,
                                                 0.5 if encoding_type == "p-rope" else None),
        no_rope_freq=parse_no_rope_freq(no_rope_freq, 4),
    )
    torch.manual_seed(0)
    model = build_model(arch, build_transformer_config(arch))
    model.cuda(torch.cuda.current_device()).eval()
    logits = []

    def capture(module, args, kwargs):
        query, key = args[0], args[1]  # [s, b, heads, d], after rotary
        logits.append(torch.einsum("mhd,nhd->hmn", query[:, 0].float(), key[:, 0].float()).cpu())

    for layer in model.decoder.layers:
        layer.self_attention.core_attention.register_forward_pre_hook(capture, with_kwargs=True)
    device = torch.cuda.current_device()
    tokens = torch.full((1, SEQ), 7, dtype=torch.long, device=device)
    positions = torch.arange(SEQ, device=device).unsqueeze(0)
    with torch.no_grad():
        model(tokens, positions, attention_mask=None)
    return logits


def is_position_free(logits: torch.Tensor) -> bool:
    return torch.allclose(logits, logits[:, :1, :1].expand_as(logits), atol=1e-5)


@pytest.mark.parametrize("encoding_type", ["rope", "hope", "p-rope", "ab1"])
def test_marked_layers_see_no_rotary(single_rank_megatron, encoding_type):
    logits = attention_logits_per_layer(encoding_type, "([0]+[1])*2")
    assert [is_position_free(layer) for layer in logits] == [False, True, False, True]


def test_without_the_flag_every_layer_rotates(single_rank_megatron):
    logits = attention_logits_per_layer("hope", None)
    assert not any(is_position_free(layer) for layer in logits)


@pytest.mark.parametrize("value, pattern", [
    ("4", (0, 0, 0, 1, 0, 0, 0, 1)),
    ("([0]*3+[1])*2", (0, 0, 0, 1, 0, 0, 0, 1)),
    ("[1]+[0]*7", (1, 0, 0, 0, 0, 0, 0, 0)),
    (None, None),
])
def test_patterns_are_megatron_lms(value, pattern):
    assert parse_no_rope_freq(value, 8) == pattern


@pytest.mark.parametrize("value, message", [
    ("3", "positive divisor of --num-layers"),
    ("[0]*7", "gives 7 layers"),
    ("__import__('os').system('true')", "only lists of 0/1"),
    ("[2]*8", "must be 0"),
    ("[0]*10**12", "only lists of 0/1"),
    ("[0]*1000000000000", "more than"),
])
def test_bad_patterns_name_the_flag(value, message):
    with pytest.raises(ValueError, match="--no-rope-freq") as error:
        parse_no_rope_freq(value, 8)
    assert message in str(error.value)


def test_pattern_survives_the_checkpoint_metadata_round_trip():
    """hope_run.json stores the architecture as JSON, which gives the pattern back as a list."""
    import dataclasses
    import json

    arch = ModelArchitecture(num_layers=4, hidden_size=64, num_attention_heads=2,
                             position_encoding=PositionEncodingConfig("hope", 32, 10000.0, 256),
                             no_rope_freq=(0, 1, 0, 1))
    values = json.loads(json.dumps(dataclasses.asdict(arch)))
    values["position_encoding"] = arch.position_encoding
    assert ModelArchitecture(**values) == arch
