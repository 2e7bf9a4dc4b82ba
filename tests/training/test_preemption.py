"""Preemption under torchrun: the exit signal reaches every rank (and its DataLoader workers,
as on a cluster), all ranks save one checkpoint and exit 0, and the next job resumes exactly.
The Slurm version (scancel --signal) is in tests/slurm/test_srun.py."""

from __future__ import annotations

import signal
import sys

import pytest

from tests.distributed import free_port
from tests.training import kill_harness, preemption
from tests.training.test_parallel_parity import data  # noqa: F401 (fixture)

pytestmark = pytest.mark.distributed



def torchrun(loss_file, flags) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
            "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
            *preemption.job_command(loss_file, flags)]


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):  # noqa: F811
    return preemption.reference_run(data, tmp_path_factory.mktemp("reference"))


# SIGTERM, the default; SIGUSR1 (what `sbatch --signal=USR1@N` sends) is the Slurm test's
# (tests/slurm/test_srun.py), which CI runs on a real Slurm: one 2-rank job pair each.
@pytest.mark.parametrize("exit_signal", ["SIGTERM"])
def test_signal_to_every_rank_saves_and_the_next_job_resumes_exactly(
        tmp_path, data, reference, exit_signal):  # noqa: F811

    save_dir = tmp_path / "preempted" / "ckpt"
    loss_file = tmp_path / "preempted" / "losses.txt"
    save_dir.parent.mkdir()
    flags = [*preemption.preemption_flags(data, save_dir),
             "--exit-signal-handler", "--exit-signal", exit_signal]
    signum = signal.Signals[exit_signal]
    # torchrun itself is left alone: it would forward a SIGTERM, but SIGUSR1 kills it.
    preempted = preemption.run_and_preempt(
        torchrun(loss_file, flags), preemption.job_env(), save_dir.parent, loss_file, save_dir,
        lambda job: preemption.signal_process_tree(job.pid, signum, include_parent=False))
    assert f"({exit_signal})" in preempted.output or exit_signal in preempted.output, \
        preempted.output[-3000:]
    resumed = kill_harness.Run(save_dir.parent, flags, ranks=2, timeout=240)
    resumed.loss_file = loss_file
    resumed.finish(resumed.start())
    preemption.check_exact_resume(reference, preempted, loss_file)
