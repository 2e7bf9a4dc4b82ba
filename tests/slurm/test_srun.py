"""`hope-pretrain` under a real (throw-away, one-node) Slurm: srun and `sbatch --wait`.

The ranks get only Slurm's variables (SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID /
SLURM_JOB_NODELIST); MASTER_ADDR is derived by the package from the node list, MASTER_PORT is
exported (a free port) so that parallel test runs do not collide. Skipped where Slurm and munge
are not installed or the tests do not run as root (see tests/slurm/cluster.py).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.distributed import free_port
from tests.slurm.cluster import SlurmCluster, slurm_cluster

pytestmark = pytest.mark.distributed

REPO = Path(__file__).resolve().parents[2]
JOB_TIMEOUT_S = 300
TINY_MODEL = [
    "--num-layers", "2", "--hidden-size", "64", "--num-attention-heads", "4",
    "--seq-length", "64", "--micro-batch-size", "4", "--train-iters", "6", "--eval-iters", "0",
    "--log-interval", "3", "--no-progress", "--tensor-model-parallel-size", "2",
]
ITERATION_3 = re.compile(r"^ \[[-\d: ]+\] iteration        3/       6 \|", re.MULTILINE)
ITERATION_6 = re.compile(r"^ \[[-\d: ]+\] iteration        6/       6 \|", re.MULTILINE)
# Variables of another launcher that would take precedence over Slurm's in the ranks.
FOREIGN_LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")



@pytest.fixture(scope="module")
def slurm() -> SlurmCluster:
    with slurm_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def data_args(slurm, tmp_path_factory) -> list[str]:
    from megatron_hope.data.sample_data import prepare_sample_data

    sample = prepare_sample_data(tmp_path_factory.mktemp("slurm-data"), vocab_size=600,
                                 max_bytes=1_500_000)
    return ["--data-path", str(sample.data_prefix), "--tokenizer-model",
            str(sample.tokenizer_path), "--split", "90,10,0"]


def job_env(cluster: SlurmCluster) -> dict[str, str]:
    """What srun/sbatch propagate to the ranks: the package importable, a free MASTER_PORT."""
    env = {k: v for k, v in cluster.env.items() if k not in FOREIGN_LAUNCHER_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["MASTER_PORT"] = str(free_port())
    env["OMP_NUM_THREADS"] = "1"
    env["CUDA_VISIBLE_DEVICES"] = ""  # two ranks on one node mean the host (gloo, CPU shim)
    try:
        socket.gethostbyname(cluster.node)
    except OSError:  # a runner whose hostname does not resolve: gloo could not use it either
        env["MASTER_ADDR"] = "127.0.0.1"
    return env


def _report(done: subprocess.CompletedProcess, cluster: SlurmCluster) -> str:
    return (f"exit {done.returncode}\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n"
            f"{done.stderr[-5000:]}\n{cluster.logs()}")


def test_srun_trains_with_tensor_parallelism(slurm, data_args, tmp_path):
    command = ["srun", "--ntasks=2", "--kill-on-bad-exit=1", "--time=5", sys.executable,
               "-m", "megatron_hope.training.cli", *TINY_MODEL, *data_args,
               "--save", str(tmp_path / "checkpoints")]
    done = subprocess.run(command, cwd=tmp_path, env=job_env(slurm), capture_output=True,
                          text=True, timeout=JOB_TIMEOUT_S)
    assert done.returncode == 0, _report(done, slurm)
    # Only the last rank logs (Megatron's convention): each line exactly once across 2 tasks.
    assert len(ITERATION_3.findall(done.stdout)) == 1, _report(done, slurm)
    assert len(ITERATION_6.findall(done.stdout)) == 1, _report(done, slurm)
    latest = tmp_path / "checkpoints" / "latest_checkpointed_iteration.txt"
    assert latest.read_text().strip() == "6"


JOB_SCRIPT = """#!/bin/bash
#SBATCH --ntasks=2
#SBATCH --time=5
srun {python} -m megatron_hope.training.cli "$@"
"""


def _sbatch(cluster: SlurmCluster, tmp_path: Path, *args: str) -> tuple[
        subprocess.CompletedProcess, str, str, dict[str, str]]:
    """`sbatch --wait` the 2-task job script; returns (sbatch result, stdout, stderr, job info)."""
    script = tmp_path / "job.sh"
    script.write_text(JOB_SCRIPT.format(python=sys.executable))
    out, err = tmp_path / "job.out", tmp_path / "job.err"
    done = subprocess.run(
        ["sbatch", "--wait", "--parsable", f"--chdir={tmp_path}", f"--output={out}",
         f"--error={err}", str(script), *args],
        cwd=tmp_path, env=job_env(cluster), capture_output=True, text=True,
        timeout=JOB_TIMEOUT_S)
    job_id = done.stdout.strip().split(";")[0]
    info = cluster.job_info(job_id) if job_id.isdigit() else {}
    return done, _read(out), _read(err), info


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def test_sbatch_wait_returns_the_jobs_exit_code(slurm, data_args, tmp_path):
    done, stdout, stderr, info = _sbatch(slurm, tmp_path, *TINY_MODEL, *data_args)
    message = f"{_report(done, slurm)}\n--- job stdout\n{stdout}\n--- job stderr\n{stderr[-4000:]}"
    assert done.returncode == 0, message
    assert len(ITERATION_3.findall(stdout)) == 1, message
    assert len(ITERATION_6.findall(stdout)) == 1, message
    if info:  # the record outlives the job by >= MinJobAge seconds
        assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), info


def test_sbatch_wait_propagates_a_failing_job(slurm, tmp_path):
    done, _, stderr, info = _sbatch(slurm, tmp_path, "--no-such-flag")
    message = f"{_report(done, slurm)}\n--- job stderr\n{stderr[-4000:]}"
    assert done.returncode == 2, message  # argparse's status, through srun and the batch step
    assert "unrecognized arguments: --no-such-flag" in stderr, message
    if info:
        assert (info["JobState"], info["ExitCode"]) == ("FAILED", "2:0"), info


@pytest.fixture(scope="module")
def preemption_data(slurm, tmp_path_factory) -> dict:
    from tests.synthetic_corpus import prepare_golden_data

    return prepare_golden_data(tmp_path_factory.mktemp("preemption-data"))


def test_scancel_signal_saves_on_every_rank_and_the_next_job_resumes_exactly(
        slurm, preemption_data, tmp_path):
    """`scancel --signal=USR1` (what `sbatch --signal=USR1@SECONDS` sends before the time limit)
    reaches every process of the step, DataLoader workers included: both ranks save one
    checkpoint, the step exits 0, and the next job's losses are the uninterrupted run's."""
    from tests.training import preemption

    reference = preemption.reference_run(preemption_data, tmp_path / "reference")
    save_dir = tmp_path / "ckpt"
    loss_file = tmp_path / "losses.txt"
    flags = [*preemption.preemption_flags(preemption_data, save_dir),
             "--exit-signal-handler", "--exit-signal", "SIGUSR1"]
    name = f"preempt-{os.getpid()}"
    env = job_env(slurm)
    srun = ["srun", "--ntasks=2", "--kill-on-bad-exit=1", "--time=5", f"--job-name={name}",
            sys.executable, *preemption.job_command(loss_file, flags)]

    def scancel(job):
        done = slurm.run("scancel", "--signal=USR1", f"--name={name}")
        assert done.returncode == 0, done.stderr

    preempted = preemption.run_and_preempt(srun, env, tmp_path, loss_file, save_dir, scancel)
    assert "SIGUSR1" in preempted.output, preempted.output[-3000:]
    resumed = subprocess.run(srun, cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=JOB_TIMEOUT_S)
    assert resumed.returncode == 0, _report(resumed, slurm)
    preemption.check_exact_resume(reference, preempted, loss_file)
