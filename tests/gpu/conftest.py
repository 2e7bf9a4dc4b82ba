"""A single-rank NCCL group with megatron-core's parallel state, for in-process GPU tests."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist


@pytest.fixture(scope="module")
def single_rank_gpu():
    from megatron.core import parallel_state

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    created = not dist.is_initialized()
    if created:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        torch.cuda.set_device(0)
        dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0,
                                world_size=1)
    parallel_state.initialize_model_parallel()
    yield
    parallel_state.destroy_model_parallel()
    if created:
        dist.destroy_process_group()
