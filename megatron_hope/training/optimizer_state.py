"""torch Adam's state around megatron-core's optimizer checkpoints, where apex/TE are absent.

megatron-core's own fused Adam (apex/TE) keeps its state in the form its checkpoints expect;
torch's Adam, which megatron-core falls back to on CPU, creates per-parameter state lazily and
keeps `step` per parameter. These helpers bridge the two for `checkpointing` and for Megatron-LM's
loop on CPU (`megatron_hope.megatron.cpu.megatron_lm`).
"""

from __future__ import annotations

from typing import Any

import torch


def _torch_adams(optimizer):
    """The torch Adam/AdamW optimizers inside a (chained) megatron-core optimizer."""
    for inner in getattr(optimizer, "chained_optimizers", [optimizer]):
        torch_optimizer = getattr(inner, "optimizer", None)
        if isinstance(torch_optimizer, (torch.optim.Adam, torch.optim.AdamW)):
            yield torch_optimizer


def _adam_step(value: float, group: dict, param: torch.Tensor) -> torch.Tensor:
    """A parameter's `step` as torch's Adam keeps it: on the parameter's device where the group
    is capturable or fused (its step then runs on the device), else a host scalar."""
    if group.get("capturable") or group.get("fused"):
        return torch.tensor(float(value), dtype=torch.float32, device=param.device)
    return torch.tensor(float(value))


def _stepped_states(torch_optimizer):
    """(group, param, state) of every parameter whose Adam state has a `step`."""
    for group in torch_optimizer.param_groups:
        for param in group["params"]:
            state = torch_optimizer.state.get(param)
            if state and "step" in state:
                yield group, param, state


def initialize_empty_adam_state(optimizer) -> None:
    """Give a never-stepped torch Adam its per-parameter state before loading into it.

    Without apex/TE, megatron-core's DistributedOptimizer reads every parameter's `step` while
    building the state dict it loads into, and torch's Adam creates that state only at its first
    step. The zeros are overwritten by the checkpoint's values.
    """
    for torch_optimizer in _torch_adams(optimizer):
        for group in torch_optimizer.param_groups:
            for param in group["params"]:
                state = torch_optimizer.state[param]
                if not state:
                    state["step"] = _adam_step(0.0, group, param)
                    state["exp_avg"] = torch.zeros_like(param)
                    state["exp_avg_sq"] = torch.zeros_like(param)


def _saved_adam_steps(state: Any) -> set[float]:
    """Every `step` recorded in the param groups of a loaded optimizer state dict."""
    steps: set[float] = set()
    if isinstance(state, dict):
        for group in state.get("param_groups", []) or []:
            if isinstance(group, dict) and group.get("step") is not None:
                steps.add(float(group["step"]))
        for value in state.values():
            steps |= _saved_adam_steps(value)
    elif isinstance(state, (list, tuple)):
        for value in state:
            steps |= _saved_adam_steps(value)
    return steps


def restore_adam_steps(optimizer, loaded_state: Any) -> None:
    """Put the saved step count back into torch Adam's per-parameter state.

    Without apex/TE, megatron-core's DistributedOptimizer saves the step in its param groups but
    its `dp_reshardable` load leaves torch Adam's per-parameter `step` as it found it, which
    would restart Adam's bias correction after a resume.
    """
    steps = _saved_adam_steps(loaded_state)
    if len(steps) != 1:
        return
    step = steps.pop()
    for torch_optimizer in _torch_adams(optimizer):
        for group, param, state in _stepped_states(torch_optimizer):
            state["step"] = _adam_step(step, group, param)


def check_loadable_optimizer_form(load_dir, content: dict[str, Any], optimizer) -> None:
    """Refuse, naming the way out, an optimizer state megatron-core cannot load here: the
    distributed optimizer's `fully_reshardable` form (Megatron-LM's
    --dist-ckpt-optim-fully-reshardable) into torch's Adam, i.e. without apex/TE. megatron-core
    (0.16.1, 0.19.2) copies every entry of a parameter's Adam state from the checkpoint, `step`
    included, which that form keeps in the param groups only (KeyError 'step')."""
    if content.get("distrib_optim_sharding_type") == "fully_reshardable" and any(
            True for _ in _torch_adams(optimizer)):
        raise ValueError(
            f"--load {load_dir}: its distributed optimizer state is in megatron-core's "
            "fully_reshardable form (Megatron-LM's --dist-ckpt-optim-fully-reshardable), which "
            "megatron-core cannot load into torch's Adam (no apex/Transformer Engine here); add "
            "--no-load-optim to load the model weights only, or resume where TE or apex is "
            "installed"
        )


def restore_adam_steps_from_param_groups(optimizer) -> None:
    """After a distributed-optimizer load without apex/TE (Megatron-LM's loop on CPU): the saved
    step is in torch Adam's param groups, its per-parameter `step` still what it was before
    (see `restore_adam_steps`)."""
    for torch_optimizer in _torch_adams(optimizer):
        for group, param, state in _stepped_states(torch_optimizer):
            if group.get("step") is not None:
                state["step"] = _adam_step(group["step"], group, param)
