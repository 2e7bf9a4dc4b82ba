"""`position_encoding_inv_freq` against an independent transcription of the HoPE paper.

The reference below is written from the paper (arXiv 2410.21216) with plain `math`, never with the
library's helpers: θ_i = b^(-2i/d) (eq. 2), the bands of section 3.3.2 and the index a of eq. 6.

    PYTHONPATH=. python -m pytest tests/rope/test_frequencies.py -q
"""

from __future__ import annotations

import math

import pytest
import torch

from megatron_hope.rope import (
    POSITION_ENCODING_TYPES,
    PositionEncodingConfig,
    position_encoding_inv_freq,
)

# ---------------------------------------------------------------------------------------------
# Reference: a direct transcription of the paper.
# ---------------------------------------------------------------------------------------------


def paper_theta(d: int, b: float) -> list[float]:
    """θ_i = b^(-2i/d), i = 0..d/2-1 (RoPE, eq. 2)."""
    return [b ** (-2 * i / d) for i in range(d // 2)]


def paper_a(d: int, b: float, L: int) -> int:
    """Eq. 6: Θ_al = {θ | θ < 2π/L}; a = index of the largest θ in Θ_al.

    Pairs 0..a-1 rotate (eq. 7). When Θ_al is empty every pair is fast enough and HoPE = RoPE.
    """
    theta = paper_theta(d, b)
    theta_al = [i for i, t in enumerate(theta) if t < 2 * math.pi / L]
    if not theta_al:
        return len(theta)
    return max(theta_al, key=lambda i: theta[i])


def paper_is_activated(t: float, L: int) -> bool:
    """Section 3.3.2: the "activated" components have π/L < θ < 2π/L."""
    return math.pi / L < t < 2 * math.pi / L


def paper_is_low(t: float, L: int) -> bool:
    """The top low-frequency components: below the activated band, θ ≤ π/L."""
    return t <= math.pi / L


def paper_inv_freq(kind: str, d: int, b: float, L: int | None = None,
                   p: float | None = None) -> list[float]:
    theta = paper_theta(d, b)
    half = d // 2
    if kind == "rope":
        return theta
    if kind == "none":
        return [0.0] * half
    if kind == "p-rope":
        kept = math.floor(p * half + 1e-9)
        return [t if i < kept else 0.0 for i, t in enumerate(theta)]
    a = paper_a(d, b, L)
    if kind == "hope":
        return [t if i < a else 0.0 for i, t in enumerate(theta)]
    if kind == "ab1":  # section 5: only the activated components become position independent
        return [0.0 if paper_is_activated(t, L) else t for t in theta]
    if kind == "ab2":  # section 5: only the top low-frequency components
        return [0.0 if paper_is_low(t, L) else t for t in theta]
    if kind == "ab3":
        # The docstring's reading of "replacing these components with high-frequency components":
        # all d/2 pairs rotate, spread geometrically from θ_0 = 1 down to θ_{a-1}, the slowest
        # frequency HoPE keeps: θ'_j = θ_{a-1}^(j / (d/2 - 1)).
        if half == 1:
            return theta
        lowest_kept = theta[a - 1]
        return [lowest_kept ** (j / (half - 1)) for j in range(half)]
    raise AssertionError(kind)


def assert_matches(actual: torch.Tensor, expected: list[float], rel: float = 1e-6) -> None:
    """Zeros must be exact (cos = 1, sin = 0); nonzero frequencies agree to float32 precision."""
    assert actual.dtype == torch.float32
    assert actual.shape == (len(expected),)
    for index, (got, want) in enumerate(zip(actual.tolist(), expected, strict=True)):
        if want == 0.0:
            assert got == 0.0, f"pair {index}: expected position independent, got {got}"
        else:
            assert math.isclose(got, want, rel_tol=rel), f"pair {index}: {got} != {want}"


# (d, b, L, a): the paper's 125M (d = 768/12 = 64, L = 512) and 3B (d = 2048/16 = 128, L = 8192)
# heads, and other common geometries. a is worked out by hand from θ_i ≥ 2π/L ⇔
# i ≤ d·ln(L/2π) / (2·ln b).
CASES = [
    (64, 10000.0, 512, 16),  # 125M: 15.29 -> pairs 0..15
    (128, 10000.0, 8192, 50),  # 3B: 49.84 -> pairs 0..49
    (64, 10000.0, 1024, 18),  # Appendix B's longer training length: 18.3
    (128, 10000.0, 4096, 46),  # GQA-like Llama head, 4k context: 46.0 (45.99)
    (96, 10000.0, 2048, 31),  # d = 96: 30.3
    (128, 500000.0, 8192, 35),  # Llama-3 base: 34.9
    (80, 10000.0, 2048, 26),  # d = 80: 25.2
    (128, 10000.0, 512, 31),  # 30.6
    (256, 1000000.0, 32768, 80),  # wide head, long context: 79.2
    (64, 10000.0, 7, 1),  # smallest L with a pair: 2π/7 < θ_0 = 1
    (16, 10000.0, 2**20, 8),  # Θ_al empty: every pair completes a turn, HoPE = RoPE
]
IDS = [f"d{d}-b{b:g}-L{L}" for d, b, L, _ in CASES]


@pytest.mark.parametrize("d, b, L, a", CASES, ids=IDS)
def test_reference_rotated_pairs_by_hand(d, b, L, a):
    assert paper_a(d, b, L) == a


@pytest.mark.parametrize("d, b, L, a", CASES, ids=IDS)
def test_hope_matches_eq6_eq7(d, b, L, a):
    inv_freq = position_encoding_inv_freq("hope", d, b, L)
    assert_matches(inv_freq, paper_inv_freq("hope", d, b, L))
    assert int((inv_freq != 0).sum()) == a
    # Eq. 7: the rotated pairs are a prefix and keep RoPE's exact (float32) frequencies.
    rope = position_encoding_inv_freq("rope", d, b)
    assert torch.equal(inv_freq[:a], rope[:a])
    assert torch.all(inv_freq[a:] == 0)


@pytest.mark.parametrize("kind", ["rope", "none", "hope", "ab1", "ab2", "ab3"])
@pytest.mark.parametrize("d, b, L, a", CASES, ids=IDS)
def test_every_type_matches_reference(kind, d, b, L, a):
    assert_matches(position_encoding_inv_freq(kind, d, b, L), paper_inv_freq(kind, d, b, L))


@pytest.mark.parametrize("d, p", [(64, 0.25), (64, 0.5), (64, 0.3), (64, 1.0), (128, 0.75),
                                  (96, 1 / 3), (80, 0.1), (2, 1.0)])
def test_p_rope_keeps_floor_of_p_times_half(d, p):
    inv_freq = position_encoding_inv_freq("p-rope", d, 10000.0, rope_fraction=p)
    assert_matches(inv_freq, paper_inv_freq("p-rope", d, 10000.0, p=p))
    assert int((inv_freq != 0).sum()) == math.floor(p * d / 2 + 1e-9)


@pytest.mark.parametrize("d, b, L, a", CASES, ids=IDS)
def test_p_rope_with_p_2a_over_d_is_hope(d, b, L, a):
    p_rope = position_encoding_inv_freq("p-rope", d, b, rope_fraction=2 * a / d)
    assert torch.equal(p_rope, position_encoding_inv_freq("hope", d, b, L))


@pytest.mark.parametrize("d, b, L, a", CASES, ids=IDS)
def test_bands_partition_hope_zeros(d, b, L, a):
    """ab1 and ab2 zero disjoint sets whose union is exactly what HoPE zeroes."""
    hope = position_encoding_inv_freq("hope", d, b, L) == 0
    ab1 = position_encoding_inv_freq("ab1", d, b, L) == 0
    ab2 = position_encoding_inv_freq("ab2", d, b, L) == 0
    assert not torch.any(ab1 & ab2)
    assert torch.equal(ab1 | ab2, hope)


def test_ab1_ab2_zero_what_section_5_says_for_125m():
    # d=64, L=512: 2π/L = 0.01227, π/L = 0.00614; θ_16 = 0.01, θ_17 = 0.0075 are activated.
    ab1 = position_encoding_inv_freq("ab1", 64, 10000.0, 512)
    ab2 = position_encoding_inv_freq("ab2", 64, 10000.0, 512)
    assert (ab1 == 0).nonzero().flatten().tolist() == [16, 17]
    assert (ab2 == 0).nonzero().flatten().tolist() == list(range(18, 32))


@pytest.mark.parametrize("d, b, L, a", CASES, ids=IDS)
def test_ab3_has_no_position_independent_pair_and_stays_in_high_band(d, b, L, a):
    ab3 = position_encoding_inv_freq("ab3", d, b, L)
    assert torch.all(ab3 > 0)
    theta = paper_theta(d, b)
    assert math.isclose(ab3[0].item(), 1.0, rel_tol=1e-7)
    assert math.isclose(ab3[-1].item(), theta[a - 1], rel_tol=1e-6)
    assert torch.all(ab3 >= 2 * math.pi / L * (1 - 1e-6))  # every pair in the high band
    if a > 1:  # with a = 1 every pair turns at θ_0 = 1 (degenerate but well defined)
        assert torch.all(ab3[1:] < ab3[:-1])


@pytest.mark.parametrize("d, b", [(64, 10000), (64, 10000.0), (128, 500000.0), (96, 10000.0),
                                  (80, 1000000.0), (2, 10000.0)])
def test_rope_is_megatron_core_formula_bit_exact(d, b):
    """megatron-core's RotaryEmbedding: inv_freq = 1 / (b ** (arange(0, d, 2, f32) / d))."""
    upstream = 1.0 / (b ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
    assert torch.equal(position_encoding_inv_freq("rope", d, b), upstream)


@pytest.mark.parametrize("d, b", [(64, 10000), (128, 500000.0)])
def test_rope_is_megatron_core_module_bit_exact(d, b):
    embeddings = pytest.importorskip("megatron.core.models.common.embeddings.rotary_pos_embedding")
    module = embeddings.RotaryEmbedding(kv_channels=d, rotary_percent=1.0, rotary_base=b,
                                        use_cpu_initialization=True)
    assert torch.equal(position_encoding_inv_freq("rope", d, b), module.inv_freq)


def test_none_is_all_zeros():
    for d in (2, 64, 128):
        inv_freq = position_encoding_inv_freq("none", d, 10000.0)
        assert inv_freq.shape == (d // 2,) and torch.all(inv_freq == 0)


@pytest.mark.parametrize("d, b, L, a", CASES, ids=IDS)
def test_partial_rotary_respread_is_not_hope_but_rescaled_base_is(d, b, L, a):
    """The trap: megatron's rotary_percent and HF's partial_rotary_factor rotate the first
    rot_dim = p·d dims but RE-SPREAD the frequencies over them, θ'_j = b^(-2j/(p·d)), which is
    not HoPE. Using base' = b^(rot_dim/d) over rot_dim dims gives back θ_j = b^(-2j/d)."""
    rot_dim = 2 * a
    hope = position_encoding_inv_freq("hope", d, b, L)
    respread = 1.0 / (b ** (torch.arange(0, rot_dim, 2, dtype=torch.float32) / rot_dim))
    if 1 < a < d // 2:  # with one pair (θ_0 = 1) or all pairs the two agree
        assert not torch.allclose(respread, hope[:a], rtol=1e-3, atol=0)
        # The re-spread always ends lower: its slowest pair is b^(-(rot_dim-2)/rot_dim) < θ_{a-1}.
        assert respread[-1] < hope[a - 1]
    rescaled_base = b ** (rot_dim / d)
    rescaled = 1.0 / (rescaled_base ** (torch.arange(0, rot_dim, 2, dtype=torch.float32)
                                        / rot_dim))
    torch.testing.assert_close(rescaled, hope[:a], rtol=1e-6, atol=0)


def test_unknown_type_rejected():
    with pytest.raises(ValueError, match="xpos"):
        position_encoding_inv_freq("xpos", 64, 10000.0, 512)
    with pytest.raises(ValueError, match="--position-embedding-type"):
        PositionEncodingConfig(position_embedding_type="xpos", kv_channels=64)


@pytest.mark.parametrize("kind", ["hope", "ab1", "ab2", "ab3"])
def test_train_length_too_small_rejected(kind):
    with pytest.raises(ValueError, match="--hope-train-length"):
        position_encoding_inv_freq(kind, 64, 10000.0, 4)
    with pytest.raises(ValueError, match="--hope-train-length"):
        PositionEncodingConfig(position_embedding_type=kind, kv_channels=64, hope_train_length=4)


@pytest.mark.parametrize("kind", ["hope", "ab1", "ab2", "ab3"])
@pytest.mark.parametrize("train_length", [None, 0, -512])
def test_missing_train_length_rejected(kind, train_length):
    with pytest.raises(ValueError, match="--hope-train-length"):
        position_encoding_inv_freq(kind, 64, 10000.0, train_length)
    with pytest.raises(ValueError, match="--hope-train-length"):
        PositionEncodingConfig(position_embedding_type=kind, kv_channels=64,
                               hope_train_length=train_length)


@pytest.mark.parametrize("fraction", [None, 0.0, -0.5, 1.0001, 2.0])
def test_p_rope_fraction_out_of_range_rejected(fraction):
    with pytest.raises(ValueError, match="--rope-fraction"):
        position_encoding_inv_freq("p-rope", 64, 10000.0, rope_fraction=fraction)


def test_p_rope_fraction_keeping_no_pair_rejected():
    with pytest.raises(ValueError, match="keeps no pair"):
        position_encoding_inv_freq("p-rope", 64, 10000.0, rope_fraction=0.01)


@pytest.mark.parametrize("kind", POSITION_ENCODING_TYPES)
@pytest.mark.parametrize("d", [63, 0, -64])
def test_odd_or_nonpositive_kv_channels_rejected(kind, d):
    with pytest.raises(ValueError, match="--kv-channels"):
        position_encoding_inv_freq(kind, d, 10000.0, 512, 0.5 if kind == "p-rope" else None)


@pytest.mark.parametrize("b", [1.0, 0.5, float("nan")])
def test_rotary_base_not_above_one_rejected(b):
    with pytest.raises(ValueError, match="--rotary-base"):
        position_encoding_inv_freq("rope", 64, b)


@pytest.mark.parametrize("kind", [k for k in POSITION_ENCODING_TYPES if k != "p-rope"])
def test_config_rejects_rope_fraction_for_other_types(kind):
    with pytest.raises(ValueError, match="--rope-fraction"):
        PositionEncodingConfig(position_embedding_type=kind, kv_channels=64,
                               hope_train_length=512, rope_fraction=0.5)


def test_config_round_trip_and_counts():
    config = PositionEncodingConfig(kv_channels=64, hope_train_length=512)
    assert config.rotated_pairs == 16 and config.uses_rotary
    assert PositionEncodingConfig.from_dict({**config.to_dict(), "unknown": 1}) == config
    assert torch.equal(config.inv_freq(), position_encoding_inv_freq("hope", 64, 10000.0, 512))
    assert not PositionEncodingConfig(position_embedding_type="none").uses_rotary


def test_megatron_rotary_percent_module_is_the_trap():
    """The same trap with megatron-core's own module, for the paper's 125M head (a = 16 of 32)."""
    embeddings = pytest.importorskip("megatron.core.models.common.embeddings.rotary_pos_embedding")
    hope = position_encoding_inv_freq("hope", 64, 10000.0, 512)
    partial = embeddings.RotaryEmbedding(kv_channels=64, rotary_percent=0.5, rotary_base=10000,
                                         use_cpu_initialization=True)
    assert partial.inv_freq.shape == (16,)
    assert not torch.allclose(partial.inv_freq, hope[:16], rtol=1e-3, atol=0)
    rescaled = embeddings.RotaryEmbedding(kv_channels=64, rotary_percent=0.5,
                                          rotary_base=10000.0 ** (32 / 64),
                                          use_cpu_initialization=True)
    torch.testing.assert_close(rescaled.inv_freq, hope[:16], rtol=1e-6, atol=0)
