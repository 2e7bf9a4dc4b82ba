"""Write sharded safetensors files tensor by tensor, never holding a shard in memory.

The safetensors format is an 8-byte little-endian header length, a JSON header naming every
tensor's dtype, shape and byte range, then the raw bytes. An export knows every tensor's name,
shape and dtype before it reads any weight, so the shards and their headers are planned first
and each tensor is appended as soon as it is produced. The files are ordinary safetensors (read
back with `safetensors.safe_open` and `from_pretrained`); the index is HF's
`model.safetensors.index.json`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

DTYPE_CODES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16",
               torch.float64: "F64"}
INDEX_FILE_NAME = "model.safetensors.index.json"


@dataclass(frozen=True)
class Entry:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * torch.empty((), dtype=self.dtype).element_size()


@dataclass
class _Shard:
    file_name: str
    entries: list[Entry] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        return sum(entry.nbytes for entry in self.entries)


def parse_size(text: str) -> int:
    """`5GB`, `500MB`, `2GiB`, `1000000` -> bytes (HF's `max_shard_size` spelling).

    Raises:
        ValueError: naming --max-shard-size, for anything but a positive size.
    """
    units = {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "KB": 10**3, "MB": 10**6, "GB": 10**9,
             "B": 1}
    upper = text.strip().upper()
    number, scale = upper, 1
    for unit, unit_scale in units.items():
        if upper.endswith(unit):
            number, scale = upper[: -len(unit)], unit_scale
            break
    try:
        size = float(number) * scale
    except ValueError:
        size = math.nan
    if not 1 <= size < math.inf:  # NaN compares false: refused too
        raise ValueError(f"--max-shard-size {text!r}: expected a positive size such as 5GB, "
                         "500MB, 2GiB or a byte count")
    return int(size)


def plan_shards(entries: list[Entry], max_shard_bytes: int) -> list[_Shard]:
    """Greedy, in order: a shard closes when the next tensor would push it past the limit."""
    shards: list[_Shard] = [_Shard("")]
    for entry in entries:
        if shards[-1].entries and shards[-1].nbytes + entry.nbytes > max_shard_bytes:
            shards.append(_Shard(""))
        shards[-1].entries.append(entry)
    for number, shard in enumerate(shards, start=1):
        shard.file_name = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
    return shards


class StreamingSafetensorsWriter:
    """Append tensors in the planned order; `close()` writes the index."""

    def __init__(self, directory: Path, entries: list[Entry], max_shard_bytes: int,
                 metadata: dict[str, str] | None = None) -> None:
        self.directory = Path(directory)
        self.shards = plan_shards(entries, max_shard_bytes)
        self.metadata = {"format": "pt", **(metadata or {})}
        self._order = [(shard_index, entry) for shard_index, shard in enumerate(self.shards)
                       for entry in shard.entries]
        self._next = 0
        self._handle = None
        self._open_shard = -1

    def _header(self, shard: _Shard) -> bytes:
        header: dict[str, object] = {"__metadata__": self.metadata}
        offset = 0
        for entry in shard.entries:
            header[entry.name] = {"dtype": DTYPE_CODES[entry.dtype], "shape": list(entry.shape),
                                  "data_offsets": [offset, offset + entry.nbytes]}
            offset += entry.nbytes
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as safetensors writes it
        return len(text).to_bytes(8, "little") + text

    def write(self, name: str, tensor: torch.Tensor) -> None:
        shard_index, entry = self._order[self._next]
        if name != entry.name or tuple(tensor.shape) != entry.shape:
            raise RuntimeError(
                f"export wrote {name} {list(tensor.shape)} where the plan expects {entry.name} "
                f"{list(entry.shape)}")
        if shard_index != self._open_shard:
            self._close_handle()
            shard = self.shards[shard_index]
            self._handle = open(self.directory / shard.file_name, "wb")  # noqa: SIM115
            self._handle.write(self._header(shard))
            self._open_shard = shard_index
        data = tensor.detach().to(entry.dtype).contiguous().cpu()
        self._handle.write(data.reshape(-1).view(torch.uint8).numpy().data)
        self._next += 1

    def _close_handle(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def close(self) -> dict:
        self._close_handle()
        if self._next != len(self._order):
            missing = [entry.name for _, entry in self._order[self._next:]]
            raise RuntimeError(f"export ended before writing {missing[:3]}...")
        index = {
            "metadata": {"total_size": sum(shard.nbytes for shard in self.shards)},
            "weight_map": {entry.name: shard.file_name for shard in self.shards
                           for entry in shard.entries},
        }
        (self.directory / INDEX_FILE_NAME).write_text(json.dumps(index, indent=2) + "\n")
        return index

    def abort(self) -> None:
        self._close_handle()
