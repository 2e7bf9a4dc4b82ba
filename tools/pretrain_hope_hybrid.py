"""HoPE in megatron-core's HybridModel under Megatron-LM's own loop: its `pretrain_hybrid.py`
(forward_step, datasets, `pretrain()`), our `HopeHybridModel` through `HopeHybridModelConfig`.

Megatron-LM's flags (those of its pretrain_hybrid.py, `--hybrid-layer-pattern` included), plus
--position-embedding-type {hope,rope,p-rope,none,ab1,ab2,ab3} --hope-train-length L
--rope-fraction F, plus --megatron-lm-path DIR (or $MEGATRON_LM_PATH): a checkout of
Megatron-LM core_v0.19.0 or newer (the hybrid model config exists from that tag on), the tag
that pairs with the installed megatron-core. Needs Transformer Engine: the hybrid stack builds
TE norms (the GPU image). Checkpoints get no hope_run.json: our tools read GPT models only.

One node, 8 GPUs:
    torchrun --nproc-per-node 8 tools/pretrain_hope_hybrid.py --megatron-lm-path ~/Megatron-LM \\
        --position-embedding-type hope --hope-train-length 4096 \\
        --hybrid-layer-pattern "M*-M*-M*-M*-" <your usual pretrain_hybrid.py flags>
(pattern symbols: M Mamba, * attention, - MLP; Mamba layers need mamba-ssm as upstream's do)
Slurm: the same line under `srun` with Megatron-LM's usual torchrun wrapper.
"""

import sys

from megatron_hope.integrations.launcher import HYBRID, main

if __name__ == "__main__":
    sys.exit(main(script=HYBRID))
