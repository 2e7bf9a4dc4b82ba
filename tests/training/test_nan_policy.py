"""A real NaN injected into the model's output: its update is skipped and counted, no NaN reaches
a checkpoint, and NaNs in a row stop the run with a clear message.

The NaN comes from a global forward hook (torch's `register_module_forward_hook`) that multiplies
the language model's per-token loss by NaN at chosen iterations; the loss, the backward pass and
every gradient then carry it, as a numerical blow-up would.
"""

from __future__ import annotations

import contextlib
import io
import math

import pytest

from tests.distributed import run_on_ranks
from tests.training.test_parallel_parity import data, tiny_config  # noqa: F401 (fixture)

pytestmark = pytest.mark.distributed


def _inject_nan_at(iterations: set[int]):
    """Hook the outermost model call of each iteration (one micro-batch, no evaluation)."""
    import torch
    from megatron.core.distributed import DistributedDataParallel

    calls = {"n": 0}

    def hook(module, args, output):
        if not isinstance(module, DistributedDataParallel):
            return None
        calls["n"] += 1
        return output * float("nan") if calls["n"] in iterations else None

    return torch.nn.modules.module.register_module_forward_hook(hook)


def _run_with_nans(rank, data, save_dir, nan_iterations, changes):  # noqa: F811
    from megatron_hope.training.cli import run
    from megatron_hope.training.numerics import NonFiniteTrainingError

    handle = _inject_nan_at(set(nan_iterations))
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            _, result = run(tiny_config(data, save=save_dir, save_interval=1, eval_iters=0,
                                        num_workers=0, train_iters=6, global_batch_size=2,
                                        **changes))
        outcome = {"train": result.train_losses}
    except NonFiniteTrainingError as error:
        outcome = {"error": str(error)}
    finally:
        handle.remove()
    outcome["lines"] = [line for line in printed.getvalue().splitlines() if "iteration " in line]
    return outcome


def _checkpoint_weights(rank, save_dir, iterations):
    from megatron_hope.training.model_loading import load_model_from_checkpoint

    weights = {}
    for iteration in iterations:
        model = load_model_from_checkpoint(save_dir, iteration=iteration).model
        weights[iteration] = {name: tensor.detach().cpu().clone()
                              for name, tensor in model.state_dict().items()
                              if hasattr(tensor, "isfinite")}
    return weights


def test_a_nan_iteration_is_skipped_counted_and_never_saved(tmp_path, data):  # noqa: F811
    save_dir = str(tmp_path / "ckpt")
    [outcome] = run_on_ranks(1, _run_with_nans, data, save_dir, [3], {}, timeout=240)
    losses = outcome["train"]
    assert math.isnan(losses[3])
    assert all(math.isfinite(losses[i]) for i in (1, 2, 4, 5, 6)), losses
    lines = {int(line.split("iteration")[1].split("/")[0]): line for line in outcome["lines"]
             if "consumed samples" in line}
    assert "number of nan iterations:   1 |" in lines[3], lines[3]
    assert "number of skipped iterations:   1 |" in lines[3], lines[3]
    for iteration in (1, 2, 4, 5, 6):
        assert "number of nan iterations:   0 |" in lines[iteration], lines[iteration]

    [weights] = run_on_ranks(1, _checkpoint_weights, save_dir, [2, 3, 4], timeout=240)
    for iteration, tensors in weights.items():
        bad = [name for name, tensor in tensors.items() if not tensor.isfinite().all()]
        assert not bad, f"iteration {iteration}: non-finite {bad}"
    # The skipped update left the weights of iteration 2 as they were; iteration 4 moved on.
    assert all((weights[3][name] == weights[2][name]).all() for name in weights[2])
    assert any((weights[4][name] != weights[3][name]).any() for name in weights[3])


def test_nans_in_a_row_stop_the_run_with_a_clear_message(tmp_path, data):  # noqa: F811
    save_dir = str(tmp_path / "ckpt")
    [outcome] = run_on_ranks(1, _run_with_nans, data, save_dir, [2, 3, 4, 5, 6],
                             {"max_consecutive_nan_iterations": 3}, timeout=240)
    message = outcome["error"]
    assert "iterations 2-4" in message and "3 times in a row" in message, message
    assert "--max-consecutive-nan-iterations 3" in message
    assert "iter_0000003" in message  # the last checkpoint, finite (its update was skipped)


def test_the_limit_is_validated():
    from megatron_hope.training.arguments import parse_config

    with pytest.raises(SystemExit):
        parse_config(["--max-consecutive-nan-iterations", "0"])
    assert not parse_config(["--no-check-for-nan-in-loss-and-grad"]).check_for_nan_in_loss_and_grad
