"""Write a whole output directory or nothing: build it beside its final name, then rename."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from megatron_hope.training.checkpoint_files import (
    fsync_tree,
    publish_directory,
    remove_stale_staging,
)


@contextlib.contextmanager
def staged_directory(save_dir: Path) -> Iterator[Path]:
    """Yield a fresh hidden sibling `.NAME.incomplete-PID/` to write into.

    When the block finishes, every file is fsynced and the directory takes `save_dir`'s place
    (an existing `save_dir` is removed only once the new one holds the name: see
    `training.checkpoint_files.publish_directory`); when the block raises (or is interrupted),
    it is removed. Staging directories of dead processes (a kill -9 of an earlier export) are
    removed first; a live process's is never touched. A reader of `save_dir` therefore only
    ever sees a complete result.
    """
    save_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(save_dir.parent, prefix=f".{save_dir.name}.")
    staging = save_dir.with_name(f".{save_dir.name}.incomplete-{os.getpid()}")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        yield staging
        fsync_tree(staging)
        publish_directory(staging, save_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
