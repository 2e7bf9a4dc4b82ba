"""Run a test function on N gloo ranks, each in a fresh spawned process, and gather the results.

    from tests.distributed import run_on_ranks

    def _losses(rank, steps):          # module level, so spawned children can unpickle it
        ...
        return losses

    def test_dp2():
        per_rank = run_on_ranks(2, _losses, 3)   # [rank0_result, rank1_result]

Each child gets MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE/LOCAL_RANK, a gloo process group, and
`enable_cpu_execution()` before `fn(rank, *args)` runs; afterwards megatron's parallel_state and
the process group are destroyed. A child's exception fails the caller with the child's traceback
(`pytest.skip` in a child skips the test). Children import the module that defines `fn`, so keep
heavy imports (megatron) inside the functions: start-up is then torch + megatron, ~5 s.
"""

from __future__ import annotations

import os
import pickle
import socket
import sys
import tempfile
import time
import traceback
from typing import Any, Callable

import torch.multiprocessing as mp

__all__ = ["RankFailure", "run_on_ranks"]


class RankFailure(RuntimeError):
    """A rank raised, died or timed out; the message carries the child's traceback."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(
    rank: int,
    world_size: int,
    port: int,
    fn: Callable[..., Any],
    args: tuple,
    result_path: str,
) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
    )
    outcome: tuple[str, Any]
    try:
        import datetime

        import torch
        import torch.distributed as dist

        # N ranks share the machine's cores; oversubscribed intra-op threads only slow gloo down.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
        dist.init_process_group(
            "gloo", rank=rank, world_size=world_size, timeout=datetime.timedelta(seconds=120)
        )
        from megatron_hope.megatron.cpu import enable_cpu_execution

        enable_cpu_execution()
        try:
            outcome = ("ok", fn(rank, *args))
        finally:
            if "megatron.core.parallel_state" in sys.modules:
                sys.modules["megatron.core.parallel_state"].destroy_model_parallel()
            dist.destroy_process_group()
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
        text = traceback.format_exc()
        try:
            payload = pickle.dumps(exc)
        except Exception:  # noqa: BLE001 - unpicklable exceptions travel as text only
            payload = None
        outcome = ("error", (text, payload))
    try:
        data = pickle.dumps(outcome)
    except Exception:  # noqa: BLE001 - an unpicklable result is the test's bug: report it
        data = pickle.dumps(("error", (traceback.format_exc(), None)))
        outcome = ("error", None)
    with open(result_path + ".tmp", "wb") as handle:
        handle.write(data)
    os.replace(result_path + ".tmp", result_path)
    if outcome[0] == "error":
        sys.exit(1)


def _raise_child_error(rank: int, text: str, payload: bytes | None) -> None:
    if payload is not None:
        try:
            exc = pickle.loads(payload)
        except Exception:  # noqa: BLE001
            exc = None
        # Let pytest.skip/xfail raised in a child act in the parent.
        if exc is not None and type(exc).__module__.startswith("_pytest"):
            raise exc
    raise RankFailure(f"rank {rank} raised:\n{text}")


def run_on_ranks(world_size: int, fn: Callable[..., Any], *args: Any, timeout: float = 300) -> list:
    """Run `fn(rank, *args)` on `world_size` gloo ranks; return the results in rank order.

    `fn` and `args` must be picklable (a module-level function of an importable module). Raises
    `RankFailure` if a rank raises or dies (the other ranks are then killed) or when `timeout`
    seconds pass before all ranks are done.
    """
    ctx = mp.get_context("spawn")
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="run_on_ranks_") as tmp:
        paths = [os.path.join(tmp, f"rank{rank}.pkl") for rank in range(world_size)]
        procs = [
            ctx.Process(
                target=_worker,
                args=(rank, world_size, port, fn, args, paths[rank]),
                name=f"rank{rank}",
                daemon=False,  # dist_checkpointing.save starts a multiprocessing Manager
            )
            for rank in range(world_size)
        ]
        for proc in procs:
            proc.start()
        deadline = time.monotonic() + timeout
        first_failed: int | None = None
        timed_out = False
        try:
            while first_failed is None and any(proc.is_alive() for proc in procs):
                first_failed = next(
                    (rank for rank, proc in enumerate(procs) if proc.exitcode not in (None, 0)),
                    None,
                )
                if time.monotonic() > deadline:
                    timed_out = True
                    break
                time.sleep(0.05)
        finally:
            # A failed rank leaves the others blocked in collectives: end them now.
            for proc in procs:
                if proc.is_alive():
                    proc.kill()
            for proc in procs:
                proc.join(10)

        outcomes = []
        for path in paths:
            if os.path.exists(path):
                with open(path, "rb") as handle:
                    outcomes.append(pickle.load(handle))
            else:
                outcomes.append(None)
        # Report the rank that failed first: the others usually only lost their peer.
        order = list(range(world_size))
        if first_failed is not None:
            order.remove(first_failed)
            order.insert(0, first_failed)
        for rank in order:
            if outcomes[rank] is not None and outcomes[rank][0] == "error":
                _raise_child_error(rank, *outcomes[rank][1])
        if timed_out or any(outcome is None for outcome in outcomes):
            missing = [rank for rank, outcome in enumerate(outcomes) if outcome is None]
            reason = f"timed out after {timeout:g} s" if timed_out else "a rank died"
            raise RankFailure(
                f"{reason}; exit codes {[proc.exitcode for proc in procs]}; "
                f"no result from ranks {missing}"
            )
        return [outcome[1] for outcome in outcomes]
