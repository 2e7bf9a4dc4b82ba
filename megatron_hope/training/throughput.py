"""`--log-throughput` and `--log-memory-to-tensorboard`: the figures people compare runs by.

TFLOP/s per GPU is Megatron-LM's: `num_floating_point_operations` of one global batch (see
`training.flops`) over seconds per iteration x 10^12 x world size. MFU divides it by the peak of
one GPU: `--peak-tflops`, else the dense BF16 peak of the device name (`flops.PEAK_BF16_TFLOPS`).
On CPU, or on a GPU the table does not know, MFU is left out (TFLOP/s is still printed).
"""

from __future__ import annotations

import torch

from megatron_hope.megatron.model import ModelArchitecture
from megatron_hope.training.flops import mfu, num_floating_point_operations, peak_bf16_tflops


class ThroughputMeter:
    """FLOPs per iteration fixed at start-up; `figures(seconds)` per logged interval."""

    def __init__(self, arch: ModelArchitecture, global_batch_size: int, padded_vocab_size: int,
                 world_size: int, peak_tflops: float | None = None) -> None:
        self.flops_per_iteration = num_floating_point_operations(
            arch, global_batch_size, padded_vocab_size)
        self.world_size = world_size
        if peak_tflops is None and torch.cuda.is_available():
            peak_tflops = peak_bf16_tflops(torch.cuda.get_device_name())
        self.peak_tflops = peak_tflops

    def figures(self, seconds_per_iteration: float) -> tuple[float, float | None]:
        """(TFLOP/s per GPU, MFU as a fraction or None without a known peak)."""
        achieved = self.flops_per_iteration / (
            max(seconds_per_iteration, 1e-9) * 10**12 * self.world_size)
        return achieved, (mfu(achieved, self.peak_tflops) if self.peak_tflops else None)

    @staticmethod
    def log_fields(achieved: float, utilisation: float | None) -> str:
        """Megatron-LM's field, then MFU (not in Megatron-LM's line; appended after it)."""
        line = f" throughput per GPU (TFLOP/s/GPU): {achieved:.1f} |"
        if utilisation is not None:
            line += f" MFU: {100 * utilisation:.1f}% |"
        return line

    @staticmethod
    def scalars(achieved: float, utilisation: float | None) -> dict[str, float | None]:
        """TensorBoard tags: Megatron-LM's `throughput`, plus `mfu`."""
        return {"throughput": achieved, "mfu": utilisation}


def memory_scalars() -> dict[str, float]:
    """Megatron-LM's `--log-memory-to-tensorboard` tags from the CUDA allocator; {} on CPU."""
    if not torch.cuda.is_available():
        return {}
    stats = torch.cuda.memory_stats()
    return {
        "mem-reserved-bytes": stats.get("reserved_bytes.all.current", 0),
        "mem-allocated-bytes": stats.get("allocated_bytes.all.current", 0),
        "mem-max-allocated-bytes": stats.get("allocated_bytes.all.peak", 0),
        "mem-allocated-count": stats.get("allocation.all.current", 0),
    }
