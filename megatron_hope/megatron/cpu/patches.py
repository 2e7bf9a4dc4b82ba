"""The process-wide patches (1-8, and the strict checks S1-S3 of the package docstring).

Each patch is recorded as (owner, attribute, original) when applied, so `restore()` puts every
original back in reverse order. Nothing here is applied at import time.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from megatron_hope.megatron.cpu.device_mode import (
    ON_HOST,
    HostDeviceMixError,
    describe,
    place,
    placement,
)

_CPU = torch.device("cpu")


# --- 1-4, 7, 8: torch.cuda entry points --------------------------------------------------------


def _current_device() -> int:
    return 0  # an ordinal, as on a GPU; the device mode maps `device=0` to the host


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


TORCH_CUDA_PATCHES: dict[str, Callable[..., Any] | type] = {
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


# --- 5, 6: megatron-core's CUDA RNG helpers ----------------------------------------------------


def _refuse_graph_safe(graph_safe: bool) -> None:
    if graph_safe:
        raise RuntimeError(
            "graph-safe (CUDA graph) RNG states have no CPU equivalent; "
            "leave use_cudagraphable_rng/te_rng_tracker off on CPU"
        )


def _megatron_get_cuda_rng_state(
    device: Any = "cuda", clone: bool = False, graph_safe: bool = False
) -> torch.Tensor:
    _refuse_graph_safe(graph_safe)
    return torch.get_rng_state()


def _megatron_set_cuda_rng_state(
    new_state: torch.Tensor, device: Any = -1, graph_safe: bool = False
) -> None:
    _refuse_graph_safe(graph_safe)
    torch.set_rng_state(new_state)


class _DropForkedCpuRngWarning(logging.Filter):
    """Drops the tracker's "CPU RNG state changed" warning, which is expected once 5 is active."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "CPU RNG state changed within GPU RNG context" not in record.getMessage()


# --- S1-S3: strict checks ----------------------------------------------------------------------

# Collectives whose tensors must live on the device for NCCL. isend/irecv stay torch's own:
# P2POp accepts only those two functions (batch_isend_irecv's check covers their tensors).
_COLLECTIVES = (
    "all_reduce", "all_gather", "all_gather_into_tensor", "reduce_scatter",
    "reduce_scatter_tensor", "broadcast", "reduce", "all_to_all_single", "send", "recv",
    "batch_isend_irecv",
)


def _megatron_gloo_groups() -> list:
    """megatron-core's own gloo groups (CPU tensors are right there, on a GPU run too)."""
    from megatron.core import parallel_state

    return [value for name, value in vars(parallel_state).items()
            if name.endswith("_GLOO") and value is not None]


def _collective_tensors(name: str, args: tuple, kwargs: dict) -> list[torch.Tensor]:
    if name == "batch_isend_irecv":
        return [op.tensor for op in (args[0] if args else kwargs["p2p_op_list"])]
    found = []
    for value in (*args[:2], kwargs.get("tensor"), kwargs.get("output"),
                  kwargs.get("tensor_list"), kwargs.get("output_tensor"),
                  kwargs.get("input_tensor")):
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif isinstance(value, list):
            found.extend(item for item in value if isinstance(item, torch.Tensor))
    return found


def _checked_collective(name: str, original: Callable) -> Callable:
    @functools.wraps(original)
    def collective(*args: Any, **kwargs: Any) -> Any:
        group = kwargs.get("group")
        if group is None or not any(group is gloo for gloo in _megatron_gloo_groups()):
            for tensor in _collective_tensors(name, args, kwargs):
                if placement(tensor) == ON_HOST:
                    raise HostDeviceMixError(
                        f"torch.distributed.{name} of a {describe(tensor)}: NCCL, the GPU "
                        "backend, only takes device tensors; create it on "
                        "torch.cuda.current_device()"
                    )
        return original(*args, **kwargs)

    return collective


def _host_tagging_next(original: Callable) -> Callable:
    @functools.wraps(original)
    def next_batch(self: Any) -> Any:
        batch = original(self)
        place(batch, ON_HOST)  # a DataLoader yields host (at best pinned) memory
        return batch

    return next_batch


def _placed_parameter_new(original: Callable) -> Callable:
    def new(cls, data: torch.Tensor | None = None, requires_grad: bool = True):
        parameter = original(cls, data, requires_grad)
        if data is not None:
            place(parameter, placement(data))
        return parameter

    return staticmethod(new)


class Patches:
    """Applies the patches and remembers the originals."""

    def __init__(self) -> None:
        self._applied: list[tuple[Any, str, Any]] = []
        self._log_filter: tuple[logging.Logger, logging.Filter] | None = None

    def _set(self, owner: Any, name: str, value: Any) -> None:
        self._applied.append((owner, name, owner.__dict__.get(name, getattr(owner, name))))
        setattr(owner, name, value)

    def set(self, owner: Any, name: str, value: Any) -> None:
        """Replace `owner.name` by `value`, remembering the original for `restore()`."""
        self._set(owner, name, value)

    def apply_base(self) -> None:
        """Patches 1-8: what megatron-core needs to run on the host at all."""
        from megatron.core.tensor_parallel import random as mcore_random

        for name, replacement in TORCH_CUDA_PATCHES.items():
            self._set(torch.cuda, name, replacement)
        for name in _TORCH_CUDA_RANDOM_PATCHES:
            self._set(torch.cuda.random, name, TORCH_CUDA_PATCHES[name])
        self._set(mcore_random, "_get_cuda_rng_state", _megatron_get_cuda_rng_state)
        self._set(mcore_random, "_set_cuda_rng_state", _megatron_set_cuda_rng_state)
        logger = logging.getLogger(mcore_random.__name__)
        log_filter = _DropForkedCpuRngWarning()
        logger.addFilter(log_filter)
        self._log_filter = (logger, log_filter)

    def apply_strict(self) -> None:
        """S1: collectives refuse host tensors; S2: DataLoaders yield host tensors; S3:
        `nn.Parameter(data)` keeps the placement of `data`."""
        from torch.utils.data import dataloader

        for name in _COLLECTIVES:
            self._set(dist, name, _checked_collective(name, getattr(dist, name)))
        iterator = dataloader._BaseDataLoaderIter
        self._set(iterator, "__next__", _host_tagging_next(iterator.__next__))
        self._set(torch.nn.Parameter, "__new__",
                  _placed_parameter_new(torch.nn.Parameter.__new__))

    def restore(self) -> None:
        while self._applied:
            owner, name, original = self._applied.pop()
            setattr(owner, name, original)
        if self._log_filter is not None:
            logger, log_filter = self._log_filter
            logger.removeFilter(log_filter)
            self._log_filter = None
