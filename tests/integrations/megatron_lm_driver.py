"""Runs `tools/pretrain_hope_gpt.py`'s main under `megatron_lm_cpu_execution` (one rank of a
torchrun, or a single process). Non-strict: Megatron-LM's loop all-reduces host tensors on its
gloo groups and times on the host, which the strict checks would refuse.

    python -m tests.integrations.megatron_lm_driver --megatron-lm-path DIR <Megatron-LM flags>
"""

import sys

from megatron_hope.integrations import launcher
from megatron_hope.megatron.cpu.megatron_lm import megatron_lm_cpu_execution

if __name__ == "__main__":
    path, _ = launcher.split_path_flag(sys.argv[1:])
    sys.path.insert(0, str(launcher.find_megatron_lm(path)))
    with megatron_lm_cpu_execution():
        sys.exit(launcher.main(sys.argv[1:]))
