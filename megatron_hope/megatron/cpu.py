"""Run megatron-core on CPU with gloo: the ONE module of megatron-hope that patches torch/megatron.

megatron-core assumes CUDA in a handful of places even when every module is built with
`use_cpu_initialization=True` and the process groups use gloo. `enable_cpu_execution()` bends
exactly those places to the CPU, and does nothing at all when CUDA is available, so the same
training code runs unchanged on a GPU cluster and in CPU tests/smoke runs.

Call it once per process (and once per extra thread that runs megatron code, see "the device
mode" below) after `torch.distributed.init_process_group("gloo")` or before it; order relative to
`parallel_state.initialize_model_parallel` does not matter, but it must come before
`model_parallel_cuda_manual_seed` and before the model is built.

Every patch: what is replaced -> what it does on CPU; where megatron-core (0.16.1 / 0.19.x)
reaches for it; why.

 #  patched                                  where upstream calls it / why
 1  torch.cuda.current_device                RotaryEmbedding.forward (inv_freq.to(device=...)),
    -> torch.device("cpu")                   p2p_communication recv buffers, param_and_grad_buffer,
                                             optimizer.get_loss_scale, distrib_optimizer, layers.
                                             A device, not an int: lands on CPU without the mode.
 2  torch.cuda.get_rng_state (+ .random.)    CudaRNGStatesTracker.add, _get_cuda_rng_state. On CPU
    -> torch.get_rng_state()                 the "CUDA RNG" megatron forks for dropout IS the CPU
                                             default generator, the one CPU kernels draw from.
 3  torch.cuda.set_rng_state (+ .random.)    activation recompute (CheckpointFunction), checkpoint
    -> torch.set_rng_state()                 RNG restore; same reason as 2.
 4  torch.cuda.manual_seed (+ .random.)      model_parallel_cuda_manual_seed (data-parallel seed),
    -> torch.manual_seed()                   tracker.add; the original queues the seed forever.
 5  tensor_parallel.random._get_cuda_rng_    get_cuda_rng_tracker().fork() (attention dropout of the
    state / _set_cuda_rng_state              local spec), CheckpointFunction. The originals index
    -> CPU default generator                 torch.cuda.default_generators and defer the set via
                                             torch.cuda._lazy_call (never runs without CUDA).
                                             graph_safe=True (CUDA graphs) raises RuntimeError.
 6  logging.Filter on logger                 CudaRNGStatesTracker.fork warns "CPU RNG state changed
    megatron.core.tensor_parallel.random     within GPU RNG context" when the CPU RNG moved inside
    -> drops that one message                a fork; with 2-5 it always does (once per layer/step).
 7  torch.cuda.synchronize -> no-op          p2p_communication after batch_isend_irecv (PP),
                                             parallel_state, DDP offload/reload; CPU is synchronous.
 8  torch.cuda.Stream, Event, current_stream, 0.19 start_grad_sync (current_stream() every step),
    default_stream, stream -> do-nothing      DDP communication streams when
    stand-ins (stream(s): null context)      num_distributed_optimizer_instances > 1, Event timers.
 9  mode: device= naming CUDA ("cuda",       schedules total_num_tokens (device="cuda"), clip_grads
    "cuda:N", torch.device("cuda"), int N)   (total_norm_cuda, dummy_overflow_buf), optimizer
    -> torch.device("cpu")                   (found_inf, _scale_one, grad scaler), grad buffers.
10  mode: Tensor.to(<CUDA device>, ...)      training loops' batch.to("cuda"), transformer_layer
    -> device rewritten to CPU               static inputs.
11  mode: Tensor.cuda(...) -> the tensor     LanguageModule.setup_embeddings_and_output_layer
                                             (weight.data.cuda()), optimizer state reload.
12  mode: Tensor.type() (no argument)        Float16/Distributed optimizer param checks, clip_grads:
    -> "torch.cuda.FloatTensor" etc.         `p.type() == "torch.cuda.FloatTensor"`. Conversions
                                             (Tensor.type(dtype)) are untouched.

Not patched because they already work on CPU torch: torch.cuda.memory_allocated /
max_memory_allocated (return 0), empty_cache, is_available, device_count, torch.cuda.amp
decorators. Not on the CPU paths, hence not patched: torch.cuda.nvtx (megatron only calls it when
nvtx ranges are enabled), torch.cuda.set_device (skip it when CUDA is absent), Tensor.is_cuda
(stays False), torch.autocast("cuda") (config.enable_autocast).

The device mode (9-12) is a `torch.overrides.TorchFunctionMode`. Torch function modes live on a
*per-thread* stack, so `enable_cpu_execution()` enters one instance on the calling thread and never
exits it (it stays on that thread's stack for the life of the thread; modes entered
later with `with` nest above it and pop back to it). A thread started later (not the autograd
engine: CPU backward runs on the calling thread) has no mode until it calls
`enable_cpu_execution()` itself; patches 1-8 are process-wide and need nothing. Forked children
(DataLoader workers) inherit both; spawned children (`torch.multiprocessing` spawn, torchrun) must
call `enable_cpu_execution()` themselves. The mode only rewrites the arguments listed above and
otherwise forwards every call unchanged, so numpy interop, DataLoader collation and
`torch.distributed` (gloo) calls behave as before. It costs one Python call per torch op, which is
noise next to the ops of even a tiny model; `torch.compile` is not supported under it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

__all__ = ["cpu_execution_enabled", "enable_cpu_execution"]

_CPU = torch.device("cpu")
_LOCK = threading.Lock()
_PATCHED = False
_THREAD = threading.local()


# ---------------------------------------------------------------------------------------------
# Patches 1-4, 7, 8: torch.cuda entry points (process-wide).
# ---------------------------------------------------------------------------------------------


def _current_device() -> torch.device:
    return _CPU


def _get_rng_state(device: Any = "cuda") -> torch.Tensor:
    return torch.get_rng_state()


def _set_rng_state(new_state: torch.Tensor, device: Any = "cuda") -> None:
    torch.set_rng_state(new_state)


def _manual_seed(seed: int) -> None:
    torch.manual_seed(int(seed))


def _synchronize(device: Any = None) -> None:
    return None


class _Event:
    """Stand-in for `torch.cuda.Event`: CPU work is complete when the call returns."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def record(self, stream: Any = None) -> None:
        pass

    def wait(self, stream: Any = None) -> None:
        pass

    def query(self) -> bool:
        return True

    def synchronize(self) -> None:
        pass

    def elapsed_time(self, end_event: Any) -> float:
        return 0.0


class _Stream:
    """Stand-in for `torch.cuda.Stream`: one implicit, synchronous CPU stream."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.device = _CPU

    def wait_stream(self, stream: Any) -> None:
        pass

    def wait_event(self, event: Any) -> None:
        pass

    def record_event(self, event: Any = None) -> _Event:
        return event if event is not None else _Event()

    def query(self) -> bool:
        return True

    def synchronize(self) -> None:
        pass


_DEFAULT_STREAM = _Stream()


def _current_stream(device: Any = None) -> _Stream:
    return _DEFAULT_STREAM


def _stream(stream: Any = None) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


_TORCH_CUDA_PATCHES: dict[str, Callable[..., Any] | type] = {
    "current_device": _current_device,  # 1
    "get_rng_state": _get_rng_state,  # 2
    "set_rng_state": _set_rng_state,  # 3
    "manual_seed": _manual_seed,  # 4
    "synchronize": _synchronize,  # 7
    "Stream": _Stream,  # 8
    "Event": _Event,  # 8
    "current_stream": _current_stream,  # 8
    "default_stream": _current_stream,  # 8
    "stream": _stream,  # 8
}
# torch.cuda re-exports these from torch.cuda.random; megatron calls both spellings.
_TORCH_CUDA_RANDOM_PATCHES = ("get_rng_state", "set_rng_state", "manual_seed")


# ---------------------------------------------------------------------------------------------
# Patches 5, 6: megatron-core's CUDA RNG helpers.
# ---------------------------------------------------------------------------------------------


def _megatron_get_cuda_rng_state(
    device: Any = "cuda", clone: bool = False, graph_safe: bool = False
) -> torch.Tensor:
    if graph_safe:
        raise RuntimeError(
            "graph-safe (CUDA graph) RNG states have no CPU equivalent; "
            "leave use_cudagraphable_rng/te_rng_tracker off on CPU"
        )
    return torch.get_rng_state()


def _megatron_set_cuda_rng_state(
    new_state: torch.Tensor, device: Any = -1, graph_safe: bool = False
) -> None:
    if graph_safe:
        raise RuntimeError(
            "graph-safe (CUDA graph) RNG states have no CPU equivalent; "
            "leave use_cudagraphable_rng/te_rng_tracker off on CPU"
        )
    torch.set_rng_state(new_state)


class _DropForkedCpuRngWarning(logging.Filter):
    """Drops the tracker's "CPU RNG state changed" warning, which is expected once 5 is active."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "CPU RNG state changed within GPU RNG context" not in record.getMessage()


def _patch_megatron_rng() -> None:
    from megatron.core.tensor_parallel import random as mcore_random

    mcore_random._get_cuda_rng_state = _megatron_get_cuda_rng_state
    mcore_random._set_cuda_rng_state = _megatron_set_cuda_rng_state
    logging.getLogger(mcore_random.__name__).addFilter(_DropForkedCpuRngWarning())


# ---------------------------------------------------------------------------------------------
# Patches 9-12: the device mode (per thread).
# ---------------------------------------------------------------------------------------------


def _names_cuda(device: Any) -> bool:
    """True for a `device=` value that means a CUDA device: "cuda", "cuda:1", cuda device, 0."""
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.startswith("cuda")
    # A bare int is a CUDA ordinal for torch factories (`device=0`); bool is an int, not a device.
    return isinstance(device, int) and not isinstance(device, bool)


def _tensor_to(func: Callable, args: tuple, kwargs: dict) -> Any:
    # Tensor.to(self, device, ...) / Tensor.to(self, "cuda", dtype): device is the 2nd positional.
    if (
        len(args) > 1
        and not isinstance(args[1], torch.dtype | torch.Tensor)
        and _names_cuda(args[1])
    ):
        args = (args[0], _CPU, *args[2:])
    return func(*args, **kwargs)


def _tensor_cuda(func: Callable, args: tuple, kwargs: dict) -> Any:
    return args[0]


_CUDA_TENSOR_TYPE_PREFIX = "torch.cuda."


def _tensor_type(func: Callable, args: tuple, kwargs: dict) -> Any:
    result = func(*args, **kwargs)
    if len(args) == 1 and not kwargs and result.startswith("torch.") and "." not in result[6:]:
        return _CUDA_TENSOR_TYPE_PREFIX + result[6:]
    return result


_SPECIAL: dict[Callable, Callable[[Callable, tuple, dict], Any]] = {
    torch.Tensor.to: _tensor_to,  # 10
    torch.Tensor.cuda: _tensor_cuda,  # 11
    torch.Tensor.type: _tensor_type,  # 12
}


class _CpuDeviceMode(TorchFunctionMode):
    """Rewrites CUDA device arguments to the CPU (patches 9-12); forwards everything else."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if kwargs:
            device = kwargs.get("device")
            if device is not None and _names_cuda(device):
                kwargs = {**kwargs, "device": _CPU}
        else:
            kwargs = {}
        special = _SPECIAL.get(func)
        if special is not None:
            return special(func, args, kwargs)
        return func(*args, **kwargs)


def _enter_device_mode_on_this_thread() -> None:
    if getattr(_THREAD, "mode", None) is None:
        mode = _CpuDeviceMode()
        # Entered and never exited: the mode stays on this thread's stack for its lifetime.
        mode.__enter__()
        _THREAD.mode = mode


# ---------------------------------------------------------------------------------------------
# Public API.
# ---------------------------------------------------------------------------------------------


def enable_cpu_execution() -> bool:
    """Make megatron-core run on the CPU; a no-op returning False when CUDA is available.

    Idempotent and safe to call from several threads: the process-wide patches (1-8 in the module
    docstring) are applied once; the device mode (9-12) is entered once per calling thread.

    Returns:
        True when CPU execution is (now) enabled, False when CUDA is available and nothing was done.
    """
    global _PATCHED
    if torch.cuda.is_available():
        return False
    with _LOCK:
        if not _PATCHED:
            for name, replacement in _TORCH_CUDA_PATCHES.items():
                setattr(torch.cuda, name, replacement)
            for name in _TORCH_CUDA_RANDOM_PATCHES:
                setattr(torch.cuda.random, name, _TORCH_CUDA_PATCHES[name])
            _patch_megatron_rng()
            _PATCHED = True
    _enter_device_mode_on_this_thread()
    return True


def cpu_execution_enabled() -> bool:
    """True once `enable_cpu_execution()` has patched this process (CUDA absent)."""
    return _PATCHED
