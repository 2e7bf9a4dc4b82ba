"""The whole suite runs under strict CPU execution where CUDA is absent.

Strict mode (see `megatron_hope.megatron.cpu`) maps CUDA placement to the host and fails any op
that a GPU run would fail for mixing host and device tensors, so the CPU suite runs, and checks,
the very lines a GPU run executes. On a CUDA host it does nothing and the tests use the GPU.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import pytest
import torch
import torch.distributed as dist

from megatron_hope.megatron.cpu import cpu_execution


@pytest.fixture(scope="session", autouse=True)
def strict_cpu_execution():
    with cpu_execution(strict=True) as enabled:
        yield enabled


@contextlib.contextmanager
def single_rank_group(backend: str) -> Iterator[None]:
    """A one-rank process group (unless one exists) with megatron-core's parallel state."""
    from megatron.core import parallel_state, tensor_parallel

    created = not dist.is_initialized()
    if created:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0,
                                world_size=1)
    parallel_state.initialize_model_parallel()
    tensor_parallel.model_parallel_cuda_manual_seed(1234)
    try:
        yield
    finally:
        parallel_state.destroy_model_parallel()
        if created:
            dist.destroy_process_group()


@pytest.fixture(scope="module")
def single_rank_megatron():
    """In-process module tests: one rank, on NCCL where there is a GPU, else gloo (the shim)."""
    if torch.cuda.is_available():
        torch.cuda.set_device(0)
    with single_rank_group("nccl" if torch.cuda.is_available() else "gloo"):
        yield
