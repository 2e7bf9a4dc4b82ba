"""kill -9 a `hope-pretrain` run at random moments (some inside a save) and resume it until done.

Shared by `tests/training/test_kill_resume.py` (a few kills) and `benchmarks/bench_kill_resume.py`
(20 kills). Every attempt logs `iteration loss.hex()` lines to a file (through a Reporter that
also writes them there), so the losses of the killed-and-resumed run are compared bit for bit
with those of an uninterrupted run. Each rank runs in its own session: after a kill, any process
left in those sessions is an orphan of the run.

    python -m tests.training.kill_harness drive LOSS_FILE -- <hope-pretrain flags>
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.distributed import free_port

REPO = Path(__file__).resolve().parents[2]
LOADED = re.compile(r"successfully loaded checkpoint from \S+ at iteration (\d+)")
SAVED = re.compile(r"saved checkpoint at iteration\s+(\d+)")


def tiny_flags(data: dict, save_dir: Path, train_iters: int, ranks: int) -> list[str]:
    """A 2-layer model with dropout (resume must restore the RNG), saving every iteration."""
    flags = [
        "--num-layers", "2", "--hidden-size", "64", "--num-attention-heads", "4",
        "--seq-length", "64", "--micro-batch-size", "2", "--global-batch-size", str(2 * ranks),
        "--train-iters", str(train_iters), "--lr", "3e-3", "--min-lr", "3e-4",
        "--lr-warmup-iters", "1", "--eval-iters", "0", "--log-interval", "1",
        "--hidden-dropout", "0.1", "--attention-dropout", "0.1",
        "--data-path", data["prefix"], "--tokenizer-model", data["tokenizer"],
        "--split", "90,10,0", "--no-progress", "--num-workers", "1",
        "--save", str(save_dir), "--load", str(save_dir), "--save-interval", "1",
    ]
    return flags + (["--use-distributed-optimizer"] if ranks > 1 else [])


def drive(loss_file: str, argv: list[str]) -> int:
    from megatron_hope.training import cli, loop, reporting
    from megatron_hope.training.step import LOSS_KEY

    class LossLog(reporting.Reporter):
        def scalars(self, iteration, values):
            super().scalars(iteration, values)
            if self.active and LOSS_KEY in values:
                with open(loss_file, "a") as handle:
                    handle.write(f"{iteration} {float(values[LOSS_KEY]).hex()}\n")

    loop.Reporter = LossLog
    return cli.main(argv)



def _session_members(sessions: set[int]) -> list[str]:
    """`pid command` of every live process in these sessions (field 6 of /proc/PID/stat)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            if fields[0] != "Z" and int(fields[3]) in sessions:
                found.append(f"{entry.name} {(entry / 'cmdline').read_bytes()[:120]!r}")
        except (OSError, ValueError, IndexError):
            continue
    return found


@dataclass
class Attempt:
    procs: list[subprocess.Popen]
    logs: list[Path]

    def output(self) -> str:
        return "".join(path.read_text(errors="replace") for path in self.logs if path.exists())


@dataclass
class KillReport:
    kills: int = 0
    kills_inside_save: int = 0
    resumed_from: list[int] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    seconds: float = 0.0
    attempts: int = 0


class Run:
    """One training run (its ranks as separate processes) in `workdir`."""

    def __init__(self, workdir: Path, flags: list[str], ranks: int, timeout: float) -> None:
        self.workdir, self.flags, self.ranks, self.timeout = workdir, flags, ranks, timeout
        workdir.mkdir(parents=True, exist_ok=True)
        self.loss_file = workdir / "losses.txt"
        self.count = 0

    def start(self) -> Attempt:
        self.count += 1
        port = free_port()
        env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(self.ranks),
                   OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        procs, logs = [], []
        for rank in range(self.ranks):
            log = self.workdir / f"attempt{self.count}.rank{rank}.log"
            env_rank = dict(env, RANK=str(rank), LOCAL_RANK=str(rank))
            with open(log, "w") as handle:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "tests.training.kill_harness", "drive",
                     str(self.loss_file), "--", *self.flags],
                    cwd=REPO, env=env_rank, stdout=handle, stderr=subprocess.STDOUT,
                    start_new_session=True))
            logs.append(log)
        return Attempt(procs, logs)

    def kill(self, attempt: Attempt) -> list[str]:
        """SIGKILL every rank, reap them, and return the processes of the run still alive
        after 3 s (orphans)."""
        sessions = {proc.pid for proc in attempt.procs}
        for proc in attempt.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        for proc in attempt.procs:
            proc.wait(timeout=30)
        deadline = time.monotonic() + 3.0
        while (left := _session_members(sessions)) and time.monotonic() < deadline:
            time.sleep(0.05)
        for line in left:  # reap what a failing check found, so no test leaves processes
            with contextlib.suppress(OSError):
                os.kill(int(line.split()[0]), signal.SIGKILL)
        return left

    def finish(self, attempt: Attempt) -> None:
        deadline = time.monotonic() + self.timeout
        try:
            for proc in attempt.procs:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.kill(attempt)
            raise AssertionError(f"run timed out:\n{attempt.output()[-3000:]}") from None
        codes = [proc.returncode for proc in attempt.procs]
        assert codes == [0] * self.ranks, f"exit codes {codes}:\n{attempt.output()[-3000:]}"

    def losses(self) -> list[tuple[int, str]]:
        if not self.loss_file.exists():
            return []
        return [(int(a), b) for a, b in
                (line.split() for line in self.loss_file.read_text().splitlines() if line)]


def _iterations_logged(run: Run) -> int:
    return len(run.losses())


def _check_resume(attempt: Attempt, report: KillReport, last_saved: int) -> str:
    """The attempt resumed from a checkpoint at least as new as the last one reported saved,
    and never had to fall back from an incomplete one; returns its output."""
    text = attempt.output()
    loaded = [int(n) for n in LOADED.findall(text)]
    if loaded:
        report.resumed_from.append(loaded[0])
        assert loaded[0] >= last_saved, (loaded, last_saved)
    assert "newest complete checkpoint" not in text, text[-3000:]
    return text


def run_with_kills(workdir: Path, flags: list[str], ranks: int, kills: int, seed: int,
                   timeout: float = 300.0) -> tuple[Run, KillReport]:
    """Train to the end, killing every rank with SIGKILL `kills` times, each after 1-3 more
    logged iterations: the first as soon as a save has then started (its staging directory
    exists), the others after a further random delay of up to 0.4 s."""
    rng = random.Random(seed)
    run = Run(workdir, flags, ranks, timeout)
    report = KillReport()
    save_dir = Path(flags[flags.index("--save") + 1])
    started = time.monotonic()
    last_saved = -1
    for kill in range(kills):
        attempt = run.start()
        begin = _iterations_logged(run)
        deadline = time.monotonic() + timeout
        inside_save_first = kill == 0
        target = begin + rng.randint(1, 3)
        while time.monotonic() < deadline:
            if any(proc.poll() is not None for proc in attempt.procs):
                break  # finished (or failed) before the kill: handled below
            if (inside_save_first and _iterations_logged(run) >= target
                    and list(save_dir.glob("iter_*.incomplete-*"))):
                break
            if not inside_save_first and _iterations_logged(run) >= target:
                time.sleep(rng.uniform(0.0, 0.4))
                break
            time.sleep(0.005)
        if any(proc.poll() is not None for proc in attempt.procs):
            run.finish(attempt)
            report.attempts = run.count
            break
        inside = bool(list(save_dir.glob("iter_*.incomplete-*")))
        report.orphans += run.kill(attempt)
        report.kills += 1
        report.kills_inside_save += int(inside)
        text = _check_resume(attempt, report, last_saved)
        saved = [int(n) for n in SAVED.findall(text)]
        last_saved = max([last_saved, *saved])
    else:
        attempt = run.start()
        run.finish(attempt)
        _check_resume(attempt, report, last_saved)
    report.attempts = run.count
    report.seconds = time.monotonic() - started
    return run, report


def reference_losses(workdir: Path, flags: list[str], ranks: int,
                     timeout: float = 300.0) -> dict[int, str]:
    run = Run(workdir, flags, ranks, timeout)
    run.finish(run.start())
    losses = dict(run.losses())
    assert len(losses) == len(run.losses()), "an uninterrupted run logged an iteration twice"
    return losses


def mismatches(reference: dict[int, str], run: Run) -> list[str]:
    """Logged (iteration, loss) pairs of the killed run that differ from the reference, and
    reference iterations it never logged."""
    logged = run.losses()
    wrong = [f"iteration {i}: {loss} != {reference.get(i)}" for i, loss in logged
             if reference.get(i) != loss]
    missing = sorted(set(reference) - {i for i, _ in logged})
    return wrong + [f"iteration {i} never logged" for i in missing]


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[1] == "drive" and sys.argv[3] == "--":
        sys.exit(drive(sys.argv[2], sys.argv[4:]))
    sys.exit("usage: python -m tests.training.kill_harness drive LOSS_FILE -- FLAGS")
