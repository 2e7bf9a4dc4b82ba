"""Checkpoint files that survive a kill at any moment: durable writes, whole-or-nothing renames,
completeness checks on load, and clean-up of what a killed writer left behind.

The write protocol (`checkpointing.save_checkpoint`, `convert.staging.staged_directory`):

1. Everything is written into a sibling staging directory whose name says it is incomplete and
   which process writes it: `iter_0000100.incomplete-PID/`.
2. Every file and the directory are fsynced; the directory is then renamed to its final name (if
   that name exists, the two are exchanged in one `renameat2(RENAME_EXCHANGE)` and only then is
   the old one removed), and the parent directory is fsynced.
3. Last, the tracker `latest_checkpointed_iteration.txt` is replaced atomically (temporary file,
   fsync, rename, fsync of the directory).

A kill at any point therefore leaves the tracker naming a whole checkpoint, plus at most a staging
directory whose writer is dead; `remove_stale_staging` deletes those, never one of a live process.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import re
import shutil
from pathlib import Path

logger = logging.getLogger(__name__)

TRACKER_FILENAME = "latest_checkpointed_iteration.txt"
STAGING_MARK = ".incomplete-"
"""Staging directories are named `<final name>.incomplete-<pid of the writer>`."""
_STAGING = re.compile(r"^(?P<name>.+)\.incomplete-(?P<pid>\d+)$")
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def staging_name(final: Path, pid: int | None = None) -> Path:
    return final.with_name(f"{final.name}{STAGING_MARK}{os.getpid() if pid is None else pid}")


def fsync_path(path: Path) -> None:
    """fsync one file or directory (directories: their entries)."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(directory: Path, file_filter=None) -> None:
    """fsync every file under `directory` (those `file_filter(name)` accepts) and every
    directory, innermost first."""
    for root, _dirs, files in os.walk(directory, topdown=False):
        for name in files:
            if file_filter is None or file_filter(name):
                fsync_path(Path(root) / name)
        fsync_path(Path(root))


def write_text_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` in one rename: readers see the old or the new file, whole."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directory entries atomically (Linux renameat2); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(error, f"renameat2({a}, {b}, RENAME_EXCHANGE): {os.strerror(error)}")


def publish_directory(staging: Path, final: Path) -> None:
    """Move a complete, fsynced `staging` directory to `final`.

    An existing `final` is removed only after the new one holds its name: exchanged with the
    staging name in one atomic step, or (where the kernel lacks RENAME_EXCHANGE) renamed aside
    first, so at every moment one whole directory exists under a recognisable name.
    """
    if not final.exists():
        os.replace(staging, final)
    elif _exchange(staging, final):
        shutil.rmtree(staging)  # now holds the previous directory
    else:
        aside = final.with_name(f"{final.name}.replaced-{os.getpid()}")
        os.replace(final, aside)
        os.replace(staging, final)
        shutil.rmtree(aside)
    fsync_path(final.parent)


def pid_alive(pid: int) -> bool:
    """True while a process with this id runs on this machine (or we may not signal it).

    A zombie counts as gone: it has exited and only waits to be reaped, which under a container
    init that never reaps (bash as PID 1) is forever; its staging directories are stale."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # no procfs (not Linux), or it went in between: as signalled
        return True
    return "\nState:\tZ" not in status


def remove_stale_staging(parent: Path, prefix: str = "") -> list[Path]:
    """Delete `parent/<prefix>*.incomplete-PID` directories whose writer PID is dead; returns
    them. A live writer's directory (ours included) is never touched. PIDs are this machine's:
    run jobs that share a save directory on the same node as the writer they follow."""
    removed = []
    if not parent.is_dir():
        return removed
    for path in parent.iterdir():
        match = _STAGING.match(path.name)
        if not match or not path.name.startswith(prefix) or not path.is_dir():
            continue
        pid = int(match["pid"])
        if pid == os.getpid() or pid_alive(pid):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
        logger.warning("removed %s: left by process %d, which is gone (killed during a save)",
                       path, pid)
    return removed


def dcp_problem(directory: Path) -> str | None:
    """What is missing or truncated in a dist_checkpointing (torch_dist) directory, or None.

    Reads the DCP metadata and checks that every shard file it names exists and is at least as
    long as the byte ranges stored in it.
    """
    from torch.distributed.checkpoint import FileSystemReader

    # common.pt is not required: megatron-core 0.19 writes none when the common state is empty.
    for name in (".metadata", "metadata.json"):
        if not (directory / name).is_file():
            return f"{directory}/{name} is missing"
    try:
        metadata = FileSystemReader(str(directory)).read_metadata()
    except Exception as error:  # torch raises several types for a damaged file
        return f"{directory}/.metadata is unreadable ({type(error).__name__}: {error})"
    needed: dict[str, int] = {}
    for info in (metadata.storage_data or {}).values():
        end = int(info.offset) + int(info.length)
        needed[info.relative_path] = max(needed.get(info.relative_path, 0), end)
    for name, size in sorted(needed.items()):
        path = directory / name
        if not path.is_file():
            return f"shard {path} named in {directory.name}/.metadata is missing"
        if path.stat().st_size < size:
            return (f"shard {path} is truncated ({path.stat().st_size} bytes, the metadata "
                    f"needs {size})")
    return None


# -- which checkpoint `--load` resumes from ------------------------------------------------


def checkpoint_dir(save_dir: str | Path, iteration: int) -> Path:
    return Path(save_dir) / f"iter_{iteration:07d}"


def read_tracker(load_dir: str | Path) -> int:
    """The iteration named by the tracker file; a clear error if it is missing or malformed."""
    tracker = Path(load_dir) / TRACKER_FILENAME
    if not tracker.is_file():
        raise ValueError(
            f"--load {load_dir}: no {TRACKER_FILENAME}; is it a directory written by "
            "hope-pretrain --save (an interrupted first save leaves none)?"
        )
    # Replaced, not strict: binary garbage is reported with the file's name, not as a codec
    # error that names nothing.
    text = tracker.read_bytes()[:200].decode("utf-8", errors="replace").strip()
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{tracker}: expected an iteration number, found {text!r}") from None


def checkpoint_problem(directory: Path) -> str | None:
    """Why `directory` is not a whole checkpoint (missing metadata or shard), or None."""
    if not directory.is_dir():
        return f"{directory} does not exist"
    from megatron_hope.training.run_metadata import RunMetadata

    try:
        RunMetadata.read(directory)
    except ValueError as error:
        return str(error)
    return dcp_problem(directory)


def saved_iterations(load_dir: Path) -> list[int]:
    """Iterations of the `iter_XXXXXXX` directories under `load_dir`, newest first."""
    found = [int(path.name[5:]) for path in load_dir.glob("iter_*")
             if re.fullmatch(r"iter_\d{7,}", path.name) and path.is_dir()]
    return sorted(found, reverse=True)


def resolve_load_iteration(load_dir: str | Path, strict: bool = False) -> int | None:
    """The iteration `--load` resumes from: the tracker's if that checkpoint is whole, else the
    newest whole one (with a warning naming what was wrong; `strict`: a ValueError instead).
    None when the directory holds no checkpoint at all."""
    load_dir = Path(load_dir)
    saved = saved_iterations(load_dir) if load_dir.is_dir() else []
    try:
        named = read_tracker(load_dir)
    except ValueError as error:
        if not saved and not (load_dir / TRACKER_FILENAME).exists():
            return None
        named, problem = None, str(error)
    else:
        problem = checkpoint_problem(checkpoint_dir(load_dir, named))
        if problem is None:
            return named
        problem = f"{TRACKER_FILENAME} names iteration {named}, but {problem}"
    if strict:
        raise ValueError(f"--load {load_dir}: {problem} (--strict-load: not falling back to an "
                         "older checkpoint)")
    for iteration in saved:
        if iteration != named and checkpoint_problem(checkpoint_dir(load_dir, iteration)) is None:
            logger.warning("--load %s: %s; loading iteration %d, the newest complete checkpoint",
                           load_dir, problem, iteration)
            return iteration
    raise ValueError(f"--load {load_dir}: {problem}, and no other complete checkpoint is there")


def agreed_load_iteration(load_dir: str | None, strict: bool) -> int | None:
    """`resolve_load_iteration` decided on rank 0 (which logs any fallback) and broadcast, so
    every rank loads the same checkpoint; None without --load or without a checkpoint yet."""
    import torch.distributed as dist

    if load_dir is None:
        return None
    decision: list = [None]
    if dist.get_rank() == 0:
        try:
            decision[0] = resolve_load_iteration(load_dir, strict)
        except ValueError as error:
            decision[0] = error
    dist.broadcast_object_list(decision, src=0)
    if isinstance(decision[0], ValueError):
        raise ValueError(str(decision[0]))
    return decision[0]
