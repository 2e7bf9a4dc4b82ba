"""HoPE under Megatron-LM's own training loop (`pretrain()`, its forward_step and datasets).

Megatron-LM's flags, plus --position-embedding-type {hope,rope,p-rope,none,ab1,ab2,ab3}
--hope-train-length L --rope-fraction F, plus --megatron-lm-path DIR (or $MEGATRON_LM_PATH):
a checkout of the Megatron-LM tag that pairs with the installed megatron-core
(git clone --branch core_v0.16.1 https://github.com/NVIDIA/Megatron-LM; core_v0.19.0 for 0.19).
On core_v0.16.1 the model comes from `partial(model_provider, hope_gpt_builder)`; from
core_v0.19.0 on from Megatron-LM's ModelConfig path (`HopeGPTModelConfig` and its builder).

One node, 8 GPUs:
    torchrun --nproc-per-node 8 tools/pretrain_hope_gpt.py --megatron-lm-path ~/Megatron-LM \\
        --position-embedding-type hope --hope-train-length 4096 \\
        <your usual pretrain_gpt.py flags>
Slurm: the same line under `srun` with Megatron-LM's usual torchrun wrapper.
"""

import sys

from megatron_hope.integrations.launcher import main

if __name__ == "__main__":
    sys.exit(main())
