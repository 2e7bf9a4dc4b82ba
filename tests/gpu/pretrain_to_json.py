"""Run `hope-pretrain` with the given flags in this process and write its losses as JSON.

    python -m tests.gpu.pretrain_to_json OUT.json -- --train-iters 5 ...

The GPU tests run each training in its own interpreter: the CPU reference with
`CUDA_VISIBLE_DEVICES=""` (so the CPU shim takes over), the others on the GPU.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    out, rest = argv[0], argv[argv.index("--") + 1:]
    import torch

    from megatron_hope.megatron.cpu import cpu_execution
    from megatron_hope.training.arguments import parse_config
    from megatron_hope.training.cli import run

    with cpu_execution():
        _, result = run(parse_config(rest))
    if not result.logging_rank:  # under torchrun: the one rank that reports the run writes
        return 0
    Path(out).write_text(json.dumps({
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "train_losses": {str(k): v for k, v in result.train_losses.items()},
        "checkpoint": result.last_checkpoint,
        "exit_reason": result.exit_reason,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
