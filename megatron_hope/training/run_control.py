"""When a run stops early, and when it collects garbage: Megatron-LM's `--exit-signal-handler`,
`--exit-duration-in-mins` and `--manual-gc` / `--manual-gc-interval`.

Every rank must agree to stop at the same step (a save is collective), so each check reduces a
flag over all ranks; the reduction runs on a device tensor because NCCL reduces nothing else.
"""

from __future__ import annotations

import gc
import signal
import time

import torch
import torch.distributed as dist


def _any_rank(value: bool) -> bool:
    flag = torch.tensor([1.0 if value else 0.0], device=torch.cuda.current_device())
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item() > 0)


class SignalFlag:
    """Set by `--exit-signal` (`--exit-signal-handler`): the run saves and stops at the next
    step on every rank, as soon as any rank has received it."""

    def __init__(self, enabled: bool, signal_name: str = "SIGTERM") -> None:
        self.received = False
        self._signal = signal.Signals[signal_name]
        self._previous = None
        if enabled:
            self._previous = signal.signal(self._signal, self._handle)

    def _handle(self, signum, frame) -> None:
        self.received = True

    def any_rank(self) -> bool:
        return _any_rank(self.received)

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(self._signal, self._previous)


def survive_exit_signal(signal_name: str) -> None:
    """A DataLoader worker's `worker_init_fn`: Slurm signals every process of a step, and a worker
    killed by the exit signal would make the rank's next batch raise before it could save. The
    worker ignores it and ends when its rank closes the loader (or dies: torch's watchdog)."""
    signal.signal(signal.Signals[signal_name], signal.SIG_IGN)


class ExitDuration:
    """`--exit-duration-in-mins`: True once any rank has run that long since the run started."""

    def __init__(self, minutes: float | None, started: float | None = None) -> None:
        self.minutes = minutes
        self.started = time.monotonic() if started is None else started

    def expired(self) -> bool:
        if self.minutes is None:
            return False
        return _any_rank((time.monotonic() - self.started) / 60.0 > self.minutes)


class ManualGC:
    """`--manual-gc`: automatic collection off; collect every `interval` steps (0: never) and
    around evaluation, on every rank at the same step, so no rank stalls the others at random."""

    def __init__(self, enabled: bool, interval: int) -> None:
        self.enabled = enabled
        self.interval = interval
        self._was_enabled = gc.isenabled()
        if enabled:
            gc.disable()
            gc.collect()

    def after_step(self, iteration: int) -> None:
        if self.enabled and self.interval and iteration % self.interval == 0:
            gc.collect()

    def around_eval(self) -> None:
        if self.enabled:
            gc.collect()

    def restore(self) -> None:
        if self.enabled and self._was_enabled:
            gc.enable()
