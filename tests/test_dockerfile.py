"""The Dockerfile's Megatron-LM: a tested tag, the megatron-core release line that pairs with it,
and MEGATRON_LM_PATH where the clone goes. The image itself is not built here (no docker daemon
on the CPU machines); these read the file.

    python -m pytest -q tests/test_dockerfile.py
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from megatron_hope.integrations.launcher import ENV_VAR, TESTED_TAGS

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = (REPO / "Dockerfile").read_text()
MEGATRON_LM = "https://github.com/NVIDIA/Megatron-LM"
SERIES_LINE = re.compile(r"^\s*(mcore_series=.*?;\s*mcore_series=.*?);", re.MULTILINE)
"""The shell lines that turn the tag into megatron-core's release line."""


def the_ref() -> str:
    found = re.findall(r"^ARG MEGATRON_LM_REF=(\S+)$", DOCKERFILE, re.MULTILINE)
    assert len(found) == 1, found
    return found[0]


def series_of(ref: str) -> str:
    """megatron-core's release line the Dockerfile's own shell derives from `ref`."""
    derivation = SERIES_LINE.search(DOCKERFILE)
    assert derivation, "no mcore_series derivation in the Dockerfile"
    done = subprocess.run(["bash", "-c", f'{derivation.group(1)}; echo "$mcore_series"'],
                          env={"MEGATRON_LM_REF": ref}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_megatron_lm_ref_is_a_tested_tag():
    assert the_ref() in TESTED_TAGS.values(), (the_ref(), TESTED_TAGS)
    # An ARG declared before FROM is only visible to FROM itself, not to the RUN lines.
    assert DOCKERFILE.index("ARG MEGATRON_LM_REF=") > DOCKERFILE.index("\nFROM ")


@pytest.mark.parametrize("ref", sorted(TESTED_TAGS.values()))
def test_the_megatron_core_pin_pairs_with_the_ref(ref):
    """The pin is derived from the tag; for every tested tag it gives the paired line."""
    assert TESTED_TAGS[series_of(ref)] == ref
    installs = re.findall(r'pip install [^\n]*"(megatron-core[^"]*)"', DOCKERFILE)
    assert installs == ["megatron-core==${mcore_series}.*"], installs


def test_megatron_lm_path_points_at_the_clone():
    clone = re.search(r'git clone --depth 1 --branch "\$\{MEGATRON_LM_REF\}" '
                      rf"{re.escape(MEGATRON_LM)}\s*\\?\s*(\S+);", DOCKERFILE)
    assert clone, "no shallow clone of Megatron-LM at ${MEGATRON_LM_REF}"
    paths = re.findall(rf"^ENV {ENV_VAR}=(\S+)$", DOCKERFILE, re.MULTILINE)
    assert paths == [clone.group(1)], (paths, clone.group(1))


def test_the_build_runs_megatron_lms_start_up_steps():
    """The smoke test finds Megatron-LM through the launcher and runs rank 0's `make` of the
    dataset helpers beside the wheel's (the Makefile the wheel lacks is copied there)."""
    assert "launcher.find_megatron_lm(None)" in DOCKERFILE
    assert "compile_helpers()" in DOCKERFILE
    assert "megatron/core/datasets/Makefile" in DOCKERFILE


def test_every_path_the_dockerfile_names_exists():
    named = set(re.findall(r"(?:examples|tools|tests)/[\w/.-]+\.(?:sh|sbatch|py)", DOCKERFILE))
    assert named, "the header names no example or tool"
    assert sorted(path for path in named if not (REPO / path).is_file()) == []
