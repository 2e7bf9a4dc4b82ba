"""Megatron-LM's sources for the tests that run its own code, from ../shared/megatron-lm.

The archive is the tag that pairs with the installed megatron-core (0.16.x: core_v0.16.1, 0.19.x:
core_v0.19.0); `MEGATRON_LM_ARCHIVES` names another folder holding `megatron-lm-<tag>.tar.gz`.
It is unpacked once into `~/.cache/megatron-hope/megatron-lm/` (override: `$MEGATRON_HOPE_CACHE`),
atomically: a whole folder or none. Tests skip, saying why, where the archive is absent (a user's
machine has no ../shared).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tarfile
from collections.abc import Sequence
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
TAGS = {"0.16": "core_v0.16.1", "0.19": "core_v0.19.0"}
_COMPLETE_MARKER = Path("megatron/training/training.py")


def megatron_core_series() -> str:
    """"0.16" or "0.19": the installed megatron-core's release line."""
    import megatron.core

    return ".".join(megatron.core.__version__.split(".")[:2])


def archive_tag() -> str | None:
    return TAGS.get(megatron_core_series())


def archive_folder() -> Path:
    return Path(os.environ.get("MEGATRON_LM_ARCHIVES", REPOSITORY.parent / "shared/megatron-lm"))


def find_archive() -> Path | None:
    tag = archive_tag()
    archive = archive_folder() / f"megatron-lm-{tag}.tar.gz"
    return archive if tag and archive.is_file() else None


def missing_archive_reason() -> str | None:
    """Why there is no Megatron-LM archive for this megatron-core, or None."""
    if archive_tag() is None:
        return f"no Megatron-LM tag pairs with megatron-core {megatron_core_series()}"
    if find_archive() is None:
        return (f"Megatron-LM archive megatron-lm-{archive_tag()}.tar.gz not found in "
                f"{archive_folder()} (set MEGATRON_LM_ARCHIVES to the folder that holds it)")
    return None


def unpack_or_skip(needed_packages: Sequence[str] = ()) -> Path:
    """The unpacked folder, or skip the calling test saying what is missing: the archive, or
    packages that Megatron-LM's code imports (e.g. `six`, `nltk`, `triton` for its tools)."""
    reason = missing_archive_reason()
    missing = [name for name in needed_packages if importlib.util.find_spec(name) is None]
    if reason is None and missing:
        reason = f"Megatron-LM's code needs {', '.join(missing)} (pip install them)"
    if reason is not None:
        pytest.skip(reason)
    return unpack()


def unpack() -> Path:
    """The unpacked `megatron-lm-<tag>/` folder (call `missing_archive_reason` first)."""
    archive = find_archive()
    if archive is None:
        raise FileNotFoundError(missing_archive_reason())
    cache = Path(os.environ.get("MEGATRON_HOPE_CACHE", Path.home() / ".cache/megatron-hope"))
    cache = cache / "megatron-lm"
    folder = cache / archive.name.removesuffix(".tar.gz")
    if not (folder / _COMPLETE_MARKER).is_file():
        cache.mkdir(parents=True, exist_ok=True)
        partial = cache / f".partial-{os.getpid()}"
        try:
            with tarfile.open(archive) as tar:
                members = [m for m in tar.getmembers() if "/tests/" not in m.name]
                tar.extractall(partial, members=members, filter="data")
            (partial / folder.name).rename(folder)
        except OSError:  # another process unpacked it first
            if not (folder / _COMPLETE_MARKER).is_file():
                raise
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return folder
