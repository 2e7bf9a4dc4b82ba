"""Megatron-LM's own `tools/preprocess_data.py`, unpacked from ../shared/megatron-lm archives.

The archive is the tag that pairs with the installed megatron-core (0.16.x: core_v0.16.1,
0.19.x: core_v0.19.0); `MEGATRON_LM_ARCHIVES` names another folder holding
`megatron-lm-<tag>.tar.gz`. The tool imports `megatron.training`, which needs `six`, `nltk` and
`triton` (through megatron-core); `unpack_tool_or_skip` skips a test, saying what is absent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.megatron_lm_archive import (  # noqa: F401 (re-exported for the parity tests)
    REPOSITORY,
    archive_tag,
    unpack_or_skip,
)

NEEDED_PACKAGES = ("six", "nltk", "triton")

# Runs the tool once per argv in one interpreter: its imports (torch, megatron, transformers)
# take seconds, its work on a test corpus well under one.
DRIVER = """
import json, runpy, sys
tool = sys.argv[1]
for argv in json.loads(sys.argv[2]):
    sys.argv = [tool, *argv]
    runpy.run_path(tool, run_name="__main__")
"""


def unpack_tool_or_skip() -> Path:
    """The unpacked Megatron-LM folder whose tools can run here, or skip saying why not."""
    return unpack_or_skip(NEEDED_PACKAGES)


def run_preprocess_data(folder: Path, runs: list[list[str]], cwd: Path) -> None:
    """Megatron-LM's tools/preprocess_data.py once per argv in `runs`, offline."""
    env = {
        **os.environ,
        "PYTHONPATH": str(folder),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONWARNINGS": "ignore",
    }
    tool = str(folder / "tools" / "preprocess_data.py")
    result = subprocess.run(
        [sys.executable, "-c", DRIVER, tool, json.dumps(runs)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"Megatron-LM's preprocess_data.py failed ({result.returncode}):\n"
            f"{result.stderr[-4000:]}"
        )
