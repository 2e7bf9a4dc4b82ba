"""One tiny trained checkpoint for every Megatron test of hope-eval (built once per session)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    from tests.eval.tiny_checkpoint import build

    return build(tmp_path_factory)
