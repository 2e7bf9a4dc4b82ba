"""The whole suite runs under strict CPU execution where CUDA is absent.

Strict mode (see `megatron_hope.megatron.cpu`) maps CUDA placement to the host and fails any op
that a GPU run would fail for mixing host and device tensors, so the CPU suite runs, and checks,
the very lines a GPU run executes. On a CUDA host it does nothing and the tests use the GPU.
"""

from __future__ import annotations

import pytest

from megatron_hope.megatron.cpu import cpu_execution


@pytest.fixture(scope="session", autouse=True)
def strict_cpu_execution():
    with cpu_execution(strict=True) as enabled:
        yield enabled
