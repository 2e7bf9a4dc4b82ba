"""What Megatron-LM's own training loop (`megatron.training.pretrain`) needs on CPU, on top of
`cpu_execution`. Switched on explicitly, by tests and CPU smoke runs; a GPU run never enters it.

    from megatron_hope.megatron.cpu.megatron_lm import megatron_lm_cpu_execution

    with megatron_lm_cpu_execution():      # does nothing where CUDA is available
        pretrain_hope_gpt.main(argv)        # Megatron-LM's pretrain() on gloo

Megatron-LM's `megatron/training` is not in the megatron-core wheel; import it (its folder on
`sys.path`) before entering. Each patch, where Megatron-LM (core_v0.16.1 / core_v0.19.0) calls
it, and why:

 L1  megatron.training.training.initialize_   pretrain(): asserts "Megatron requires CUDA"
     megatron -> allow_no_cuda=True           unless allow_no_cuda.
 L2  torch.cuda.device_count -> 1             initialize._initialize_distributed: with 0 devices
                                              the model-parallel groups are never set up.
 L3  torch.cuda.set_device -> no-op           same place, torch.cuda.set_device(local_rank).
 L4  megatron.core.datasets.utils.compile_    initialize: rank 0 compiles the dataset helpers;
     helpers -> no-op                         the wheel ships them compiled.
 L5  megatron.legacy.fused_kernels.load       initialize (0.16.1 only; 0.19.0 has no legacy):
     -> no-op                                 builds CUDA kernels.
 L6  get_device_arch_version -> 9             validate_args with TP/CP > 1 (and 0.19 GTP): reads
     (megatron.training.utils, .arguments)    the properties of cuda:0. 9 (Hopper) keeps the
                                              pre-Blackwell paths, the ones a CPU run can take.
 L7  megatron.training.training.load_         setup_model_and_optimizer, with a distributed
     checkpoint -> torch Adam state first,    optimizer: without apex/TE (the CPU case) megatron-
     saved step after                         core falls back to torch Adam, whose state exists
                                              only after a first step; its state_dict asserts
                                              one `step` per parameter before it can load, and
                                              its load leaves those steps as it found them (Adam's
                                              bias correction would restart). Zeros before the
                                              load (overwritten by it), the param groups' saved
                                              step into each parameter's state after it, and
                                              the load under no_grad: with fp32 parameters its
                                              dp_reshardable load copies into views of them in
                                              place (not CPU-specific: an fp32 GPU run of
                                              Megatron-LM meets it too; bf16 runs copy into
                                              separate fp32 main parameters). All three as
                                              `hope-pretrain`'s own loader does.

All seven are process-wide and restored on exit. Megatron-LM's loop also all-reduces host
tensors over its gloo groups and reads host-side timers: run it under non-strict
`cpu_execution` (the default here).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from collections.abc import Iterator

import torch

from megatron_hope.megatron.cpu import cpu_execution
from megatron_hope.megatron.cpu.patches import Patches
from megatron_hope.training import optimizer_state

ASSUMED_DEVICE_ARCH = 9
"""What L6 answers: a pre-Blackwell GPU (Hopper)."""


def _initialize_megatron_without_cuda(original):
    @functools.wraps(original)
    def initialize_megatron(*args, **kwargs):
        kwargs["allow_no_cuda"] = True
        return original(*args, **kwargs)

    return initialize_megatron


def _device_count() -> int:
    return 1


def _set_device(device) -> None:
    return None


def _no_op(*args, **kwargs) -> None:
    return None


def _device_arch_version() -> int:
    return ASSUMED_DEVICE_ARCH


def _load_checkpoint_with_torch_adam_state(original):
    @functools.wraps(original)
    def load_checkpoint(ddp_model, optimizer, *args, **kwargs):
        if optimizer is not None:
            optimizer_state.initialize_empty_adam_state(optimizer)
        with torch.no_grad():
            result = original(ddp_model, optimizer, *args, **kwargs)
        if optimizer is not None:
            optimizer_state.restore_adam_steps_from_param_groups(optimizer)
        return result

    return load_checkpoint


def _module(name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def apply_megatron_lm_patches(patches: Patches) -> None:
    """L1-L7 into `patches` (which restores them). Needs `megatron.training` importable."""
    training = _module("megatron.training.training")
    if training is None:
        raise ValueError(
            "megatron.training is not importable: put a Megatron-LM checkout (core_v0.16.1 or "
            "core_v0.19.0) on PYTHONPATH before switching on megatron_lm_cpu_execution"
        )
    patches.set(training, "initialize_megatron",
                _initialize_megatron_without_cuda(training.initialize_megatron))  # L1
    patches.set(torch.cuda, "device_count", _device_count)  # L2
    patches.set(torch.cuda, "set_device", _set_device)  # L3
    patches.set(importlib.import_module("megatron.core.datasets.utils"), "compile_helpers",
                _no_op)  # L4
    fused_kernels = _module("megatron.legacy.fused_kernels")
    if fused_kernels is not None and hasattr(fused_kernels, "load"):
        patches.set(fused_kernels, "load", _no_op)  # L5
    for name in ("megatron.training.utils", "megatron.training.arguments"):
        module = _module(name)
        if module is not None and hasattr(module, "get_device_arch_version"):
            patches.set(module, "get_device_arch_version", _device_arch_version)  # L6
    patches.set(training, "load_checkpoint",
                _load_checkpoint_with_torch_adam_state(training.load_checkpoint))  # L7


@contextlib.contextmanager
def megatron_lm_cpu_execution(strict: bool = False) -> Iterator[bool]:
    """`cpu_execution(strict)` plus L1-L7; yields False (and patches nothing) where CUDA is."""
    with cpu_execution(strict=strict) as enabled:
        if not enabled:
            yield False
            return
        patches = Patches()
        try:
            apply_megatron_lm_patches(patches)
            yield True
        finally:
            patches.restore()
