"""Run a test function on N gloo ranks, each in its own process, and gather the results.

    from tests.distributed import run_on_ranks

    def _losses(rank, steps):          # module level, so the ranks can unpickle it
        ...
        return losses

    def test_dp2():
        per_rank = run_on_ranks(2, _losses, 3)   # [rank0_result, rank1_result]

Each rank gets MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE/LOCAL_RANK, a gloo process group, and
strict CPU execution (`enable_cpu_execution(strict=True)`; nothing where CUDA exists) before
`fn(rank, *args)` runs; afterwards megatron's parallel_state and the process group are destroyed.
The first rank to raise fails the caller with its traceback (`pytest.skip` in a rank skips the
test); a rank that dies or a timeout kills the others. Each rank leads its own process group,
which is killed at the end (no orphaned helper processes).

Ranks are forked from a `forkserver` that has imported torch and megatron-core once (`_PRELOAD`),
so a rank starts in ~0.2 s instead of the ~5 s a spawned interpreter needs for those imports.
Like spawn, it needs `fn` importable by module name: tests are packages (`tests/__init__.py`).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import pickle
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch.multiprocessing as mp

__all__ = ["RankFailure", "run_on_ranks"]

# Imported once by the fork server; nothing here initialises CUDA, threads or process groups at
# import time, so the forked ranks start as clean as spawned ones.
_PRELOAD = [
    "torch",
    "torch.distributed",
    "megatron.core.parallel_state",
    "megatron.core.distributed",
    "megatron.core.models.gpt",
    "megatron.core.optimizer",
    "megatron.core.pipeline_parallel",
    "megatron_hope.megatron.cpu",
    "tests.distributed",
]
_PROCESS_GROUP_TIMEOUT = datetime.timedelta(seconds=120)


class RankFailure(RuntimeError):
    """A rank raised, died or timed out; the message carries the rank's traceback."""


def _context() -> mp.context.BaseContext:
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)  # only takes effect when the server first starts
    return ctx


def free_port() -> int:
    """A TCP port free on this machine now (for MASTER_PORT, Slurm daemons, ...)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(
    rank: int, world_size: int, port: int, fn: Callable[..., Any], args: tuple, result_path: str
) -> None:
    """Body of one rank: writes ("ok", result) | ("skip", reason) | ("error", traceback)."""
    # Own process group, so that the parent can reap whatever the rank started (dist_checkpointing
    # keeps a spawned multiprocessing Manager alive for the life of the process).
    os.setpgid(0, 0)
    # Multi-rank tests mean the host: N gloo ranks through the CPU shim, on a GPU machine too (one
    # GPU cannot hold N NCCL ranks, and gloo has no reduce-scatter for CUDA tensors). The GPU
    # path is covered by tests/gpu and the in-process tests, which follow the device.
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
    )
    # A forkserver child inherits "forkserver" as its default start method; a torchrun process
    # has the platform default (fork on Linux), which DataLoader workers should get here too.
    mp.set_start_method(None, force=True)
    failed_at = None
    try:
        import torch
        import torch.distributed as dist

        from megatron_hope.megatron.cpu import enable_cpu_execution

        # The ranks share the machine's cores; oversubscribed intra-op threads only slow them.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
        dist.init_process_group(
            "gloo", rank=rank, world_size=world_size, timeout=_PROCESS_GROUP_TIMEOUT
        )
        enable_cpu_execution(strict=True)
        try:
            outcome: tuple[str, Any] = ("ok", fn(rank, *args))
        except BaseException:
            failed_at = time.time()  # before teardown wakes the peers with errors of their own
            raise
        finally:
            if "megatron.core.parallel_state" in sys.modules:
                sys.modules["megatron.core.parallel_state"].destroy_model_parallel()
            dist.destroy_process_group()
        data = pickle.dumps(outcome)
    except BaseException as exc:
        failed_at = failed_at or time.time()
        pytest = sys.modules.get("pytest")
        if pytest is not None and isinstance(exc, pytest.skip.Exception):
            outcome = ("skip", str(exc))
        else:
            outcome = ("error", traceback.format_exc())
        data = pickle.dumps(outcome)
    with open(result_path + ".tmp", "wb") as handle:
        pickle.dump(failed_at, handle)  # the earliest failure is the cause, the rest follow
        handle.write(data)
    os.replace(result_path + ".tmp", result_path)
    # The result is on disk: skip interpreter teardown (~2 s of torch/megatron finalizers).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1 if outcome[0] == "error" else 0)


def _read(path: str) -> tuple[float | None, str, Any] | None:
    if not os.path.exists(path):
        return None
    with open(path, "rb") as handle:
        finished = pickle.load(handle)
        status, value = pickle.load(handle)
    return finished, status, value


def run_on_ranks(world_size: int, fn: Callable[..., Any], *args: Any, timeout: float = 300) -> list:
    """Run `fn(rank, *args)` on `world_size` gloo ranks; return the results in rank order.

    `fn`, `args` and the results must be picklable (`fn` a module-level function of an importable
    module). Raises `RankFailure` with the traceback of the first rank that raised, or when a rank
    dies or `timeout` seconds pass; the remaining ranks are killed at once.
    """
    ctx = _context()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="run_on_ranks_") as tmp:
        paths = [os.path.join(tmp, f"rank{rank}.pkl") for rank in range(world_size)]
        procs = [
            ctx.Process(
                target=_worker,
                args=(rank, world_size, port, fn, args, paths[rank]),
                name=f"rank{rank}",
                daemon=False,  # ranks may start DataLoader workers; the finally below reaps them
            )
            for rank in range(world_size)
        ]
        for proc in procs:
            proc.start()
        deadline = time.monotonic() + timeout
        timed_out = False
        try:
            while any(proc.is_alive() for proc in procs):
                if any(proc.exitcode not in (None, 0) for proc in procs):
                    break  # the others are (or soon will be) blocked on the failed rank
                if time.monotonic() > deadline:
                    timed_out = True
                    break
                time.sleep(0.02)
        finally:
            for proc in procs:
                if proc.is_alive():
                    proc.kill()
            for proc in procs:
                proc.join(10)
            for proc in procs:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)  # the rank's leftover descendants
        outcomes = [_read(path) for path in paths]

    failed = [(o[0], rank, o[2]) for rank, o in enumerate(outcomes) if o and o[1] == "error"]
    if failed:
        _, rank, text = min(failed)
        others = [f"rank {other}" for _, other, _ in sorted(failed) if other != rank]
        later = f" (later also {', '.join(others)})" if others else ""
        raise RankFailure(f"rank {rank} raised first{later}:\n{text}")
    skipped = [o[2] for o in outcomes if o and o[1] == "skip"]
    if skipped:
        import pytest

        pytest.skip(skipped[0])
    missing = [rank for rank, outcome in enumerate(outcomes) if outcome is None]
    if timed_out or missing:
        reason = f"timed out after {timeout:g} s" if timed_out else "a rank died"
        raise RankFailure(
            f"{reason}; exit codes {[proc.exitcode for proc in procs]}; "
            f"no result from ranks {missing}"
        )
    return [outcome[2] for outcome in outcomes]
