"""The embedded default through the real launcher: `torchrun -m megatron_hope.training.cli`.

Two gloo ranks (TP=2), a shrunken model and few iterations keep it to seconds; everything else is
the README's first command: sample corpus, own tokenizer, .bin/.idx, checkpoint, TensorBoard.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.distributed

ITERATION_LINE = re.compile(
    r"^ \[[-\d: ]+\] iteration +(\d+)/ +(\d+) \| consumed samples: +(\d+) \| "
    r"elapsed time per iteration \(ms\): [\d.]+ \| .*learning rate: [\d.E+-]+ \| .*"
    r"lm loss: ([\d.E+-]+) \| grad norm: [\d.]+ \|"
)
VALIDATION_LINE = re.compile(
    r"^ validation loss at iteration (\d+) \| lm loss value: ([\d.E+-]+) \| lm loss PPL: "
)


def test_torchrun_default_run(tmp_path):
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
        "--standalone", "-m", "megatron_hope.training.cli",
        "--tensor-model-parallel-size", "2", "--num-layers", "2", "--hidden-size", "64",
        "--num-attention-heads", "4", "--seq-length", "64", "--micro-batch-size", "4",
        "--train-iters", "30", "--eval-interval", "15", "--eval-iters", "2",
        "--log-interval", "5", "--no-progress",
    ]
    repo = str(Path(__file__).resolve().parents[2])
    pythonpath = os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))
    # Two ranks mean the host (gloo through the CPU shim), on a one-GPU machine too.
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=pythonpath, CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]

    lines = done.stdout.splitlines()
    train = {int(m[1]): float(m[4]) for m in map(ITERATION_LINE.match, lines) if m}
    validation = {int(m[1]): float(m[2]) for m in map(VALIDATION_LINE.match, lines) if m}
    assert sorted(train) == [5, 10, 15, 20, 25, 30], done.stdout
    assert train[30] < train[5]
    assert sorted(validation) == [15, 30]
    assert validation[30] < validation[15]

    run_dir = tmp_path / "runs" / "hope-default"
    checkpoints = run_dir / "checkpoints"
    assert (checkpoints / "latest_checkpointed_iteration.txt").read_text().strip() == "30"
    metadata = json.loads((checkpoints / "iter_0000030" / "hope_run.json").read_text())
    assert metadata["position_encoding"]["position_embedding_type"] == "hope"
    assert metadata["position_encoding"]["hope_train_length"] == 64
    assert metadata["rotated_pairs"] == sum(1 for f in metadata["inv_freq"] if f > 0)
    assert not list(checkpoints.glob("*.incomplete"))
    assert list(Path(run_dir / "tensorboard").glob("events.out.tfevents.*"))
