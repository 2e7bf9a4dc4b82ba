"""Session fixtures: the sample data and tiny checkpoints at several layouts, trained once."""

from __future__ import annotations

import pytest

from tests.convert import helpers
from tests.distributed import run_on_ranks


@pytest.fixture(scope="session")
def data(tmp_path_factory):
    return helpers.prepare_data(tmp_path_factory.mktemp("convert_data"))


@pytest.fixture(scope="session")
def checkpoints(data, tmp_path_factory):
    """name -> checkpoint directory (see helpers.CHECKPOINTS)."""
    root = tmp_path_factory.mktemp("convert_ckpt")
    paths = {}
    for name, (ranks, model, run) in helpers.CHECKPOINTS.items():
        paths[name] = str(root / name)
        run_on_ranks(ranks, helpers.pretrain, data, paths[name], model, run)
    return paths
