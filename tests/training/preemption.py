"""Preempt a 2-rank `hope-pretrain` run as a cluster does, then resume it in a new job.

Shared by the torchrun test (tests/training/test_preemption.py) and the Slurm one
(tests/slurm/test_srun.py). The run logs `iteration loss.hex()` lines through
`tests.training.kill_harness drive`, so the preempted-and-resumed run is compared bit for bit
with an uninterrupted one. Every run stops at `EXIT_INTERVAL`; the preempted one is signalled
after `SIGNAL_AFTER` logged iterations and must stop (saving) well before that.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from megatron_hope.training.checkpointing import read_tracker
from tests.training import kill_harness

EXIT_INTERVAL = 16
SIGNAL_AFTER = 2
STOP_TIMEOUT_S = 120
"""Signal to exit: one step, one collective vote, one save of a tiny model, on a loaded CPU."""


def preemption_flags(data: dict, save_dir: Path) -> list[str]:
    """The kill test's 2-rank model (dropout on, distributed optimizer), no periodic saves, a
    long schedule cut at `EXIT_INTERVAL` so every run sees the same learning rates."""
    flags = kill_harness.tiny_flags(data, save_dir, train_iters=10_000, ranks=2)
    at = flags.index("--save-interval")
    del flags[at:at + 2]
    return [*flags, "--exit-interval", str(EXIT_INTERVAL)]


def reference_run(data: dict, workdir: Path) -> dict[int, str]:
    """The uninterrupted run's losses by iteration (ranks started by hand, as torchrun would)."""
    reference = kill_harness.reference_losses(
        workdir, preemption_flags(data, workdir / "ckpt"), ranks=2, timeout=240)
    assert sorted(reference) == list(range(1, EXIT_INTERVAL + 1))
    return reference


def job_command(loss_file: Path, flags: list[str]) -> list[str]:
    return ["-m", "tests.training.kill_harness", "drive", str(loss_file), "--", *flags]


def job_env(**extra: str) -> dict[str, str]:
    pythonpath = os.pathsep.join(
        filter(None, [str(kill_harness.REPO), os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONPATH=pythonpath, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
                CUDA_VISIBLE_DEVICES="", **extra)


def logged_losses(loss_file: Path) -> list[tuple[int, str]]:
    if not loss_file.exists():
        return []
    return [(int(a), b) for a, b in
            (line.split() for line in loss_file.read_text().splitlines() if line)]


@dataclass
class Preempted:
    returncode: int
    output: str
    stopped_at: int | None
    seconds_to_exit: float


def run_and_preempt(command: list[str], env: dict[str, str], cwd: Path, loss_file: Path,
                    save_dir: Path, send_signal) -> Preempted:
    """Start `command`, call `send_signal(process)` once `SIGNAL_AFTER` iterations are logged,
    and wait for the whole job to exit."""
    log = cwd / "preempted.log"
    with open(log, "w") as handle:
        job = subprocess.Popen(command, cwd=cwd, env=env, stdout=handle,
                               stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while len(logged_losses(loss_file)) < SIGNAL_AFTER:
            if job.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the run ended or stalled before it was signalled:\n"
                                     f"{log.read_text(errors='replace')[-4000:]}")
            time.sleep(0.02)
        signalled = time.monotonic()
        send_signal(job)
        returncode = job.wait(timeout=STOP_TIMEOUT_S)
        seconds = time.monotonic() - signalled
    finally:
        if job.poll() is None:
            for process in [*psutil.Process(job.pid).children(recursive=True)]:
                process.kill()
            job.kill()
            job.wait()
    return Preempted(returncode, log.read_text(errors="replace"), read_tracker(str(save_dir)),
                     seconds)


def signal_process_tree(parent_pid: int, signum: int, include_parent: bool) -> list[int]:
    """Send `signum` to every descendant of `parent_pid` (ranks and their DataLoader workers, as
    Slurm signals every process of a step); return their pids."""
    processes = psutil.Process(parent_pid).children(recursive=True)
    if include_parent:
        processes.append(psutil.Process(parent_pid))
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signum)
    return [process.pid for process in processes]


def check_exact_resume(reference: dict[int, str], preempted: Preempted, loss_file: Path) -> None:
    """The preempted run stopped early with a checkpoint, and its losses together with the next
    job's are the uninterrupted run's, each iteration logged once."""
    assert preempted.returncode == 0, f"exit {preempted.returncode}:\n{preempted.output[-4000:]}"
    assert preempted.stopped_at is not None, f"no checkpoint was saved:\n{preempted.output[-4000:]}"
    assert SIGNAL_AFTER <= preempted.stopped_at < EXIT_INTERVAL, preempted.stopped_at
    logged = logged_losses(loss_file)
    iterations = [i for i, _ in logged]
    assert iterations == list(range(1, EXIT_INTERVAL + 1)), iterations
    wrong = [f"iteration {i}: {loss} != {reference[i]}" for i, loss in logged
             if reference[i] != loss]
    assert not wrong, wrong
