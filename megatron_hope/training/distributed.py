"""Process-group start-up for torchrun, Slurm's srun, or a plain single process.

torchrun exports RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT. srun exports
SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID / SLURM_JOB_NODELIST but never a master address, so
it is derived from the first host of the node list (as Megatron-LM's Slurm recipes do).
"""

from __future__ import annotations

import datetime
import os
import random
import re
import socket
import subprocess
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from megatron.core import parallel_state, tensor_parallel

from megatron_hope.megatron.cpu import cpu_execution_enabled

DEFAULT_SLURM_MASTER_PORT = 29500
MASTER_PORT_RANGE = (10000, 20000)
"""(first port, number of ports) that `slurm_master_port` draws from: 10000-29999."""


@dataclass(frozen=True)
class LaunchEnvironment:
    """Where this process sits in the job."""

    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    launcher: str
    """torchrun, slurm or single."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def first_slurm_host(nodelist: str) -> str:
    """First host of a Slurm node list, via `scontrol show hostnames` when available.

    Falls back to expanding the first entry of the compact syntax (`node[003-005,9]` -> node003)
    so that a node without scontrol in PATH still starts.
    """
    try:
        out = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout.split()
        if out:
            return out[0]
    except (OSError, subprocess.SubprocessError):
        pass
    first = re.split(r",(?![^\[]*\])", nodelist)[0]
    match = re.match(r"^(.*?)\[([^\]]+)\]", first)
    if not match:
        return first
    prefix, ranges = match.groups()
    return prefix + ranges.split(",")[0].split("-")[0]


def detect_launch_environment(environ: dict[str, str] | None = None) -> LaunchEnvironment:
    """Read the launcher's variables (torchrun first, then Slurm, else one local process)."""
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return LaunchEnvironment(
            rank=int(env["RANK"]),
            world_size=int(env["WORLD_SIZE"]),
            local_rank=int(env.get("LOCAL_RANK", 0)),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=int(env.get("MASTER_PORT", DEFAULT_SLURM_MASTER_PORT)),
            launcher="torchrun",
        )
    # Only a job step (srun) has one process per task; a batch script itself also sees
    # SLURM_PROCID=0 and SLURM_NTASKS, but is one process and must not wait for the others.
    if "SLURM_STEP_ID" in env and "SLURM_PROCID" in env:
        nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or "127.0.0.1"
        return LaunchEnvironment(
            rank=int(env["SLURM_PROCID"]),
            world_size=int(env.get("SLURM_STEP_NUM_TASKS") or env["SLURM_NTASKS"]),
            local_rank=int(env.get("SLURM_LOCALID", 0)),
            master_addr=env.get("MASTER_ADDR") or first_slurm_host(nodelist),
            master_port=int(env.get("MASTER_PORT") or slurm_master_port(env)),
            launcher="slurm",
        )
    return LaunchEnvironment(0, 1, 0, "127.0.0.1", _free_port(), "single")


def slurm_master_port(env: dict[str, str]) -> int:
    """A port per job, so that two jobs sharing a node do not both listen on 29500.

    Drawn from 10000-29999 (`MASTER_PORT_RANGE`): below Linux's ephemeral range (32768-60999,
    `net.ipv4.ip_local_port_range`), from which the kernel hands out the source ports of
    outgoing connections (NCCL's and gloo's among them), so no other socket of the node can
    already hold the port when rank 0 binds it.
    """
    job_id = env.get("SLURM_JOB_ID")
    if job_id and job_id.isdigit():
        first, size = MASTER_PORT_RANGE
        return first + int(job_id) % size
    return DEFAULT_SLURM_MASTER_PORT


def set_random_seed(seed: int) -> None:
    """Megatron-LM's seeding: one seed per pipeline stage, and the TP-aware model-parallel RNG."""
    stage_seed = seed + 100 * parallel_state.get_pipeline_model_parallel_rank()
    random.seed(stage_seed)
    np.random.seed(stage_seed)
    torch.manual_seed(stage_seed)
    tensor_parallel.model_parallel_cuda_manual_seed(stage_seed)


def initialize_distributed(
    tensor_model_parallel_size: int = 1,
    pipeline_model_parallel_size: int = 1,
    context_parallel_size: int = 1,
    timeout_minutes: int | None = None,
    virtual_pipeline_model_parallel_size: int | None = None,
) -> LaunchEnvironment:
    """Start torch.distributed (gloo on CPU, nccl on GPU) and megatron-core's parallel groups.

    Reuses an already-initialised default process group (e.g. one made by a test harness).
    `timeout_minutes` (Megatron-LM's --distributed-timeout-minutes) bounds every collective, e.g.
    the barrier while rank 0 builds the dataset indexes; default torch's (10 minutes).
    Without CUDA, the caller must have switched CPU execution on (`with cpu_execution():`, see
    `megatron_hope.megatron.cpu`): library code never patches torch behind its caller's back.
    """
    cpu = not torch.cuda.is_available()
    if cpu and not cpu_execution_enabled():
        raise RuntimeError(
            "megatron-core needs CUDA, and this machine has none: on a CPU machine run the call "
            "inside `with megatron_hope.megatron.cpu.cpu_execution():` (the hope-* commands do)"
        )
    launch = detect_launch_environment()
    if not dist.is_initialized():
        if not cpu:
            torch.cuda.set_device(launch.local_rank % torch.cuda.device_count())
        # env:// lets torchrun's workers join the store its agent already serves on
        # MASTER_PORT; for Slurm and single processes the variables are filled in here.
        os.environ.setdefault("MASTER_ADDR", launch.master_addr)
        os.environ.setdefault("MASTER_PORT", str(launch.master_port))
        os.environ.setdefault("RANK", str(launch.rank))
        os.environ.setdefault("WORLD_SIZE", str(launch.world_size))
        os.environ.setdefault("LOCAL_RANK", str(launch.local_rank))
        dist.init_process_group(
            backend="gloo" if cpu else "nccl",
            init_method="env://",
            rank=launch.rank,
            world_size=launch.world_size,
            **({"timeout": datetime.timedelta(minutes=timeout_minutes)} if timeout_minutes else {}),
        )
    else:
        launch = LaunchEnvironment(
            dist.get_rank(), dist.get_world_size(), launch.local_rank,
            launch.master_addr, launch.master_port, launch.launcher,
        )
    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel(
            tensor_model_parallel_size=tensor_model_parallel_size,
            pipeline_model_parallel_size=pipeline_model_parallel_size,
            context_parallel_size=context_parallel_size,
            virtual_pipeline_model_parallel_size=virtual_pipeline_model_parallel_size,
        )
    return launch


def shutdown_distributed(destroy_process_group: bool) -> None:
    """Tear down megatron-core's groups (and the default group if this module made it)."""
    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if destroy_process_group and dist.is_initialized():
        dist.destroy_process_group()
