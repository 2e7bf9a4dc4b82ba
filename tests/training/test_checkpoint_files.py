"""`--load` picks a complete checkpoint (or stops, with --strict-load); stale staging directories
of dead writers go, a live writer's stay; publishing replaces a directory without a gap."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from megatron_hope.training import checkpoint_files
from megatron_hope.training.checkpoint_files import resolve_load_iteration
from megatron_hope.training.run_metadata import FORMAT, RunMetadata


def _fake_checkpoint(directory, iteration):
    """A real torch DCP directory plus the files megatron-core and hope-pretrain add."""
    import torch.distributed.checkpoint as dcp

    path = directory / f"iter_{iteration:07d}"
    dcp.save({"w": torch.arange(1000.0)}, storage_writer=dcp.FileSystemWriter(str(path)),
             no_dist=True)
    (path / "metadata.json").write_text("{}")
    torch.save({}, path / "common.pt")
    (path / "hope_run.json").write_text(json.dumps({
        "format": FORMAT, "position_encoding": {}, "inv_freq": [], "rotated_pairs": 0,
        "arch": {}, "padded_vocab_size": 8, "tokenizer": {}}))
    (directory / "latest_checkpointed_iteration.txt").write_text(f"{iteration}\n")
    return path


def test_a_damaged_latest_checkpoint_falls_back_with_a_warning_or_stops(tmp_path, caplog):
    _fake_checkpoint(tmp_path, 1)
    latest = _fake_checkpoint(tmp_path, 2)
    assert resolve_load_iteration(tmp_path) == 2
    shard = next(latest.glob("*.distcp"))
    with open(shard, "r+b") as handle:
        handle.truncate(100)
    with caplog.at_level(logging.WARNING):
        assert resolve_load_iteration(tmp_path) == 1
    assert f"shard {shard} is truncated" in caplog.text and "iteration 1" in caplog.text
    with pytest.raises(ValueError, match=r"names iteration 2, but shard .* is truncated.*--strict"):
        resolve_load_iteration(tmp_path, strict=True)
    shard.unlink()
    assert resolve_load_iteration(tmp_path) == 1
    (latest / "hope_run.json").unlink()
    with pytest.raises(ValueError, match=r"hope_run\.json is missing"):
        resolve_load_iteration(tmp_path, strict=True)


def test_no_checkpoint_is_none_and_nothing_complete_is_an_error(tmp_path):
    assert resolve_load_iteration(tmp_path / "absent") is None
    assert resolve_load_iteration(tmp_path) is None
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("3\n")
    with pytest.raises(ValueError, match="no other complete checkpoint"):
        resolve_load_iteration(tmp_path)


def test_stale_staging_of_dead_processes_goes_and_a_live_ones_stays(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    # Exited but never reaped (as under a container init that does not reap): gone too.
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    while "\nState:\tZ" not in Path(f"/proc/{zombie.pid}/status").read_text():
        time.sleep(0.01)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for pid in (dead.pid, zombie.pid, live.pid):
            (tmp_path / f"iter_0000004.incomplete-{pid}").mkdir()
        removed = checkpoint_files.remove_stale_staging(tmp_path, prefix="iter_")
        assert sorted(path.name for path in removed) == sorted(
            f"iter_0000004.incomplete-{pid}" for pid in (dead.pid, zombie.pid))
        assert (tmp_path / f"iter_0000004.incomplete-{live.pid}").is_dir()
    finally:
        live.kill()
        live.wait()
        zombie.wait()


def test_publish_replaces_a_directory_whole(tmp_path):
    final, staging = tmp_path / "out", tmp_path / "out.incomplete-1"
    final.mkdir()
    (final / "old").write_text("old")
    staging.mkdir()
    (staging / "new").write_text("new")
    checkpoint_files.publish_directory(staging, final)
    assert [p.name for p in final.iterdir()] == ["new"] and not staging.exists()


def test_run_metadata_has_one_canonical_encoding_for_rope():
    from megatron_hope.megatron.model import ModelArchitecture
    from megatron_hope.rope.config import PositionEncodingConfig

    def metadata(train_length):
        encoding = PositionEncodingConfig("rope", 16, 10000.0, train_length)
        arch = ModelArchitecture(num_layers=1, hidden_size=64, num_attention_heads=4,
                                 seq_length=64, vocab_size=100, position_encoding=encoding)
        return RunMetadata.of(arch, 128, None, None)

    assert metadata(64).position_encoding == metadata(None).position_encoding
    assert metadata(64).position_encoding["hope_train_length"] is None
    with pytest.raises(ValueError, match="format 'other' is not"):
        RunMetadata.from_dict({"format": "other"})
