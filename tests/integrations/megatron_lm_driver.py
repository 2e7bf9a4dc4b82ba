"""Runs `tools/pretrain_hope_gpt.py`'s main under `megatron_lm_cpu_execution` (one rank of a
torchrun, or a single process). Non-strict: Megatron-LM's loop all-reduces host tensors on its
gloo groups and times on the host, which the strict checks would refuse.

    python -m tests.integrations.megatron_lm_driver --megatron-lm-path DIR <Megatron-LM flags>

With `--upstream` it runs Megatron-LM's own `pretrain_gpt.py` instead: its model, no plug-in
(no HoPE flags, no `hope_run.json`), as a Megatron-LM user's existing run. With
`--legacy-model-provider` the launcher builds through `partial(model_provider, hope_gpt_builder)`
on core_v0.19.0 too, instead of its ModelConfig path.
"""

import runpy
import sys

from megatron_hope.integrations import launcher
from megatron_hope.megatron.cpu.megatron_lm import megatron_lm_cpu_execution

UPSTREAM_FLAG = "--upstream"
LEGACY_FLAG = "--legacy-model-provider"

if __name__ == "__main__":
    path, rest = launcher.split_path_flag(sys.argv[1:])
    folder = launcher.find_megatron_lm(path)
    sys.path.insert(0, str(folder))
    with megatron_lm_cpu_execution():
        if UPSTREAM_FLAG in rest:
            script = str(folder / "pretrain_gpt.py")
            sys.argv = [script, *(flag for flag in rest if flag != UPSTREAM_FLAG)]
            runpy.run_path(script, run_name="__main__")
            sys.exit(0)
        legacy = LEGACY_FLAG in rest
        argv = [flag for flag in sys.argv[1:] if flag != LEGACY_FLAG]
        sys.exit(launcher.main(argv, model_config=not legacy))
