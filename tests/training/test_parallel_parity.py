"""TP=2, PP=2 and DP=2 runs reproduce the single-process run; checkpoints resume exactly and
reshard across TP.

Every run starts from the same initial checkpoint (saved by a single process at iteration 0 and
loaded model-only), so the layouts differ only in how the same computation is split.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pytest

from tests.distributed import run_on_ranks

pytestmark = pytest.mark.distributed

TRAIN_ITERS = 5
RTOL = 1e-5


def tiny_config(data, **changes):
    """A 2-layer HoPE model small enough for a handful of CPU iterations per second."""
    from megatron_hope.megatron.model import ModelArchitecture
    from megatron_hope.rope.config import PositionEncodingConfig
    from megatron_hope.training.config import PretrainConfig

    seq_length = 64
    arch = ModelArchitecture(
        num_layers=2, hidden_size=64, num_attention_heads=4, seq_length=seq_length,
        vocab_size=data["vocab_size"],
        position_encoding=PositionEncodingConfig("hope", 16, 10000.0, seq_length),
    )
    base = dict(
        arch=arch, micro_batch_size=2, global_batch_size=4, train_iters=TRAIN_ITERS, lr=3e-3,
        min_lr=3e-4, lr_warmup_iters=1, eval_interval=TRAIN_ITERS, eval_iters=1,
        log_interval=1, data_path=(data["prefix"],), tokenizer_model=data["tokenizer"],
        split="90,10,0", progress=False,
    )
    base.update(changes)
    return PretrainConfig(**base)


def _pretrain(rank, data, changes):
    from megatron_hope.training.cli import run

    _, result = run(tiny_config(data, **changes))
    return {
        "train": result.train_losses,
        "validation": result.validation_losses,
        "checkpoint": result.last_checkpoint,
        "final_iteration": result.final_iteration,
    }


def last_stage_losses(per_rank: list[dict]) -> dict[int, float]:
    """The losses reported by the ranks that hold the output layer (they must agree)."""
    reported = [r["train"] for r in per_rank if r["train"]]
    assert reported, "no rank reported losses"
    for other in reported[1:]:
        assert other == pytest.approx(reported[0], rel=1e-6)
    return reported[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    # The synthetic corpus and committed tokenizer are the same bytes on every interpreter, which
    # is what lets the golden curve below hold on any Python patch release. Its 600 tokens pad to
    # 640 at TP=1 but 768 at TP=2: resharding must keep the saved padding.
    from tests.synthetic_corpus import prepare_golden_data

    return prepare_golden_data(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def initial_checkpoint(data, tmp_path_factory):
    directory = tmp_path_factory.mktemp("init")
    run_on_ranks(1, _pretrain, data, {"train_iters": 0, "save": str(directory)})
    return str(directory)


def from_initial(initial_checkpoint, **changes):
    return dict(load=initial_checkpoint, no_load_optim=True, no_load_rng=True, **changes)


@pytest.fixture(scope="module")
def baseline(data, initial_checkpoint):
    [result] = run_on_ranks(1, _pretrain, data, from_initial(initial_checkpoint))
    return result


def test_single_process_trains(baseline):
    losses = baseline["train"]
    assert sorted(losses) == list(range(1, TRAIN_ITERS + 1))
    assert all(math.isfinite(v) for v in losses.values())
    assert losses[TRAIN_ITERS] < losses[1]


GOLDEN = Path(__file__).resolve().parents[1] / "assets" / "golden_losses.json"


def test_matches_golden_losses(baseline):
    """The tiny run's loss curve is pinned once for both lanes: its data is the same bytes on
    every interpreter, and both lanes' torch/megatron-core give the same curve (the versions it
    was checked with are recorded beside it). HOPE_UPDATE_GOLDEN=1 rewrites it after a
    deliberate change, adding this interpreter's versions to the record."""
    import megatron.core
    import torch

    lane = {"python": "{}.{}".format(*sys.version_info[:2]),
            "torch": torch.__version__.split("+")[0],
            "megatron-core": megatron.core.__version__.split("+")[0]}
    losses = {str(k): v for k, v in sorted(baseline["train"].items())}
    if os.environ.get("HOPE_UPDATE_GOLDEN") == "1":
        previous = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
        checked = [c for c in previous.get("checked_with", []) if c["python"] != lane["python"]]
        if previous.get("losses") != losses:
            checked = []
        GOLDEN.write_text(json.dumps({"losses": losses, "checked_with": [*checked, lane]},
                                     indent=2, sort_keys=True) + "\n")
    golden = json.loads(GOLDEN.read_text())
    assert losses.keys() == golden["losses"].keys()
    for iteration, expected in golden["losses"].items():
        assert losses[iteration] == pytest.approx(expected, rel=1e-4), (
            f"iteration {iteration}: the curve was checked with {golden['checked_with']}; this "
            f"run has {lane}")


@pytest.mark.parametrize(
    "layout",
    [
        {"tensor_model_parallel_size": 2},
        {"pipeline_model_parallel_size": 2},
        {"use_distributed_optimizer": True},
    ],
    ids=["tp2", "pp2", "dp2-distopt"],
)
def test_two_rank_layouts_match_single_process(data, initial_checkpoint, baseline, layout):
    per_rank = run_on_ranks(2, _pretrain, data, from_initial(initial_checkpoint, **layout))
    losses = last_stage_losses(per_rank)
    assert sorted(losses) == sorted(baseline["train"])
    for iteration, expected in baseline["train"].items():
        assert losses[iteration] == pytest.approx(expected, rel=RTOL), iteration


@pytest.mark.parametrize(
    "ranks, layout",
    [(1, {}), (1, {"async_save": True}), (2, {"use_distributed_optimizer": True})],
    ids=["single", "single-async-save", "dp2-distopt"],
)
def test_resume_continues_exactly(data, initial_checkpoint, baseline, tmp_path, ranks, layout):
    save = str(tmp_path / "ckpt")
    first = run_on_ranks(ranks, _pretrain, data, from_initial(
        initial_checkpoint, save=save, exit_interval=3, **layout))
    assert first[0]["final_iteration"] == 3
    second = last_stage_losses_and_validation(
        run_on_ranks(ranks, _pretrain, data, {"load": save, "save": save, **layout}))
    assert sorted(second["train"]) == [4, 5]
    for iteration in (4, 5):
        assert second["train"][iteration] == pytest.approx(baseline["train"][iteration],
                                                           rel=RTOL)
    # The uninterrupted and the resumed run end on the same weights.
    assert second["validation"][TRAIN_ITERS] == pytest.approx(
        baseline["validation"][TRAIN_ITERS], rel=RTOL)
    if layout.get("use_distributed_optimizer"):
        # Its optimizer state follows DP changes only: a TP change says so and names the way out.
        from tests.distributed import RankFailure

        with pytest.raises(RankFailure, match="reshards only across data-parallel sizes"):
            run_on_ranks(2, _pretrain, data, {"load": save, "tensor_model_parallel_size": 2,
                                              "use_distributed_optimizer": True})


def last_stage_losses_and_validation(per_rank: list[dict]) -> dict:
    return next(r for r in per_rank if r["train"])


def test_tp2_checkpoint_loads_at_tp1(data, initial_checkpoint, tmp_path):
    save = str(tmp_path / "tp2")
    per_rank = run_on_ranks(2, _pretrain, data, from_initial(
        initial_checkpoint, tensor_model_parallel_size=2, save=save))
    tp2_validation = next(r["validation"] for r in per_rank if r["validation"])
    # Load the TP=2 checkpoint into one process: no training left, just the final evaluation.
    [tp1] = run_on_ranks(1, _pretrain, data, {"load": save})
    assert tp1["final_iteration"] == TRAIN_ITERS
    assert tp1["train"] == {}
    assert tp1["validation"][TRAIN_ITERS] == pytest.approx(tp2_validation[TRAIN_ITERS], rel=RTOL)
    # The same checkpoint as one in-memory model for evaluation and export.
    [loaded] = run_on_ranks(1, _loaded_model_loss, data, save)
    assert loaded["iteration"] == TRAIN_ITERS
    assert loaded["rotated_pairs"] == 3  # d=16, L=64: θ_i ≥ 2π/64 for i ≤ 2
    assert math.isfinite(loaded["loss"])


def _loaded_model_loss(rank, data, load_dir):
    import torch
    import torch.nn.functional as F

    from megatron_hope.data.tokenizer import build_tokenizer
    from megatron_hope.training.model_loading import load_model_from_checkpoint

    loaded = load_model_from_checkpoint(load_dir)
    tokenizer = build_tokenizer("HuggingFaceTokenizer", data["tokenizer"])
    tokens = torch.tensor([tokenizer.tokenize("def main():\n    return 0\n" * 4)[:64]])
    logits = loaded.logits(tokens).cpu()
    assert logits.shape == (1, tokens.shape[1], tokenizer.vocab_size)
    loss = F.cross_entropy(logits[0, :-1], tokens[0, 1:])
    return {"iteration": loaded.iteration, "loss": float(loss),
            "rotated_pairs": loaded.model.rotary_pos_emb.rotated_pairs}


def _pretrain_until_sigterm(rank, data, save):
    import os
    import signal
    import threading
    import time

    def send_sigterm_once_handled():
        # Wait until the run has installed its handler, let it train a little, then preempt.
        while signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            time.sleep(0.05)
        time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=send_sigterm_once_handled, daemon=True).start()
    return _pretrain(rank, data, {"train_iters": 100_000, "exit_signal_handler": True,
                                  "save": save, "eval_interval": 100_000})


def test_sigterm_saves_and_stops(data, tmp_path):
    from megatron_hope.training.checkpointing import read_tracker

    save = str(tmp_path / "preempted")
    [result] = run_on_ranks(1, _pretrain_until_sigterm, data, save)
    stopped_at = result["final_iteration"]
    assert 0 < stopped_at < 100_000
    assert read_tracker(save) == stopped_at
    assert result["checkpoint"].endswith(f"iter_{stopped_at:07d}")


def test_bf16_trains(data):
    [result] = run_on_ranks(1, _pretrain_bf16, data, {"train_iters": 3, "eval_iters": 0})
    assert sorted(result["train"]) == [1, 2, 3]
    assert all(math.isfinite(v) for v in result["train"].values())


def _pretrain_bf16(rank, data, changes):
    import dataclasses

    from megatron_hope.training.cli import run

    config = tiny_config(data, **changes)
    config = config.replace(arch=dataclasses.replace(config.arch, bf16=True))
    _, result = run(config)
    return {"train": result.train_losses}
