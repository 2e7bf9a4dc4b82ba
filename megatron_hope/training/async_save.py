"""`--async-save`: checkpoint shards written in the background, as Megatron-LM writes them.

megatron-core's `dist_checkpointing.save(..., async_sharded_save=True)` copies the state to host
memory and returns a request whose writes run in a checkpoint worker process while training
goes on. Like Megatron-LM (which since core 0.19 supports --async-save only with its persistent
worker), the worker is persistent. Every step the loop asks the queue to finalize what has
finished; the finalization is collective (the ranks agree that every rank's writes are done),
then runs megatron-core's own finalizers (the checkpoint's metadata) and ours, which publish the
checkpoint: fsync, rename into place, tracker last. A kill before that leaves only a staging
directory, which the next run removes, and the tracker still names the previous whole checkpoint.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from pathlib import Path

from megatron.core import dist_checkpointing
from megatron.core.dist_checkpointing.strategies.async_utils import AsyncCallsQueue

logger = logging.getLogger(__name__)

# megatron-core >= 0.19 defaults to NVIDIA Resiliency Extension's writer, with its own request
# and queue types; megatron-core's own writer ("mcore") exists in every version we support and
# matches the queue above. Megatron-LM uses "mcore" too unless told otherwise.
_SAVE_ACCEPTS_STRATEGY = "async_strategy" in inspect.signature(dist_checkpointing.save).parameters


class AsyncCheckpointQueue:
    """The run's background checkpoint writes; one per run, on every rank."""

    def __init__(self) -> None:
        self._queue = AsyncCallsQueue(persistent=False)

    def save(self, sharded_state_dict: dict, staging: Path, content_metadata: dict,
             publish: Callable[[], None]) -> None:
        """Start writing `sharded_state_dict` into `staging`; `publish` runs (collectively) once
        every rank's writes are done. One save is in flight at a time: a new one first waits
        for the previous one, so checkpoints are published in order."""
        self.finalize(blocking=True)
        extra = {"async_strategy": "mcore"} if _SAVE_ACCEPTS_STRATEGY else {}
        request = dist_checkpointing.save(
            sharded_state_dict, str(staging), async_sharded_save=True,
            content_metadata=content_metadata, **extra)
        request.add_finalize_fn(publish)
        self._queue.schedule_async_request(request)

    def finalize(self, blocking: bool = False) -> int:
        """Publish the saves whose writes have finished on every rank (all of them, waiting,
        with `blocking`); call on every rank. Returns how many were published."""
        return len(self._queue.maybe_finalize_async_calls(blocking=blocking))

    def close(self) -> None:
        """Publish what is in flight and stop the worker (call on every rank at the run's end)."""
        self.finalize(blocking=True)
        self._queue.close()
