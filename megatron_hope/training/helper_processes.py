"""Helper processes of a training run die with it, even under kill -9.

- megatron-core's `dist_checkpointing` writer collects its results through a queue it creates
  with `multiprocessing.get_context("spawn").Manager()`: a spawned server process (a fresh
  interpreter that re-imports the trainer, ~450 MB) that outlives a killed trainer. A queue
  made with the fork context before any writer forks does the same job without a process: a
  synchronous save fills and reads it inside the training process, and an `--async-save` writer
  (a forked child) fills it through the pipe the two share.
- Forked children (the writer processes of megatron-core 0.16, DataLoader workers) ask the
  kernel for SIGKILL when their parent dies (`PR_SET_PDEATHSIG`), set right after the fork.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import multiprocessing.queues
import os
import signal

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_installed = False
_parent_pid: int | None = None


class WriterResults(multiprocessing.queues.Queue):
    """megatron-core's write-results queue without its Manager process. It reads the results
    with `get_nowait` once the writer has exited; a background writer's result may still be in
    the pipe then (seen on megatron-core 0.19), so the read waits for it, boundedly."""

    def get_nowait(self):
        return self.get(timeout=WRITER_RESULT_TIMEOUT_S)


WRITER_RESULT_TIMEOUT_S = 120.0


def die_with_parent(parent_pid: int | None = None) -> None:
    """In a child: SIGKILL when the parent process dies (Linux); exit now if it already has."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: nothing to ask the kernel
        return
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)  # the parent died between the fork and the prctl


def _after_fork_in_child() -> None:
    if _parent_pid is not None:
        die_with_parent(_parent_pid)


def _before_fork() -> None:
    global _parent_pid
    _parent_pid = os.getpid()


def install() -> None:
    """Call once in a training process before its first checkpoint save or DataLoader."""
    global _installed
    if _installed:
        return
    _installed = True
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
    try:
        from megatron.core.dist_checkpointing.strategies import filesystem_async
    except ImportError:
        return
    if getattr(filesystem_async, "_results_queue", "absent") is None:
        filesystem_async._results_queue = WriterResults(ctx=multiprocessing.get_context("fork"))
    elif not hasattr(filesystem_async, "_results_queue"):
        logger.warning("megatron-core's dist_checkpointing has no _results_queue: its writer may "
                       "start a helper process that outlives a killed run")
