"""HoPE through megatron-core's own rotary application equals the paper's eq. 7.

The expected values are a direct transcription of the paper (eq. 4 per pair, eq. 6 for which
pairs rotate), computed here in float64 without any of the package's helpers.
"""

from __future__ import annotations

import math

import pytest
import torch
from megatron.core.models.common.embeddings.rope_utils import apply_rotary_pos_emb
from megatron.core.transformer.transformer_config import TransformerConfig

from megatron_hope.megatron.rotary import HopeRotaryEmbedding
from megatron_hope.rope.config import PositionEncodingConfig


def paper_hope_theta(d: int, base: float, train_length: int) -> list[float]:
    """Eq. 6: pairs with θ_i ≥ 2π/L keep θ_i = b^(-2i/d); the rest are position independent."""
    theta = [base ** (-2.0 * i / d) for i in range(d // 2)]
    return [t if t >= 2 * math.pi / train_length else 0.0 for t in theta]


def eq7_logits(q: torch.Tensor, k: torch.Tensor, theta: list[float]) -> torch.Tensor:
    """q_m·k_n for all m, n: eq. 4 per rotated pair (pairs (i, i+d/2)) plus q_lᵀk_l (eq. 7).

    q, k: `[s, d]` float64. Returns `[s, s]` indexed [m, n].
    """
    s, d = q.shape
    half = d // 2
    logits = torch.zeros(s, s, dtype=torch.float64)
    positions = torch.arange(s, dtype=torch.float64)
    delta = positions[:, None] - positions[None, :]  # m - n
    for i, t in enumerate(theta):
        q0, q1 = q[:, i], q[:, i + half]
        k0, k1 = k[:, i], k[:, i + half]
        dot = q0[:, None] * k0[None, :] + q1[:, None] * k1[None, :]
        cross = q0[:, None] * k1[None, :] - q1[:, None] * k0[None, :]
        if t == 0.0:
            logits += dot  # position independent: q_lᵀ k_l
        else:
            logits += dot * torch.cos(delta * t) + cross * torch.sin(delta * t)
    return logits


def rotary_config(kv_channels: int) -> TransformerConfig:
    return TransformerConfig(
        num_layers=1, hidden_size=kv_channels, num_attention_heads=1, kv_channels=kv_channels,
        use_cpu_initialization=True,
    )


def megatron_rotate(x: torch.Tensor, rotary: HopeRotaryEmbedding, config) -> torch.Tensor:
    """x `[s, d]` (host) -> rotated `[s, d]` (host) through megatron-core's apply_rotary_pos_emb,
    on the device, where the rotary module puts its frequencies."""
    s, d = x.shape
    freqs = rotary(s)
    on_device = x.cuda(torch.cuda.current_device()).view(s, 1, 1, d)
    return apply_rotary_pos_emb(on_device, freqs, config).view(s, d).cpu()


CASES = [(64, 10000.0, 512), (128, 10000.0, 8192), (64, 10000.0, 1024), (96, 500000.0, 2048)]


@pytest.mark.parametrize("d,base,train_length", CASES)
def test_inv_freq_matches_eq6(single_rank_megatron, d, base, train_length):
    encoding = PositionEncodingConfig("hope", d, base, train_length)
    rotary = HopeRotaryEmbedding(encoding, use_cpu_initialization=True)
    expected = torch.tensor(paper_hope_theta(d, base, train_length), dtype=torch.float32)
    assert rotary.inv_freq.shape == (d // 2,)
    torch.testing.assert_close(rotary.inv_freq, expected, rtol=1e-6, atol=0)
    assert rotary.rotated_pairs == sum(t > 0 for t in expected.tolist())


@pytest.mark.parametrize("d,base,train_length", CASES)
def test_attention_logits_equal_eq7(single_rank_megatron, d, base, train_length):
    torch.manual_seed(0)
    seq = 96
    q = torch.randn(seq, d)
    k = torch.randn(seq, d)
    encoding = PositionEncodingConfig("hope", d, base, train_length)
    rotary = HopeRotaryEmbedding(encoding, use_cpu_initialization=True)
    config = rotary_config(d)
    logits = megatron_rotate(q, rotary, config) @ megatron_rotate(k, rotary, config).T
    expected = eq7_logits(q.double(), k.double(), paper_hope_theta(d, base, train_length))
    torch.testing.assert_close(logits.double(), expected, rtol=0, atol=1e-4 * math.sqrt(d))


def test_rotated_part_is_relative_and_rest_is_position_free(single_rank_megatron):
    d, base, train_length, seq = 64, 10000.0, 512, 200
    encoding = PositionEncodingConfig("hope", d, base, train_length)
    rotary = HopeRotaryEmbedding(encoding, use_cpu_initialization=True)
    config = rotary_config(d)
    torch.manual_seed(1)
    q = torch.randn(d).expand(seq, d).contiguous()  # the same vector at every position
    k = torch.randn(d).expand(seq, d).contiguous()
    q_rot, k_rot = megatron_rotate(q, rotary, config), megatron_rotate(k, rotary, config)

    theta = paper_hope_theta(d, base, train_length)
    rotated = [i for i, t in enumerate(theta) if t > 0]
    free = [i for i, t in enumerate(theta) if t == 0]
    def dims(pairs):
        return pairs + [i + d // 2 for i in pairs]

    # Position-independent dimensions pass through bit for bit.
    assert torch.equal(q_rot[:, dims(free)], q[:, dims(free)])
    assert torch.equal(k_rot[:, dims(free)], k[:, dims(free)])
    free_logits = q_rot[:, dims(free)] @ k_rot[:, dims(free)].T
    assert torch.allclose(free_logits, free_logits[0, 0].expand_as(free_logits), atol=1e-4)

    # The rotated part depends on m - n only: every diagonal of the logit matrix is constant.
    high = (q_rot[:, dims(rotated)] @ k_rot[:, dims(rotated)].T).double()
    for offset in (-150, -37, 0, 5, 120):
        diagonal = torch.diagonal(high, offset=offset)
        assert torch.allclose(diagonal, diagonal[0].expand_as(diagonal), atol=1e-3)
    # ... and it does vary with m - n (it is not position independent).
    assert high[0].std() > 1e-2


def test_rope_type_is_upstream_rope(single_rank_megatron):
    """`rope` through our module is megatron-core's own full-width RoPE, bit for bit."""
    from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding

    ours = HopeRotaryEmbedding(PositionEncodingConfig("rope", 64, 10000.0, 512),
                               use_cpu_initialization=True)
    upstream = RotaryEmbedding(kv_channels=64, rotary_percent=1.0, rotary_base=10000,
                               use_cpu_initialization=True)
    assert torch.equal(ours.inv_freq, upstream.inv_freq)
    assert torch.equal(ours(128), upstream(128))


def rotary_percent_logits(q: torch.Tensor, k: torch.Tensor, base: float,
                          rotary_percent: float) -> torch.Tensor:
    """Megatron-LM's `--rotary-percent` p as its docs define it, in float64: the head's first
    r = int(p d) dims carry RoPE with b^(-2j/r); a = ceil(r/2) pairs (j, j + a); the rest pass."""
    s, d = q.shape
    width = int(d * rotary_percent)
    a = (width + 1) // 2
    positions = torch.arange(s, dtype=torch.float64)
    delta = positions[:, None] - positions[None, :]
    logits = q[:, 2 * a:] @ k[:, 2 * a:].T
    for j in range(a):
        t = base ** (-2.0 * j / width)
        q0, q1, k0, k1 = q[:, j], q[:, j + a], k[:, j], k[:, j + a]
        dot = q0[:, None] * k0[None, :] + q1[:, None] * k1[None, :]
        cross = q0[:, None] * k1[None, :] - q1[:, None] * k0[None, :]
        logits += dot * torch.cos(delta * t) + cross * torch.sin(delta * t)
    return logits


@pytest.mark.parametrize("d,rotary_percent", [(64, 0.5), (16, 0.6), (128, 0.25)])
def test_rotary_percent_is_upstreams_block_rope(single_rank_megatron, d, rotary_percent):
    """Megatron-LM's RoPE over a `--rotary-percent` block (read from its checkpoints) is
    megatron-core's own module bit for bit, and its logits are the block RoPE's definition;
    `inv_freq()` (what the HF export writes) lists the same frequencies."""
    from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding

    encoding = PositionEncodingConfig("rope", d, 10000.0, rotary_percent=rotary_percent)
    ours = HopeRotaryEmbedding(encoding, use_cpu_initialization=True)
    upstream = RotaryEmbedding(kv_channels=d, rotary_percent=rotary_percent, rotary_base=10000,
                               use_cpu_initialization=True)
    assert torch.equal(ours.inv_freq, upstream.inv_freq) and torch.equal(ours(96), upstream(96))
    a = upstream.inv_freq.numel()
    assert torch.equal(encoding.inv_freq()[:a], upstream.inv_freq.cpu())
    assert encoding.rotated_pairs == a and not encoding.inv_freq()[a:].any()
    torch.manual_seed(0)
    q, k = torch.randn(96, d), torch.randn(96, d)
    config = rotary_config(d)
    logits = megatron_rotate(q, ours, config) @ megatron_rotate(k, ours, config).T
    expected = rotary_percent_logits(q.double(), k.double(), 10000.0, rotary_percent)
    torch.testing.assert_close(logits.double(), expected, rtol=0, atol=1e-4 * math.sqrt(d))


def test_rotary_percent_belongs_to_rope_only():
    with pytest.raises(ValueError, match=r"--rotary-percent .* drop --rotary-percent"):
        PositionEncodingConfig("hope", 64, 10000.0, 512, rotary_percent=0.5)
    with pytest.raises(ValueError, match=r"--rotary-percent \(0.01\) rotates .* = 0"):
        PositionEncodingConfig("rope", 64, 10000.0, rotary_percent=0.01)
    with pytest.raises(ValueError, match=r"must be in \(0, 1\]"):
        PositionEncodingConfig("rope", 64, 10000.0, rotary_percent=1.5)
    full = PositionEncodingConfig("rope", 64, 10000.0)
    assert "rotary_percent" not in full.to_dict()  # old metadata reads and compares unchanged
    block = PositionEncodingConfig("rope", 64, 10000.0, rotary_percent=0.5)
    assert PositionEncodingConfig.from_dict(block.to_dict()) == block


def test_none_has_no_rotary_module():
    with pytest.raises(ValueError, match="position_embedding_type='none'"):
        HopeRotaryEmbedding(PositionEncodingConfig("none", 64, 10000.0, 512))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="TE fused RoPE needs a CUDA GPU")
def test_te_fused_rope_equals_unfused(single_rank_megatron):
    pytest.importorskip("transformer_engine", reason="Transformer Engine is in the GPU image only")
    d, seq = 128, 256
    encoding = PositionEncodingConfig("hope", d, 10000.0, 8192)
    rotary = HopeRotaryEmbedding(encoding).cuda()
    x = torch.randn(seq, 2, 4, d, device="cuda")
    freqs = rotary(seq)
    unfused = apply_rotary_pos_emb(x, freqs, rotary_config(d))
    fused_config = rotary_config(d)
    fused_config.apply_rope_fusion = True
    fused = apply_rotary_pos_emb(x, freqs, fused_config)
    torch.testing.assert_close(fused, unfused, rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="HybridModel builds TE norms: GPU only")
def test_hybrid_model_uses_hope_frequencies(single_rank_megatron):
    from megatron_hope.megatron.hybrid import hope_hybrid_model_class, hybrid_model_available

    if not hybrid_model_available():
        pytest.skip("needs megatron-core >= 0.19 and Transformer Engine")
    from megatron.core.models.hybrid.hybrid_layer_specs import hybrid_stack_spec
    from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

    model_parallel_cuda_manual_seed(1)
    encoding = PositionEncodingConfig("hope", 64, 10000.0, 512)
    config = TransformerConfig(num_layers=4, hidden_size=256, num_attention_heads=4)
    model = hope_hybrid_model_class()(config, hybrid_stack_spec, 1024, 512, encoding,
                                      hybrid_layer_pattern="*-*-")
    expected = torch.tensor(paper_hope_theta(64, 10000.0, 512), dtype=torch.float32)
    torch.testing.assert_close(model.rotary_pos_emb.inv_freq.cpu(), expected, rtol=1e-6, atol=0)


def test_hybrid_model_unavailable_is_a_clear_error():
    from megatron_hope.megatron.hybrid import hope_hybrid_model_class, hybrid_model_available

    if hybrid_model_available():
        pytest.skip("HybridModel and Transformer Engine are available here")
    with pytest.raises(ValueError, match="Transformer Engine"):
        hope_hybrid_model_class()
