"""`--keep-last-checkpoints N`: after each save, remove the oldest whole checkpoints beyond N.

Ours: Megatron-LM keeps every checkpoint and has no such flag. A 3B run saving every 500 of
120k iterations writes 240 checkpoints of ~35 GB (bf16 weights, fp32 main weights, two Adam
moments: 14 bytes per parameter); N = 3 keeps ~100 GB.

What is kept, whatever N says (`checkpoints_to_remove` decides, `prune_checkpoints` acts):
- the checkpoint the tracker names, and the N - 1 whole ones before it;
- every checkpoint newer than the tracker's (another run's, e.g. one restarted from an older
  checkpoint: that run replaces them as it reaches their iterations);
- anything that is not a whole `iter_XXXXXXX` directory: staging directories
  (`iter_XXXXXXX.incomplete-PID`, a live writer's or a dead one's, which the next save clears)
  and torn `iter_` directories, left for `--load`'s fallback and for inspection;
- everything when N is unset, or when the tracker is missing or names no whole checkpoint.

A checkpoint is removed by renaming it to a staging name of this process first, then deleting
it: a kill in the middle leaves a staging directory of a dead process (which the next save
removes), never a half-deleted `iter_` directory that looks like a checkpoint.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from megatron_hope.training.checkpoint_files import (
    checkpoint_dir,
    checkpoint_problem,
    read_tracker,
    saved_iterations,
    staging_name,
)

logger = logging.getLogger(__name__)


def checkpoints_to_remove(complete: Iterable[int], tracked: int, keep: int | None) -> list[int]:
    """Iterations (oldest first) of the whole checkpoints that retention removes.

    `complete`: iterations of the whole checkpoints on disk; `tracked`: the tracker's iteration;
    `keep`: --keep-last-checkpoints (None: keep everything). Kept: `tracked` and the `keep - 1`
    newest whole ones before it; newer ones than `tracked` are never candidates.
    """
    if keep is None:
        return []
    if keep < 1:
        raise ValueError(f"--keep-last-checkpoints must be at least 1, got {keep}")
    older = sorted((i for i in set(complete) if i < tracked), reverse=True)
    return sorted(older[keep - 1:])


def prune_checkpoints(
    save_dir: str | Path,
    keep: int | None,
    problem: Callable[[Path], str | None] = checkpoint_problem,
) -> list[Path]:
    """Apply `checkpoints_to_remove` under `save_dir`; returns the removed directories.

    `problem(directory)` says why a directory is not a whole checkpoint (None when it is).
    """
    if keep is None:
        return []
    save_dir = Path(save_dir)
    try:
        tracked = read_tracker(save_dir)
    except ValueError:
        return []
    if problem(checkpoint_dir(save_dir, tracked)) is not None:
        return []
    older = [i for i in saved_iterations(save_dir) if i < tracked]
    complete = [i for i in older if problem(checkpoint_dir(save_dir, i)) is None]
    removed = []
    for iteration in checkpoints_to_remove(complete, tracked, keep):
        path = checkpoint_dir(save_dir, iteration)
        doomed = staging_name(path)
        try:
            path.rename(doomed)
            shutil.rmtree(doomed)
        except OSError as error:  # housekeeping: a failure must not stop the run
            logger.warning("--keep-last-checkpoints: could not remove %s (%s)", path, error)
            continue
        removed.append(path)
        logger.info("removed checkpoint %s (--keep-last-checkpoints %d)", path, keep)
    return removed
