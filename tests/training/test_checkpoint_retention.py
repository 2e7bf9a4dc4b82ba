"""`--keep-last-checkpoints N`: which checkpoints go, and that nothing else ever does.

    python -m pytest -q tests/training/test_checkpoint_retention.py

The decision is a pure function of (whole iterations, tracker, N); the directory walk is checked
on stand-in directories whose completeness a marker file decides. A real run that prunes its
own checkpoints is in tests/training/test_chained_jobs.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from megatron_hope.training.arguments import parse_config
from megatron_hope.training.checkpoint_files import TRACKER_FILENAME, staging_name
from megatron_hope.training.checkpoint_retention import (
    checkpoints_to_remove,
    prune_checkpoints,
)


@pytest.mark.parametrize("complete, tracked, keep, removed", [
    ([100, 200, 300, 400], 400, None, []),           # unset: never anything
    ([100, 200, 300, 400], 400, 2, [100, 200]),
    ([100, 200, 300, 400], 400, 1, [100, 200, 300]),
    ([100, 200, 300, 400], 400, 4, []),
    ([100, 200, 300, 400], 400, 9, []),
    ([400, 100, 300, 200, 300], 400, 2, [100, 200]),  # order and repeats do not matter
    ([100, 200, 300, 400], 200, 1, [100]),           # newer than the tracker's: never touched
    ([100, 300, 400], 250, 1, [100]),                # the tracker's need not be among them
    ([], 100, 1, []),
])
def test_which_checkpoints_go(complete, tracked, keep, removed):
    assert checkpoints_to_remove(complete, tracked, keep) == removed


def test_the_tracked_checkpoint_always_stays():
    for keep in range(1, 6):
        for tracked in (100, 250, 500):
            gone = checkpoints_to_remove(range(100, 600, 100), tracked, keep)
            assert tracked not in gone
            kept = [i for i in range(100, 600, 100) if i < tracked and i not in gone]
            assert len(kept) == min(keep - 1, len([i for i in range(100, 600, 100)
                                                   if i < tracked]))


def test_keep_below_one_is_refused():
    with pytest.raises(ValueError, match="--keep-last-checkpoints must be at least 1"):
        checkpoints_to_remove([1, 2], 2, 0)


def _checkpoint(save_dir: Path, iteration: int, whole: bool = True) -> Path:
    path = save_dir / f"iter_{iteration:07d}"
    path.mkdir(parents=True)
    (path / ("whole" if whole else "torn")).write_text("")
    return path


def _whole(directory: Path) -> str | None:
    return None if (directory / "whole").is_file() else f"{directory} is torn"


def _entries(save_dir: Path) -> list[str]:
    return sorted(path.name for path in save_dir.iterdir())


def test_prune_removes_only_old_whole_checkpoints(tmp_path):
    for iteration in (100, 200, 300, 400, 500):
        _checkpoint(tmp_path, iteration)
    _checkpoint(tmp_path, 50, whole=False)             # torn: left for inspection
    live = staging_name(tmp_path / "iter_0000600", os.getpid())
    live.mkdir()                                       # a live writer's staging directory
    (tmp_path / "iter_0000700").mkdir()                # newer than the tracker's, and torn
    (tmp_path / TRACKER_FILENAME).write_text("500\n")
    removed = prune_checkpoints(tmp_path, 2, problem=_whole)
    assert [path.name for path in removed] == ["iter_0000100", "iter_0000200", "iter_0000300"]
    assert _entries(tmp_path) == ["iter_0000050", "iter_0000400", "iter_0000500",
                                  live.name, "iter_0000700", TRACKER_FILENAME]


def test_prune_does_nothing_without_a_whole_tracked_checkpoint(tmp_path):
    for iteration in (100, 200, 300):
        _checkpoint(tmp_path, iteration)
    before = _entries(tmp_path)
    assert prune_checkpoints(tmp_path, 1, problem=_whole) == []      # no tracker
    (tmp_path / TRACKER_FILENAME).write_text("400\n")                # names a missing one
    assert prune_checkpoints(tmp_path, 1, problem=_whole) == []
    (tmp_path / TRACKER_FILENAME).write_text("300\n")
    assert prune_checkpoints(tmp_path, None, problem=_whole) == []   # N unset
    assert _entries(tmp_path) == [*before, TRACKER_FILENAME]


@pytest.mark.parametrize("argv, message", [
    (["--keep-last-checkpoints", "0", "--save", "x"], "--keep-last-checkpoints must be at least 1"),
    (["--keep-last-checkpoints", "2"], "--keep-last-checkpoints needs --save"),
])
def test_the_flag_is_validated(argv, message, capsys):
    with pytest.raises(SystemExit):
        parse_config(argv)
    assert message in capsys.readouterr().err


def test_the_flag_reaches_the_config():
    assert parse_config(["--save", "x", "--keep-last-checkpoints", "3"]).keep_last_checkpoints == 3
    assert parse_config([]).keep_last_checkpoints is None
