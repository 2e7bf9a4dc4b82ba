"""A run chained over jobs (`sbatch --dependency=afterany`), as the examples' Slurm scripts run:
the same `hope-pretrain` command again and again, --load == --save.

    python -m pytest -q tests/training/test_chained_jobs.py

One tiny run to completion that saves every iteration and keeps the last two checkpoints; then
the same command, as the next job in the chain would start it: it exits 0 at once with one line
and leaves every file of the checkpoint directory as it was.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.synthetic_corpus import prepare_golden_data
from tests.training import kill_harness

TRAIN_ITERS = 4


def _files(directory: Path) -> dict[str, int]:
    """Every path under `directory` with its mtime (ns)."""
    return {str(path.relative_to(directory)): path.stat().st_mtime_ns
            for path in sorted(directory.rglob("*"))}


def _hope_pretrain(flags: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    pythonpath = os.pathsep.join(filter(None, [str(kill_harness.REPO),
                                               os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=pythonpath, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "megatron_hope.training.cli", *flags], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)
    return done, time.monotonic() - started


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return prepare_golden_data(tmp_path_factory.mktemp("data"), num_documents=300)


def test_a_finished_run_exits_at_once_and_keeps_its_last_checkpoints(data, tmp_path):
    save = tmp_path / "checkpoints"
    flags = [*kill_harness.tiny_flags(data, save, train_iters=TRAIN_ITERS, ranks=1),
             "--num-workers", "0", "--keep-last-checkpoints", "2"]
    first, first_seconds = _hope_pretrain(flags, tmp_path)
    assert first.returncode == 0, first.stderr[-4000:]
    # Saved at every iteration, pruned after each save: the tracker's and the one before it.
    assert sorted(path.name for path in save.iterdir()) == [
        "iter_0000003", "iter_0000004", "latest_checkpointed_iteration.txt"]

    before = _files(save)
    again, seconds = _hope_pretrain(flags, tmp_path)
    assert again.returncode == 0, again.stderr[-4000:]
    assert again.stdout.splitlines() == [
        f"hope-pretrain: run already finished: {save} holds iteration {TRAIN_ITERS} "
        f"(--train-iters {TRAIN_ITERS}); nothing to do"], again.stdout
    assert "iteration" not in again.stderr and "validation" not in again.stdout
    assert _files(save) == before  # nothing rewritten, nothing removed
    assert seconds < first_seconds, (seconds, first_seconds)

    # One more iteration asked for: the chain goes on (no early exit).
    more = [*flags[:flags.index("--train-iters") + 1], str(TRAIN_ITERS + 1),
            *flags[flags.index("--train-iters") + 2:]]
    longer, _ = _hope_pretrain(more, tmp_path)
    assert longer.returncode == 0, longer.stderr[-4000:]
    assert "already finished" not in longer.stdout
    assert (save / "latest_checkpointed_iteration.txt").read_text().strip() == "5"
    assert sorted(path.name for path in save.glob("iter_*")) == ["iter_0000004", "iter_0000005"]
