"""A throw-away one-node Slurm (munged + slurmctld + slurmd) for integration tests.

Everything lives under one temporary directory: the munge key and socket, slurm.conf, the state,
spool, pid and log files. The daemons run in their ordinary daemon mode (no systemd) on free
ports, so several clusters can run side by side on one machine; clients find this one through
`SLURM_CONF` (see `SlurmCluster.env`). Needs root (slurmd launches the job steps as the
submitting user, and munged must run as the `munge` user) and the Debian packages:

    apt-get install -y slurm-wlm munge

`slurm_cluster()` skips the calling test, with the reason, where either is missing.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from megatron_hope.training.checkpoint_files import pid_alive
from tests.distributed import free_port

REQUIRED_COMMANDS = ("munged", "slurmctld", "slurmd", "srun", "sbatch", "scontrol", "sinfo",
                     "squeue", "scancel")
INSTALL_HINT = "apt-get install -y slurm-wlm munge"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
MIN_JOB_AGE_S = 5


def missing_requirements() -> str | None:
    """Why a local Slurm cannot be started here, or None when it can."""
    missing = [name for name in REQUIRED_COMMANDS if shutil.which(name) is None
               and not Path("/usr/sbin", name).exists()]
    if missing:
        return f"Slurm/munge not installed (missing {', '.join(missing)}; {INSTALL_HINT})"
    if os.geteuid() != 0:
        return "a local Slurm needs root (slurmd runs the job steps, munged runs as `munge`)"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return f"no `munge` user ({INSTALL_HINT} creates it)"
    return None


def _command(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(missing)"


@dataclass
class SlurmCluster:
    """A running one-node cluster; `env` is os.environ plus this cluster's SLURM_CONF."""

    root: Path
    node: str
    cpus: int
    env: dict[str, str] = field(repr=False)

    @property
    def conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    def run(self, *args: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
        """Run a Slurm client command (sinfo, scontrol, ...) against this cluster."""
        kwargs.setdefault("env", self.env)
        return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout,
                              **kwargs)

    def job_info(self, job_id: int | str) -> dict[str, str]:
        """`scontrol show job` as a dict (JobState, ExitCode, ...)."""
        out = self.run("scontrol", "show", "job", "--oneliner", str(job_id)).stdout
        return dict(item.split("=", 1) for item in out.split() if "=" in item)

    def logs(self) -> str:
        """The daemons' log tails, for assertion messages."""
        return "\n".join(f"--- {path.name}\n{_tail(path)}"
                         for path in sorted(self.log_dir.glob("*.log")))


def _write_conf(root: Path, node: str, cpus: int, munge_socket: Path) -> Path:
    conf = root / "etc" / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=hopetest",
        f"SlurmctldHost={node}(127.0.0.1)",
        f"SlurmctldPort={free_port()}",
        f"SlurmdPort={free_port()}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={munge_socket}",
        f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={root / 'run' / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'run' / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "MpiDefault=none",
        "SwitchType=switch/none",
        "SchedulerType=sched/backfill",
        "SchedulerParameters=batch_sched_delay=0",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "AccountingStorageType=accounting_storage/none",
        "JobAcctGatherType=jobacct_gather/none",
        "JobCompType=jobcomp/none",
        "ReturnToService=2",
        # `sbatch --wait` polls every 2 s only while MinJobAge/2 <= 2 (else 2, 8, 32 s: a 12 s job
        # would return after 42 s); finished jobs stay queryable for >= MinJobAge seconds.
        f"MinJobAge={MIN_JOB_AGE_S}",
        "KillWait=5",
        # Declared CPUs win over the detected ones, so `srun -n 2` also runs on a 1-core runner.
        "SlurmdParameters=config_overrides",
        f"NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=100 State=UNKNOWN",
        f"PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP",
        "",
    ]))
    return conf


def _spawn(argv: list[str], log: Path, **kwargs) -> None:
    """Start a daemon that forks itself away; its launcher must exit 0 at once."""
    with open(log, "ab") as stderr:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr,
                              timeout=30, **kwargs)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {done.returncode}:\n{_tail(log)}")


def _stop(pid_file: Path) -> None:
    pid = _read_pid(pid_file)
    if pid is None or not pid_alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def slurm_cluster(cpus: int | None = None) -> Iterator[SlurmCluster]:
    """Start munged, slurmctld and slurmd under a temporary directory; stop and remove them after.

    Skips the calling test (pytest.skip) when Slurm/munge are not installed or not root, and
    fails it instead where `MEGATRON_HOPE_REQUIRE_SLURM=1` (CI installs Slurm: a skip there would
    hide that the Slurm tests never ran).
    """
    reason = missing_requirements()
    if reason:
        if os.environ.get("MEGATRON_HOPE_REQUIRE_SLURM") == "1":
            pytest.fail(f"MEGATRON_HOPE_REQUIRE_SLURM=1 but {reason}")
        pytest.skip(reason)
    munge_user = pwd.getpwnam("munge")
    node = socket.gethostname().split(".")[0]
    cpus = max(cpus or 0, os.cpu_count() or 1, 2)
    # Not pytest's tmp_path: its parent is 0700 root, and munged (as `munge`) must reach its files.
    root = Path(tempfile.mkdtemp(prefix="hope-slurm-"))
    root.chmod(0o755)
    for name in ("etc", "state", "spool", "run", "log", "munge"):
        (root / name).mkdir(mode=0o755)
    munge_dir = root / "munge"
    munge_socket = munge_dir / "munge.socket.2"
    key = munge_dir / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    for path in (munge_dir, key):
        os.chown(path, munge_user.pw_uid, munge_user.pw_gid)
    conf = _write_conf(root, node, cpus, munge_socket)
    env = dict(os.environ, SLURM_CONF=str(conf))
    for name in list(env):  # a surrounding allocation's variables would confuse the clients
        if name.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_")) and name != "SLURM_CONF":
            del env[name]
    pid_files = {
        "munged": munge_dir / "munged.pid",
        "slurmctld": root / "run" / "slurmctld.pid",
        "slurmd": root / "run" / "slurmd.pid",
    }
    cluster = SlurmCluster(root=root, node=node, cpus=cpus, env=env)
    try:
        _spawn([_command("munged"), f"--socket={munge_socket}", f"--key-file={key}",
                f"--pid-file={pid_files['munged']}", f"--log-file={munge_dir / 'munged.log'}",
                f"--seed-file={munge_dir / 'munged.seed'}"],
               root / "log" / "munged.start.log", user=munge_user.pw_uid,
               group=munge_user.pw_gid, extra_groups=[], cwd=munge_dir)
        _spawn([_command("slurmctld"), "-f", str(conf)], root / "log" / "slurmctld.start.log",
               env=env, cwd=root)
        _spawn([_command("slurmd"), "-f", str(conf), "-N", node],
               root / "log" / "slurmd.start.log", env=env, cwd=root)
        _wait_until_idle(cluster)
        yield cluster
    finally:
        _shutdown(cluster, pid_files)


def _wait_until_idle(cluster: SlurmCluster) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    state = ""
    while time.monotonic() < deadline:
        with contextlib.suppress(subprocess.TimeoutExpired):
            state = cluster.run("sinfo", "--noheader", "--format=%T", timeout=10).stdout.strip()
            if state == "idle":
                return
        time.sleep(0.2)
    raise RuntimeError(f"the local Slurm node never became idle (last state {state!r}):\n"
                       f"{cluster.logs()}\n--- munged.log\n"
                       f"{_tail(cluster.root / 'munge' / 'munged.log')}")


def _shutdown(cluster: SlurmCluster, pid_files: dict[str, Path]) -> None:
    """Cancel what is left, stop slurmd and slurmctld, then munged; remove the directory."""
    if _read_pid(pid_files["slurmctld"]) is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            cluster.run("scancel", "--full", f"--user={pwd.getpwuid(os.geteuid()).pw_name}",
                        timeout=15)
            # Let slurmd reap the cancelled steps (their ranks included) before it goes.
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while time.monotonic() < deadline and cluster.run(
                    "squeue", "--noheader", "--format=%i", timeout=15).stdout.strip():
                time.sleep(0.2)
    for name in ("slurmd", "slurmctld", "munged"):
        _stop(pid_files[name])
    shutil.rmtree(cluster.root, ignore_errors=True)
