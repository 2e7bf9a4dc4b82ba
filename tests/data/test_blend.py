"""Blends: RedPajama-1T's published mixture, user weights, natural weights, and their errors.

PYTHONPATH=. python -m pytest tests/data/test_blend.py -q
"""

from __future__ import annotations

import pytest

from megatron_hope.data.blend import (
    REDPAJAMA_1T_TOKENS,
    blend_string,
    blend_weights,
    parse_weights,
)

OUTPUTS = {
    "rp_arxiv_text_document": {"subset": "arxiv", "tokens": 1_000},
    "rp_c4_text_document": {"subset": "c4", "tokens": 50_000},
    "rp_common_crawl_a": {"subset": "common_crawl", "tokens": 3_000},
    "rp_common_crawl_b": {"subset": "common_crawl", "tokens": 1_000},
}


def test_default_reproduces_the_published_mixture_whatever_was_sampled():
    weights = dict((prefix, weight) for weight, prefix in blend_weights(OUTPUTS))
    published = {s: REDPAJAMA_1T_TOKENS[s] for s in ("arxiv", "c4", "common_crawl")}
    total = sum(published.values())
    assert weights["rp_arxiv_text_document"] == pytest.approx(published["arxiv"] / total)
    assert weights["rp_c4_text_document"] == pytest.approx(published["c4"] / total)
    # Two outputs of one subset share its weight by their tokens.
    assert weights["rp_common_crawl_a"] == pytest.approx(0.75 * published["common_crawl"] / total)
    assert weights["rp_common_crawl_b"] == pytest.approx(0.25 * published["common_crawl"] / total)
    assert sum(weights.values()) == pytest.approx(1.0)


def test_full_redpajama_weights_are_the_published_shares():
    outputs = {f"rp_{s}": {"subset": s, "tokens": 1} for s in REDPAJAMA_1T_TOKENS}
    weights = {prefix: weight for weight, prefix in blend_weights(outputs)}
    assert weights["rp_common_crawl"] == pytest.approx(878 / 1210)
    assert weights["rp_stackexchange"] == pytest.approx(20 / 1210)


def test_user_and_natural_weights_and_the_string():
    user = parse_weights("arxiv=1,c4=1,common_crawl=2")
    weights = {p: w for w, p in blend_weights(OUTPUTS, user)}
    assert weights["rp_arxiv_text_document"] == pytest.approx(0.25)
    assert weights["rp_common_crawl_a"] == pytest.approx(0.375)
    natural = {p: w for w, p in blend_weights(OUTPUTS, parse_weights("natural"))}
    assert natural["rp_c4_text_document"] == pytest.approx(50 / 55)
    text = blend_string(OUTPUTS, user)
    assert text.split() == [
        "0.250000",
        "rp_arxiv_text_document",
        "0.250000",
        "rp_c4_text_document",
        "0.375000",
        "rp_common_crawl_a",
        "0.125000",
        "rp_common_crawl_b",
    ]


def test_errors_name_the_fix():
    with pytest.raises(ValueError, match=r"subsets other have no weight.*--blend-weights other="):
        blend_weights({"x": {"subset": "other", "tokens": 1}})
    with pytest.raises(ValueError, match="--blend-weights 'c4'"):
        parse_weights("c4")
    with pytest.raises(ValueError, match="weight 0"):
        blend_weights({"x": {"subset": "c4", "tokens": 1}}, {"c4": 0.0})
