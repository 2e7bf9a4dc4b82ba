"""A damaged checkpoint stops `hope-pretrain --load`, `hope-convert` and `hope-eval` with a
message naming the damaged file, never a traceback.

    python -m pytest -x -q tests/robustness/test_corrupt_checkpoints.py

Damage done to copies of one real tiny checkpoint (`tests/eval/tiny_checkpoint.py`, 2
iterations): a truncated shard, a tracker holding text or binary garbage, and `hope_run.json`
of another model (other layer count and width). The checkpoint holds one iteration, so `--load`
has nothing to fall back to.

A missing `hope_run.json` is not damage: every checkpoint also carries Megatron-LM's `args`
(which is how Megatron-LM's own RoPE checkpoints, written without the plug-in, are read), so all
three tools still work from it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.distributed import run_on_ranks

pytestmark = pytest.mark.distributed

ITERATION_DIR = "iter_0000002"


def _truncate_a_shard(checkpoint: Path) -> Path:
    shard = sorted((checkpoint / ITERATION_DIR).glob("*.distcp"))[0]
    with open(shard, "r+b") as handle:
        handle.truncate(shard.stat().st_size // 2)
    return shard


def _garbage_tracker(content: bytes):
    def damage(checkpoint: Path) -> Path:
        tracker = checkpoint / "latest_checkpointed_iteration.txt"
        tracker.write_bytes(content)
        return tracker
    return damage


def _remove_run_metadata(checkpoint: Path) -> Path:
    metadata = checkpoint / ITERATION_DIR / "hope_run.json"
    metadata.unlink()
    return metadata


def _run_metadata_of_another_model(checkpoint: Path) -> Path:
    """Settings of a wider, deeper model with the same head dim (so they are valid in
    themselves): what a hope_run.json copied from another run looks like."""
    metadata = checkpoint / ITERATION_DIR / "hope_run.json"
    values = json.loads(metadata.read_text())
    values["arch"].update(num_layers=3, hidden_size=128, num_attention_heads=8)
    metadata.write_text(json.dumps(values, indent=2))
    return metadata


DAMAGE = {
    "truncated_shard": _truncate_a_shard,
    "tracker_text_garbage": _garbage_tracker(b"garbage\n"),
    "tracker_binary_garbage": _garbage_tracker(b"\xff\xfe\x00\x9c junk"),
    "run_metadata_missing": _remove_run_metadata,
    "run_metadata_of_another_model": _run_metadata_of_another_model,
}
RECOVERABLE = {"run_metadata_missing"}
"""Damage the tools work around (from the args inside the checkpoint): exit 0 expected."""


def _pretrain_argv(trained: dict, load: str) -> list[str]:
    """The tiny checkpoint's own flags (tests/eval/tiny_checkpoint.py), resuming for 1 step.
    --strict-load: without it a garbage tracker falls back, with a warning, to the newest
    complete checkpoint (tests/training/test_checkpoint_files.py), which here is intact."""
    data = trained["data"]
    return ["--num-layers", "2", "--hidden-size", "64", "--num-attention-heads", "4",
            "--seq-length", "64", "--normalization", "RMSNorm", "--swiglu",
            "--disable-bias-linear", "--group-query-attention", "--num-query-groups", "2",
            "--micro-batch-size", "2", "--global-batch-size", "4", "--train-iters", "3",
            "--lr", "3e-3", "--min-lr", "3e-4", "--lr-warmup-iters", "1", "--eval-iters", "0",
            "--split", "90,10,0", "--num-workers", "0", "--no-progress",
            "--data-path", data["prefix"], "--tokenizer-model", data["tokenizer"],
            "--load", load, "--strict-load"]


def _every_cli(rank, cases: list[tuple[str, list[str]]]) -> list[tuple[int | None, str]]:
    """Each (CLI, argv) in this rank: (exit status, stderr); a traceback is recorded, status
    None, and the next case runs (torch's CheckpointException is a BaseException)."""
    import contextlib
    import io
    import traceback

    from megatron_hope.convert.cli import main as convert
    from megatron_hope.eval.cli import main as evaluate
    from megatron_hope.training.cli import main as pretrain

    mains = {"hope-pretrain": pretrain, "hope-convert": convert, "hope-eval": evaluate}
    outcomes = []
    for cli, argv in cases:
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            try:
                status = mains[cli](argv)
            except SystemExit as exit_:
                status = exit_.code
            except BaseException as error:
                status = None
                stderr.write("".join(traceback.format_exception(error)))
        outcomes.append((status, stderr.getvalue()))
    return outcomes


def test_damaged_checkpoints_are_named(trained, tmp_path):
    cases, expected = [], []
    for name, damage in DAMAGE.items():
        copy = tmp_path / name
        shutil.copytree(trained["load"], copy)
        damaged = damage(copy)
        for cli, argv in (
            ("hope-pretrain", _pretrain_argv(trained, str(copy))),
            ("hope-convert", ["--load-dir", str(copy), "--save-dir", str(tmp_path / f"{name}-hf"),
                              "--no-progress"]),
            ("hope-eval", ["copy", "--load", str(copy), "--output-dir",
                           str(tmp_path / f"{name}-eval"), "--samples", "1", "--lengths", "64",
                           "--no-progress"]),
        ):
            cases.append((cli, argv))
            expected.append((name, cli, str(damaged)))
    # The other way round: an intact checkpoint, and flags of another model.
    intact = tmp_path / "intact"
    shutil.copytree(trained["load"], intact)
    argv = _pretrain_argv(trained, str(intact))
    argv[argv.index("--num-layers") + 1] = "3"
    cases.append(("hope-pretrain", argv))
    expected.append(("flags_of_another_model", "hope-pretrain",
                     str(intact / ITERATION_DIR / "hope_run.json")))
    [outcomes] = run_on_ranks(1, _every_cli, cases)
    failures = []
    for (name, cli, damaged), (status, stderr) in zip(expected, outcomes, strict=True):
        if name in RECOVERABLE:
            if status != 0:
                failures.append(f"{cli} on {name}: exit {status}, expected 0:\n{stderr[-1500:]}")
        elif status != 2 or damaged not in stderr or "Traceback" in stderr:
            failures.append(f"{cli} on {name}: exit {status}, expected 2 naming {damaged}:\n"
                            f"{stderr[-1500:]}")
    assert not failures, "\n\n".join(failures)
    left = [p for p in tmp_path.glob("*-hf") if p.name.removesuffix("-hf") not in RECOVERABLE]
    assert not left, f"a failed export left a directory behind: {left}"
