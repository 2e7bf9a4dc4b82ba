"""Run megatron-core on CPU with gloo: the ONE place in megatron-hope that patches torch/megatron.

Nothing is patched on import, and no library function switches it on. The CLI entry points and the
tests do; a library user on a machine without CUDA writes one line around their code:

    from megatron_hope.megatron.cpu import cpu_execution

    with cpu_execution():                  # does nothing where CUDA is available
        loaded = load_model_from_checkpoint("runs/hope-default/checkpoints")

Inside, code is written for the GPU, as Megatron-LM writes it: tensors on
`torch.cuda.current_device()`, `.cuda(non_blocking=True)` from pinned memory, NCCL-ready device
tensors for collectives. The shim maps those calls to the host, so a CPU run executes the very
lines a GPU run executes. Leaving the context restores everything (`torch.cuda.current_device` is
torch's again, tensors report their own types). `enable_cpu_execution()` / `disable_cpu_execution()`
are the same as a pair of calls.

`cpu_execution(strict=True)` also checks placements as a GPU would (see `device_mode`): a batch,
mask or collective tensor that would stay on the host in a GPU run raises `HostDeviceMixError`.
The test suite runs strict.

Every patch: what is replaced -> what it does on CPU; where megatron-core (0.16.1 / 0.19.x)
reaches for it; why.

 #  patched                                  where upstream calls it / why
 1  torch.cuda.current_device -> 0           RotaryEmbedding.forward (inv_freq.to(device=...)),
                                             p2p recv buffers, param_and_grad_buffer, optimizer.
                                             An ordinal, as on a GPU; the mode maps device=0 home.
 2  torch.cuda.get_rng_state (+ .random.)    CudaRNGStatesTracker.add, _get_cuda_rng_state. On CPU
    -> torch.get_rng_state()                 the "CUDA RNG" megatron forks for dropout IS the CPU
                                             default generator, the one CPU kernels draw from.
 3  torch.cuda.set_rng_state (+ .random.)    activation recompute (CheckpointFunction), checkpoint
    -> torch.set_rng_state()                 RNG restore; same reason as 2.
 4  torch.cuda.manual_seed (+ .random.)      model_parallel_cuda_manual_seed (data-parallel seed),
    -> torch.manual_seed()                   tracker.add; the original queues the seed forever.
 5  tensor_parallel.random._get_cuda_rng_    get_cuda_rng_tracker().fork(), CheckpointFunction.
    state / _set_cuda_rng_state              The originals index torch.cuda.default_generators.
    -> CPU default generator                 graph_safe=True (CUDA graphs) raises RuntimeError.
 6  logging.Filter on megatron's tensor_     CudaRNGStatesTracker.fork warns "CPU RNG state changed
    parallel.random logger                   within GPU RNG context"; with 2-5 it always does.
 7  torch.cuda.synchronize -> no-op          p2p_communication after batch_isend_irecv (PP).
 8  torch.cuda.Stream, Event, current_stream, 0.19 start_grad_sync, DDP communication streams,
    default_stream, stream -> stand-ins      Event timers.
 9  mode: device= naming CUDA ("cuda",       schedules total_num_tokens, clip_grads, optimizer
    "cuda:N", torch.device("cuda"), int N)   (found_inf, grad scaler), grad buffers, our batches.
    -> the host
10  mode: Tensor.to(<CUDA device>, ...)      our batches' .cuda / .to, transformer_layer inputs.
11  mode: Tensor.cuda(...) -> the tensor     Module.cuda (get_model), weight.data.cuda().
12  mode: Tensor.type() (no argument)        Float16/Distributed optimizer param checks, clip_grads:
    -> "torch.cuda.FloatTensor" etc.         `p.type() == "torch.cuda.FloatTensor"`. In strict
                                             mode a host-placed tensor keeps its host type name.
strict only:
S1  torch.distributed collectives            NCCL takes only device tensors: a host-placed one
                                             raises (megatron-core's own gloo groups excepted).
S2  DataLoader iterators' __next__           what a DataLoader yields is host memory.
S3  nn.Parameter.__new__                     a parameter keeps the placement of its data.

Not patched because they already work on CPU torch: torch.cuda.memory_allocated (0), empty_cache,
is_available (stays False), device_count. torch.cuda.set_device: skip it when CUDA is absent.

The device mode (9-12) is a `torch.overrides.TorchFunctionMode`, and those live on a per-thread
stack: entering the context on one thread covers that thread; a thread that runs megatron code
enters it itself (patches 1-8 and S1-S3 are process-wide and counted, so they stay until the last
holder leaves). Forked children (DataLoader workers) inherit the state; spawned children must enter
it themselves. `torch.compile` is not supported under the mode.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch

from megatron_hope.megatron.cpu.device_mode import DeviceMode, HostDeviceMixError, placement
from megatron_hope.megatron.cpu.patches import Patches

__all__ = [
    "HostDeviceMixError",
    "cpu_execution",
    "cpu_execution_enabled",
    "disable_cpu_execution",
    "enable_cpu_execution",
    "placement",
]

_LOCK = threading.Lock()
_THREAD = threading.local()
_HOLDERS: dict[int, DeviceMode] = {}  # thread id -> its mode
_BASE = Patches()
_STRICT = Patches()


def _strict_holders() -> int:
    return sum(mode.strict for mode in _HOLDERS.values())


def enable_cpu_execution(strict: bool = False) -> bool:
    """Switch CPU execution on for this thread (and the process-wide patches, once).

    A no-op returning False where CUDA is available. Calling it again on a thread that already
    has it changes nothing but the strictness. Returns True when CPU execution is on.
    """
    if torch.cuda.is_available():
        return False
    with _LOCK:
        had_strict = _strict_holders() > 0
        mode = getattr(_THREAD, "mode", None)
        if mode is None:
            if not _HOLDERS:
                _BASE.apply_base()
            mode = DeviceMode(strict)
            mode.__enter__()
            _THREAD.mode = mode
            _HOLDERS[threading.get_ident()] = mode
        mode.strict = strict
        _sync_strict(had_strict)
    return True


def disable_cpu_execution() -> None:
    """Switch CPU execution off for this thread; the last thread to leave restores torch."""
    with _LOCK:
        mode = getattr(_THREAD, "mode", None)
        if mode is None:
            return
        had_strict = _strict_holders() > 0
        mode.__exit__(None, None, None)
        _THREAD.mode = None
        del _HOLDERS[threading.get_ident()]
        _sync_strict(had_strict)
        if not _HOLDERS:
            _BASE.restore()


def _sync_strict(had_strict: bool) -> None:
    has_strict = _strict_holders() > 0
    if has_strict and not had_strict:
        _STRICT.apply_strict()
    elif had_strict and not has_strict:
        _STRICT.restore()


@contextlib.contextmanager
def cpu_execution(strict: bool = False) -> Iterator[bool]:
    """`with cpu_execution():` runs megatron-core on the host where CUDA is absent.

    Yields True when the shim is on (no CUDA), False where the real GPU is used. Nests: an inner
    context on a thread that already has one only sets the strictness, and puts it back on exit.
    """
    previous = getattr(_THREAD, "mode", None)
    previous_strict = previous.strict if previous is not None else None
    enabled = enable_cpu_execution(strict)
    try:
        yield enabled
    finally:
        if enabled:
            if previous is None:
                disable_cpu_execution()
            else:
                enable_cpu_execution(previous_strict)


def cpu_execution_enabled() -> bool:
    """True while some thread of this process has CPU execution on."""
    return bool(_HOLDERS)
