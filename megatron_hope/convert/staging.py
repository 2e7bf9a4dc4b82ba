"""Write a whole output directory or nothing: build it beside its final name, then rename."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def staged_directory(save_dir: Path) -> Iterator[Path]:
    """Yield a fresh hidden sibling `.NAME.incomplete-PID/` to write into.

    When the block finishes, it replaces `save_dir` in one rename; when the block raises (or is
    interrupted), it is removed. A reader of `save_dir` therefore only ever sees a complete result,
    and a crash leaves at most a hidden directory that names itself incomplete.
    """
    staging = save_dir.with_name(f".{save_dir.name}.incomplete-{os.getpid()}")
    if staging.exists():
        shutil.rmtree(staging)
    save_dir.parent.mkdir(parents=True, exist_ok=True)
    staging.mkdir()
    try:
        yield staging
        if save_dir.exists():
            shutil.rmtree(save_dir)
        os.replace(staging, save_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
