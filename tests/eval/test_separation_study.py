"""The separation study (examples/extrapolation_study/separation_study.py) at a toy size, and its
task generator against an oracle.

    python -m pytest -q tests/eval/test_separation_study.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from megatron_hope.eval.recall_task import RecallTask, accuracy, oracle_predictions, scored_mask

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "extrapolation_study" / \
    "separation_study.py"


@pytest.mark.parametrize("length", [64, 96, 256])
def test_oracle_scores_100_and_a_constant_scores_chance(length):
    task = RecallTask(vocab_size=512, copy_tokens=8, max_distance=32)
    tokens, targets = task.batch(seed=3, count=20, length=length)
    mask = scored_mask(targets, window=32)
    assert mask[:, : length - 32].sum() == 0 and mask.sum() > 0
    assert accuracy(oracle_predictions(tokens), tokens, mask)["accuracy"] == 100.0
    # Every id is equally likely, so one constant guess is right ~1/512 of the time.
    constant = accuracy(torch.full_like(tokens, 7), tokens, mask)
    assert constant["accuracy"] < 2.0 and constant["samples"] == 20


def test_copies_stay_within_max_distance_and_fresh_tokens_are_unique():
    task = RecallTask(vocab_size=300, copy_tokens=4, max_distance=12)
    tokens, targets = task.batch(seed=0, count=5, length=256)
    for row, scored in zip(tokens.tolist(), targets.tolist(), strict=True):
        seen: dict[int, int] = {}
        for position, token in enumerate(row):
            if token in seen:  # a copy: its source is near and occurs once before
                assert 4 < position - seen[token] <= 12
            elif position:
                assert not scored[position]  # a first occurrence is never a target
            seen[token] = position
    assert targets.float().mean() > 0.2  # most of each sequence is copies, not filler


def test_bad_settings_name_the_field():
    with pytest.raises(ValueError, match="max_distance"):
        RecallTask(vocab_size=64, copy_tokens=8, max_distance=8)
    with pytest.raises(ValueError, match="vocab_size"):
        RecallTask(vocab_size=64).sequence(__import__("numpy").random.default_rng(0), 65)


def test_pipeline_at_toy_size_writes_table_plot_and_json(tmp_path):
    command = [sys.executable, str(SCRIPT), "--work-dir", str(tmp_path), "--encodings", "hope",
               "--seeds", "1", "--train-iters", "2", "--seq-length", "16", "--hidden-size", "16",
               "--num-attention-heads", "2", "--global-batch-size", "4", "--eval-samples", "3",
               "--copy-tokens", "3", "--max-distance", "8", "--jobs", "1"]
    path = os.pathsep.join([str(SCRIPT.parents[2]), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    payload = json.loads((tmp_path / "separation.json").read_text())
    cells = payload["summary"]["hope"]
    assert list(cells) == ["16", "24", "32", "64"]  # L, 1.5L, 2L, 4L
    for cell in cells.values():
        assert 0.0 <= cell["accuracy"] <= 100.0 and cell["se_samples"] >= 0.0
        assert len(cell["per_seed"]) == 1
    assert 1 <= payload["runs"]["hope-s1"]["64"]["samples"] <= 3  # samples with a target
    assert (tmp_path / "separation.png").read_bytes()[:4] == b"\x89PNG"
    assert "| hope |" in (tmp_path / "separation.md").read_text()
    # Everything exists now: a second call trains and evaluates nothing.
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 0 and "| hope |" in again.stdout
    assert not (tmp_path / "train-hope-s1.log").read_text().count("+ ") > 1
