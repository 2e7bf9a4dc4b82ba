"""The per-thread device mode: CUDA placement mapped to the host, optionally strict about it.

A `torch.overrides.TorchFunctionMode` sees every torch call made on its thread. `DeviceMode`
rewrites arguments that name a CUDA device to the CPU (patches 9-12 of the package docstring) and
otherwise forwards the call unchanged.

Strict mode adds what the host cannot show by itself: where each tensor WOULD live on a GPU.
Every tensor the mode sees created or moved gets a placement tag:

- `cuda`: created with a CUDA `device=`, or moved by `.cuda()` / `.to(<CUDA device>)`;
- `host`: created without a device (`torch.tensor`, `torch.from_numpy`, factories), moved by
  `.cpu()` / `.to("cpu")`, pinned, or yielded by a `DataLoader` (patched in `patches.py`);
- untagged: made where the mode cannot see (autograd's C++ engine, C++ collectives).

An op's outputs inherit `cuda` if any tensor input is `cuda`, else `host` if any is `host`. An op
that mixes a `cuda` input with a `host` input of one or more dimensions raises
`HostDeviceMixError`: that is exactly the op that raises "Expected all tensors to be on the same
device" on a GPU (CUDA ops accept 0-dim host tensors as scalars, so those pass). Transfers
(`copy_`, `.to`, `.cuda`, `.cpu`, `.pin_memory`, indexing, `.data =`) legitimately cross devices.
`.numpy()` of a `cuda` tensor raises too, as it does on a GPU, and a `cuda` tensor answers
`.device` with `cuda:0`, so that `device=x.device` allocations land where they would on a GPU.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.autograd.graph import _engine_run_backward
from torch.overrides import TorchFunctionMode

CPU = torch.device("cpu")
PLACEMENT_ATTRIBUTE = "_megatron_hope_placement"
ON_CUDA = "cuda"
ON_HOST = "host"


class HostDeviceMixError(RuntimeError):
    """A host tensor met a device tensor where a GPU run would fail (strict CPU execution)."""


def names_cuda(device: Any) -> bool:
    """True for a `device=` value that means a CUDA device: "cuda", "cuda:1", cuda device, 0."""
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.startswith("cuda")
    # A bare int is a CUDA ordinal for torch factories (`device=0`); bool is an int, not a device.
    return isinstance(device, int) and not isinstance(device, bool)


def _names_host(device: Any) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cpu"
    return isinstance(device, str) and device.startswith("cpu")


def placement(tensor: torch.Tensor) -> str | None:
    """Where `tensor` would live on a GPU under strict mode: "cuda", "host" or None (unknown)."""
    return getattr(tensor, PLACEMENT_ATTRIBUTE, None)


def place(tensor: Any, where: str | None) -> None:
    """Tag `tensor` (and the tensors inside lists, tuples and dicts) with a placement."""
    if where is None:
        return
    if isinstance(tensor, torch.Tensor):
        setattr(tensor, PLACEMENT_ATTRIBUTE, where)
    elif isinstance(tensor, list | tuple):
        for item in tensor:
            place(item, where)
    elif isinstance(tensor, dict):
        for item in tensor.values():
            place(item, where)


def _tensors(args: tuple, kwargs: dict) -> Iterator[torch.Tensor]:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, list | tuple):
            yield from (item for item in value if isinstance(item, torch.Tensor))


def describe(tensor: torch.Tensor) -> str:
    return f"{placement(tensor) or 'untagged'} tensor {tuple(tensor.shape)} {tensor.dtype}"


# --- patches 10-12: Tensor methods that name the device ------------------------------------


def _to_device_argument(args: tuple, kwargs: dict) -> Any:
    if "device" in kwargs:
        return kwargs["device"]
    if len(args) > 1 and not isinstance(args[1], torch.dtype | torch.Tensor):
        return args[1]
    if len(args) > 1 and isinstance(args[1], torch.Tensor):
        return ON_CUDA if placement(args[1]) == ON_CUDA else None  # .to(other): other's place
    return None


def _tensor_to(func: Callable, args: tuple, kwargs: dict) -> Any:
    # Tensor.to(self, device, ...) / Tensor.to(self, "cuda", dtype): device is the 2nd positional.
    moves = len(args) > 1 and not isinstance(args[1], torch.dtype | torch.Tensor)
    if moves and names_cuda(args[1]):
        args = (args[0], CPU, *args[2:])
    return func(*args, **kwargs)


def _tensor_cuda(func: Callable, args: tuple, kwargs: dict) -> Any:
    return args[0]


def _tensor_pin_memory(func: Callable, args: tuple, kwargs: dict) -> Any:
    return args[0]  # nothing to pin without CUDA (torch refuses to try)


_CUDA_TENSOR_TYPE_PREFIX = "torch.cuda."


def _tensor_type(func: Callable, args: tuple, kwargs: dict) -> Any:
    result = func(*args, **kwargs)
    if len(args) == 1 and not kwargs and result.startswith("torch.") and "." not in result[6:]:
        if placement(args[0]) == ON_HOST:
            return result  # strict: a host tensor is what megatron's optimizer must refuse
        return _CUDA_TENSOR_TYPE_PREFIX + result[6:]
    return result


_SPECIAL: dict[Callable, Callable[[Callable, tuple, dict], Any]] = {
    torch.Tensor.to: _tensor_to,  # 10
    torch.Tensor.cuda: _tensor_cuda,  # 11
    torch.Tensor.type: _tensor_type,  # 12
    torch.Tensor.pin_memory: _tensor_pin_memory,  # 10
}
# Transfers that return their input unchanged on the host but a new tensor on a GPU.
_TRANSFERS = {torch.Tensor.to, torch.Tensor.cuda, torch.Tensor.cpu, torch.Tensor.pin_memory}

_TO_HOST = {torch.Tensor.cpu, torch.Tensor.pin_memory}
_DATA_SETTER = torch.Tensor.data.__set__
_DEVICE_GETTER = torch.Tensor.device.__get__
_CUDA_DEVICE = torch.device("cuda", 0)
# Calls that move data between host and device on a GPU without complaint.
_CROSSES_DEVICES = {
    torch.Tensor.copy_,
    torch.Tensor.to,
    torch.Tensor.cuda,
    torch.Tensor.cpu,
    torch.Tensor.pin_memory,
    torch.Tensor.__getitem__,
    torch.Tensor.__setitem__,
    torch.Tensor.type,
    torch._has_compatible_shallow_copy_type,  # Module._apply's check before `param.data = moved`
    _DATA_SETTER,
}


_BACKWARD = frozenset({torch.autograd.backward, torch.Tensor.backward})


def _backward_under(mode, func, args: tuple, kwargs: dict) -> None:
    """Run the autograd engine with `mode` on. A mode is off while its handler runs, and
    torch >= 2.13 hands `backward` to the mode; but the backward pass runs Python, e.g.
    megatron-core's activation recompute re-running the forward, which must still be seen."""
    if func is torch.Tensor.backward:
        bound = inspect.signature(torch.Tensor.backward).bind(*args, **kwargs).arguments
        tensors, grads = (bound["self"],), bound.get("gradient")
    else:
        bound = inspect.signature(torch.autograd.backward).bind(*args, **kwargs).arguments
        tensors, grads = bound["tensors"], bound.get("grad_tensors")
    if isinstance(tensors, torch.Tensor):
        tensors = (tensors,)
    tensors = tuple(tensors)
    inputs = bound.get("inputs")
    inputs = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs or ())
    create_graph = bound.get("create_graph", False)
    retain_graph = bound.get("retain_graph")
    with mode:
        grads = torch.autograd._make_grads(
            tensors, torch.autograd._tensor_or_tensors_to_tuple(grads, len(tensors)),
            is_grads_batched=False)
        _engine_run_backward(
            tensors, grads, create_graph if retain_graph is None else retain_graph,
            create_graph, inputs, allow_unreachable=True, accumulate_grad=True)


class DeviceMode(TorchFunctionMode):
    """Maps CUDA device arguments to the CPU; `strict` also checks placements as a GPU would."""

    def __init__(self, strict: bool = False) -> None:
        super().__init__()
        self.strict = strict

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _BACKWARD:
            return _backward_under(self, func, args, kwargs)
        device = kwargs.get("device")
        if device is not None and names_cuda(device):
            kwargs = {**kwargs, "device": CPU}
        if kwargs.get("pin_memory"):
            # Factories asked for pinned host memory (megatron's `torch.tensor(...,
            # pin_memory=True).cuda(non_blocking=True)`): nothing to pin without CUDA.
            kwargs = {**kwargs, "pin_memory": False}
        if not self.strict:
            special = _SPECIAL.get(func)
            return special(func, args, kwargs) if special else func(*args, **kwargs)
        return self._strict_call(func, args, kwargs, device)

    def _strict_call(self, func, args: tuple, kwargs: dict, device: Any) -> Any:
        if func == _DEVICE_GETTER:  # method-wrappers are made anew: compare, not `is`
            # `device=x.device` idioms (megatron, transformers) then allocate beside x, as on a GPU.
            return _CUDA_DEVICE if placement(args[0]) == ON_CUDA else func(*args, **kwargs)
        inputs = list(_tensors(args, kwargs))
        where = _explicit_placement(func, args, kwargs, device, inputs)
        if func not in _CROSSES_DEVICES:
            _check_same_device(func, inputs)
        if func is torch.Tensor.numpy and inputs and placement(inputs[0]) == ON_CUDA:
            raise HostDeviceMixError(
                f"numpy() of a {describe(inputs[0])}: on a GPU this raises 'can't convert cuda "
                "tensor to numpy'; call .cpu() first"
            )
        special = _SPECIAL.get(func)
        result = special(func, args, kwargs) if special else func(*args, **kwargs)
        if func in _TRANSFERS and result is args[0] and placement(result) != where:
            # A GPU copies: the source keeps its place (an alias carries the new one).
            result = result.view_as(result)
        if func == _DATA_SETTER:
            place(args[0], placement(args[1]))
        elif where is not None:
            place(result, where)
        return result


def _explicit_placement(func, args: tuple, kwargs: dict, device: Any, inputs: list) -> str | None:
    """Where the result of `func` lives: by its device argument, its inputs, or the host."""
    if func in _TO_HOST:
        return ON_HOST
    if func is torch.Tensor.cuda:
        return ON_CUDA
    if func is torch.Tensor.to:
        # `device` is the caller's own keyword (kwargs already hold its host rewrite).
        target = device if device is not None else _to_device_argument(args, kwargs)
        if target == ON_CUDA or (target is not None and names_cuda(target)):
            return ON_CUDA
        if target is not None and _names_host(target):
            return ON_HOST
    elif device is not None:
        if names_cuda(device):
            return ON_CUDA
        if _names_host(device):
            return ON_HOST
    places = {placement(tensor) for tensor in inputs}
    if ON_CUDA in places:
        return ON_CUDA
    if ON_HOST in places or not inputs:
        return ON_HOST  # no tensor input and no device: a factory, which allocates on the host
    return None


def _check_same_device(func, inputs: list[torch.Tensor]) -> None:
    on_cuda = [tensor for tensor in inputs if placement(tensor) == ON_CUDA]
    if not on_cuda:
        return
    on_host = [tensor for tensor in inputs if placement(tensor) == ON_HOST and tensor.dim() > 0]
    if on_host:
        name = getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))
        raise HostDeviceMixError(
            f"{name}: {describe(on_host[0])} meets {describe(on_cuda[0])}; on a GPU this raises "
            "'Expected all tensors to be on the same device'. Move the host tensor to "
            "torch.cuda.current_device() (batches: .cuda(non_blocking=True) from pinned memory)"
        )
