"""Range checks whose messages name the command-line flag, shared by every validated config.

A config field `micro_batch_size` is the flag `--micro-batch-size`; a check that fails raises
`ValueError` with the flag, the value and the accepted range, which the CLIs print as a usage
error (exit status 2).
"""

from __future__ import annotations

import math


def flag(name: str) -> str:
    """The command-line flag of a config field: `micro_batch_size` -> `--micro-batch-size`."""
    return "--" + name.replace("_", "-")


def check_range(name: str, value, low: float | None, high: float | None = None,
                low_included: bool = True, high_included: bool = False) -> None:
    """ValueError naming `flag(name)` unless `value` is a finite number in the range (a bound of
    None is open). NaN and infinities are never accepted: they reach the optimizer or the
    model's initialisation and fail there, far from the flag."""
    inside = isinstance(value, (int, float)) and math.isfinite(value)
    if inside and low is not None:
        inside = value >= low if low_included else value > low
    if inside and high is not None:
        inside = value <= high if high_included else value < high
    if not inside:
        lower = "(-inf" if low is None else f"{'[' if low_included else '('}{low:g}"
        upper = "inf)" if high is None else f"{high:g}{']' if high_included else ')'}"
        bounds = f"{lower}, {upper}"
        raise ValueError(f"{flag(name)} ({value}) must be a finite number in {bounds}")
