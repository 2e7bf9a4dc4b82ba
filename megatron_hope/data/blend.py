"""Megatron `--data-path` blends from the token counts `hope-preprocess` wrote.

Megatron's blend syntax is `weight prefix weight prefix ...`; the weights are normalized and
become each dataset's share of the training samples. By default the shares reproduce
RedPajama-1T's published mixture (token counts from its release): a subset's weight is its
published share, divided among that subset's outputs in proportion to their tokens. A sample of
RedPajama preprocessed here is thus trained on in the proportions of the full dataset, however
the sample was drawn. `weights` replaces the published shares with the user's (by subset);
`natural` weights each output by its own tokens (plain concatenation).

    from megatron_hope.data.blend import blend_from_summary
    print(blend_from_summary("out/redpajama_summary.json"))   # --data-path "0.6709 out/..."
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

REDPAJAMA_1T_TOKENS = {
    "common_crawl": 878e9,
    "c4": 175e9,
    "github": 59e9,
    "book": 26e9,
    "arxiv": 28e9,
    "wikipedia": 24e9,
    "stackexchange": 20e9,
}
"""RedPajama-1T's published token counts per subset."""


def blend_weights(
    outputs: Mapping[str, Mapping], weights: Mapping[str, float] | str | None = None
) -> list[tuple[float, str]]:
    """`(weight, prefix)` pairs, weights summing to 1, in the order of `outputs`.

    Args:
        outputs: `{prefix: {"subset": name or None, "tokens": n}}` (the `outputs` of a
            `PreprocessSummary`).
        weights: None (RedPajama-1T's published mixture), `"natural"` (by tokens written), or
            `{subset: weight}`.

    Raises:
        ValueError: a subset without a weight, or weights that give every output zero.
    """
    if not outputs:
        raise ValueError("no outputs to blend")
    if weights == "natural":
        shares = {prefix: float(output["tokens"]) for prefix, output in outputs.items()}
    else:
        table = REDPAJAMA_1T_TOKENS if weights is None else weights
        if isinstance(table, str):
            raise ValueError(f"weights {table!r}: use None, 'natural' or a {{subset: weight}}")
        subset_tokens: dict[str, int] = {}
        for output in outputs.values():
            subset = output.get("subset")
            subset_tokens[subset] = subset_tokens.get(subset, 0) + int(output["tokens"])
        unknown = sorted(str(s) for s in subset_tokens if s not in table)
        if unknown:
            name = "RedPajama-1T's published mixture" if weights is None else "the given weights"
            raise ValueError(
                f"subsets {', '.join(unknown)} have no weight in {name}; pass weights for them "
                f"(e.g. --blend-weights {unknown[0]}=1.0) or use natural weights"
            )
        shares = {}
        for prefix, output in outputs.items():
            subset = output.get("subset")
            total = subset_tokens[subset]
            fraction = int(output["tokens"]) / total if total else 0.0
            shares[prefix] = float(table[subset]) * fraction
    total = sum(shares.values())
    if total <= 0:
        raise ValueError("every output has weight 0; check the weights and token counts")
    return [(share / total, prefix) for prefix, share in shares.items()]


def blend_string(
    outputs: Mapping[str, Mapping], weights: Mapping[str, float] | str | None = None
) -> str:
    """The `--data-path` value: `weight prefix ...` with weights to 6 decimals."""
    return " ".join(f"{weight:.6f} {prefix}" for weight, prefix in blend_weights(outputs, weights))


def blend_from_summary(
    summary_path: str | os.PathLike, weights: Mapping[str, float] | str | None = None
) -> str:
    """`blend_string` for the outputs recorded in a `{output_prefix}_summary.json`."""
    written = json.loads(Path(summary_path).read_text(encoding="utf-8"))
    return blend_string(written["summary"]["outputs"], weights)


def parse_weights(text: str | None) -> Mapping[str, float] | str | None:
    """`--blend-weights`: empty or `redpajama` (published), `natural`, or `c4=1,github=0.5`."""
    if text is None or text in ("", "redpajama"):
        return None
    if text == "natural":
        return "natural"
    weights = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            sep = ""
        weight = weights.get(name.strip(), -1.0)
        if not sep or not 0 <= weight < math.inf:  # NaN compares false: refused too
            raise ValueError(
                f"--blend-weights {text!r}: expected redpajama, natural or subset=weight pairs "
                f"(finite weights >= 0) separated by commas (e.g. common_crawl=0.5,c4=0.5)"
            )
    return weights
