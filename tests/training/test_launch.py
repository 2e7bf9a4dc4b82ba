"""Where a process sits in the job, from torchrun's or Slurm's environment variables."""

from __future__ import annotations

import pytest

from megatron_hope.training.distributed import (
    detect_launch_environment,
    first_slurm_host,
    slurm_master_port,
)


def test_torchrun_variables():
    launch = detect_launch_environment({
        "RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "node7",
        "MASTER_PORT": "6000",
    })
    assert (launch.rank, launch.world_size, launch.local_rank) == (3, 8, 1)
    assert (launch.master_addr, launch.master_port, launch.launcher) == ("node7", 6000, "torchrun")


def test_slurm_variables_derive_the_master_from_the_node_list():
    launch = detect_launch_environment({
        "SLURM_PROCID": "9", "SLURM_NTASKS": "16", "SLURM_LOCALID": "1", "SLURM_STEP_ID": "0",
        "SLURM_JOB_NODELIST": "gpu-[017-018]", "SLURM_JOB_ID": "123456",
    })
    assert (launch.rank, launch.world_size, launch.local_rank) == (9, 16, 1)
    assert launch.master_addr == "gpu-017"
    assert launch.master_port == 10000 + 123456 % 20000
    assert launch.launcher == "slurm"


def test_slurm_step_task_count_wins():
    launch = detect_launch_environment({
        "SLURM_PROCID": "1", "SLURM_NTASKS": "8", "SLURM_STEP_NUM_TASKS": "2",
        "SLURM_STEP_ID": "3", "SLURM_JOB_NODELIST": "n1",
    })
    assert launch.world_size == 2


def test_slurm_batch_script_without_srun_is_one_process():
    launch = detect_launch_environment({
        "SLURM_PROCID": "0", "SLURM_NTASKS": "8", "SLURM_JOB_NODELIST": "n[1-2]",
        "SLURM_JOB_ID": "77",
    })
    assert (launch.rank, launch.world_size, launch.launcher) == (0, 1, "single")


@pytest.mark.parametrize("job_id", ["0", "19999", "20000", "123456", "4294967294"])
def test_slurm_master_port_stays_below_the_ephemeral_range(job_id):
    """Linux hands out 32768-60999 as source ports of outgoing connections; a job's port is
    drawn from 10000-29999, so no such connection can hold it already."""
    port = slurm_master_port({"SLURM_JOB_ID": job_id})
    assert 10000 <= port <= 29999
    assert port == 10000 + int(job_id) % 20000


def test_slurm_respects_an_exported_master():
    launch = detect_launch_environment({
        "SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_JOB_NODELIST": "a,b", "SLURM_STEP_ID": "0",
        "MASTER_ADDR": "10.0.0.5", "MASTER_PORT": "1234",
    })
    assert (launch.master_addr, launch.master_port) == ("10.0.0.5", 1234)


@pytest.mark.parametrize("nodelist, first", [
    ("node[003-005,9]", "node003"),
    ("alpha,beta", "alpha"),
    ("rack1-[2,4],rack2-7", "rack1-2"),
    ("single", "single"),
])
def test_first_slurm_host(nodelist, first, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # exercise the parser, not scontrol
    assert first_slurm_host(nodelist) == first


def test_single_process_without_launcher():
    launch = detect_launch_environment({})
    assert (launch.rank, launch.world_size, launch.launcher) == (0, 1, "single")
