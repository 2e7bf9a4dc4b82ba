"""`tools/pretrain_hope_gpt.py` and `tools/pretrain_hope_hybrid.py`: Megatron-LM's `pretrain()`
with its own `forward_step` and dataset provider (those of its `pretrain_gpt.py` /
`pretrain_hybrid.py`), our model. Every flag but `--megatron-lm-path` is Megatron-LM's (plus the
HoPE flags of `add_hope_arguments`).

How each tested tag is called (their scripts differ in the entry, not in the parts):
- core_v0.16.1: `pretrain(datasets_provider, partial(model_provider, hope_gpt_builder),
  model_type, forward_step, args_defaults=..., extra_args_provider=...)`, which parses the
  flags itself. No hybrid script at that tag.
- core_v0.19.0: as its own scripts' main blocks: the flags are parsed first
  (`parse_and_validate_args`), the model config is built from them (`gpt_config_from_args` /
  `hybrid_config_from_args` with our `HopeGPTModelConfig` / `HopeHybridModelConfig`, see
  `model_builders`) into the container, and `pretrain(cfg_container, datasets_provider,
  model_type, forward_step)` builds through the config's `ModelBuilder`. Megatron-LM's own
  position types get its own config, unchanged. Megatron-LM main keeps only this path.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from megatron_hope.integrations.megatron_lm import (
    add_hope_arguments,
    hope_gpt_builder,
    megatron_lm_argv,
    saving_run_metadata,
)

ENV_VAR = "MEGATRON_LM_PATH"
PATH_FLAG = "--megatron-lm-path"
TESTED_TAGS = {"0.16": "core_v0.16.1", "0.19": "core_v0.19.0"}
ARGS_DEFAULTS = {"tokenizer_type": "GPT2BPETokenizer"}  # as Megatron-LM's pretrain scripts
MODEL_CONFIG_PATH = "megatron/training/models"
"""Where a checkout has Megatron-LM's ModelConfig path (core_v0.19.0 on; Megatron-LM main drops
the legacy `gpt_builders.py`/`model_provider.py` for it)."""


@dataclass(frozen=True)
class PretrainScript:
    """One of Megatron-LM's pretrain scripts, whose parts our launcher runs with our model."""

    module: str
    """The script, imported for its forward_step and datasets provider."""
    model_config_from_args: str
    """The function of `model_builders` that builds its model config from the parsed args."""
    modelopt_config: str
    """Its ModelOpt config class, used by the script where ModelOpt is enabled."""
    needed: tuple[str, ...]
    """Files of the Megatron-LM checkout it runs on."""
    oldest_tag: str
    """The oldest tested tag that has it."""
    writes_run_metadata: bool
    """`hope_run.json` on each save: our tools read GPT checkpoints only."""
    legacy_needed: tuple[str, ...] = ()
    """More files, in a checkout without the ModelConfig path (`MODEL_CONFIG_PATH`)."""

    @property
    def tool(self) -> str:
        return self.module.replace("pretrain_", "pretrain_hope_")


GPT = PretrainScript(
    "pretrain_gpt", "gpt_model_config_from_args", "ModelOptModelConfig",
    ("pretrain_gpt.py", "megatron/training/training.py"), "core_v0.16.1",
    writes_run_metadata=True, legacy_needed=("gpt_builders.py", "model_provider.py"))
HYBRID = PretrainScript(
    "pretrain_hybrid", "hybrid_model_config_from_args", "ModelOptHybridModelConfig",
    ("pretrain_hybrid.py", "megatron/training/models/hybrid.py", "megatron/training/training.py"),
    "core_v0.19.0", writes_run_metadata=False)


def _how_to_get_it(oldest_tag: str = GPT.oldest_tag) -> str:
    import megatron.core

    version = ".".join(megatron.core.__version__.split(".")[:2])
    tag = TESTED_TAGS.get(version, "core_v" + megatron.core.__version__)
    newer = "" if oldest_tag == GPT.oldest_tag else f"; this script needs {oldest_tag} or newer"
    return (
        f"git clone --depth 1 --branch {tag} https://github.com/NVIDIA/Megatron-LM "
        f"(the tag that pairs with megatron-core {megatron.core.__version__}{newer}), then pass "
        f"{PATH_FLAG} DIR or set {ENV_VAR}=DIR"
    )


def find_megatron_lm(path: str | None, script: PretrainScript = GPT) -> Path:
    """The Megatron-LM checkout: `path`, else $MEGATRON_LM_PATH; an actionable error if absent."""
    given = path or os.environ.get(ENV_VAR)
    if not given:
        raise ValueError(f"Megatron-LM's training loop is not part of megatron-core: "
                         f"{_how_to_get_it(script.oldest_tag)}")
    folder = Path(given).expanduser().resolve()
    legacy = not (folder / MODEL_CONFIG_PATH).is_dir()
    needed = script.needed + (script.legacy_needed if legacy else ())
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        raise ValueError(f"{folder} is not a Megatron-LM checkout {script.module}.py runs on (no "
                         f"{', '.join(missing)}): {_how_to_get_it(script.oldest_tag)}")
    return folder

def check_dataset_helpers_build(folder: Path) -> None:
    """Megatron-LM's initialize runs megatron-core's `compile_helpers` (`make -C` its datasets
    folder) on rank 0 and ends the job when make fails. PyPI's megatron-core ships the helpers
    compiled, beside `helpers.cpp`, but without the Makefile: say so, with the fix, before the
    job starts. Nothing to check where that step runs no make (the CPU shim replaces it)."""
    from megatron.core.datasets import utils

    if getattr(utils.compile_helpers, "__module__", None) != utils.__name__:
        return
    datasets = Path(utils.__file__).resolve().parent
    if (datasets / "Makefile").is_file():
        return
    makefile = folder / "megatron" / "core" / "datasets" / "Makefile"
    fix = (f"cp {makefile} {datasets}/" if makefile.is_file() else
           f"copy megatron/core/datasets/Makefile of the same Megatron-LM tag into {datasets}/")
    raise ValueError(
        f"{datasets} holds megatron-core's compiled dataset helpers but no Makefile (as PyPI's "
        "wheel ships them); Megatron-LM's initialize runs `make -C` there on rank 0 and stops "
        f"the job when it fails: {fix} (make then finds the helpers up to date; it needs "
        "python3-config and pybind11). The Docker image does this at build time.")


def split_path_flag(argv: list[str]) -> tuple[str | None, list[str]]:
    """(`--megatron-lm-path` value, the remaining flags for Megatron-LM's parser)."""
    rest, path, index = [], None, 0
    while index < len(argv):
        flag = argv[index]
        if flag == PATH_FLAG:
            if index + 1 == len(argv):
                raise ValueError(f"{PATH_FLAG} needs a directory")
            path, index = argv[index + 1], index + 2
            continue
        if flag.startswith(PATH_FLAG + "="):
            path = flag.split("=", 1)[1]
        else:
            rest.append(flag)
        index += 1
    return path, rest


def _extra_args_provider(script_module):
    """Ours, then ModelOpt's where Megatron-LM's script would add it."""
    if not getattr(script_module, "has_nvidia_modelopt", False):
        return add_hope_arguments
    return lambda parser: script_module.add_modelopt_args(add_hope_arguments(parser))


@contextlib.contextmanager
def _hope_run_metadata_on_save(script: PretrainScript):
    """Megatron-LM's loop calls `training.save_checkpoint`; each save also writes
    `hope_run.json`. Restored when the run ends."""
    from megatron.training import training

    original = training.save_checkpoint
    if script.writes_run_metadata:
        training.save_checkpoint = saving_run_metadata(original)
    try:
        yield
    finally:
        training.save_checkpoint = original


def model_config_from_args(script: PretrainScript, script_module, args):
    """The model config `script`'s main block would build from `args`, ours for a HoPE type
    (`model_builders`); ModelOpt's where the script would enable it."""
    from megatron_hope.integrations import model_builders

    modelopt_config = None
    if getattr(script_module, "has_nvidia_modelopt", False):
        script_module.maybe_enable_modelopt(args)
        if getattr(args, "modelopt_enabled", False):
            modelopt_config = getattr(script_module, script.modelopt_config)
    return getattr(model_builders, script.model_config_from_args)(args, modelopt_config)


def parse_pretrain_config(script: PretrainScript, script_module, model_config: bool = True):
    """core_v0.19.0, as `script`'s main block: Megatron-LM's flags in sys.argv parsed and
    validated (this sets Megatron-LM's global args) into its `PretrainConfigContainer`, with the
    model config of `model_config_from_args` (`model_config=False`: none, for the legacy
    `model_provider`)."""
    from megatron.training.argument_utils import pretrain_cfg_container_from_args
    from megatron.training.arguments import parse_and_validate_args

    args = parse_and_validate_args(extra_args_provider=_extra_args_provider(script_module),
                                   args_defaults=ARGS_DEFAULTS)
    # pretrain_hybrid.py's forward_step reads its main block's global `args` (packed
    # sequences); set as that block would.
    script_module.args = args
    model = model_config_from_args(script, script_module, args) if model_config else None
    return pretrain_cfg_container_from_args(args, model)


def _legacy_model_provider():
    from model_provider import model_provider  # Megatron-LM's, beside its pretrain_gpt.py

    return partial(model_provider, hope_gpt_builder)


def run_pretrain(script: PretrainScript = GPT, model_config: bool = True) -> None:
    """`script`'s main block with our model; flags in sys.argv. `model_config=False` keeps
    core_v0.19.0 on the legacy `partial(model_provider, hope_gpt_builder)` (GPT only)."""
    from megatron.core.enums import ModelType
    from megatron.training import inprocess_restart, pretrain

    if not model_config and script != GPT:
        raise ValueError(f"the legacy model_provider builds GPT models only, not {script.module}")
    script_module = importlib.import_module(script.module)  # Megatron-LM's, from its folder
    datasets_provider = script_module.train_valid_test_datasets_provider
    datasets_provider.is_distributed = True
    wrapped, store = inprocess_restart.maybe_wrap_for_inprocess_restart(pretrain)
    common = {"store": store}
    if hasattr(script_module, "get_embedding_ranks"):  # pretrain_hybrid.py has none
        common["get_embedding_ranks"] = script_module.get_embedding_ranks
    parts = (datasets_provider, ModelType.encoder_or_decoder, script_module.forward_step)
    with _hope_run_metadata_on_save(script):
        if "cfg_container" not in inspect.signature(pretrain).parameters:  # core_v0.16.1
            wrapped(parts[0], _legacy_model_provider(), *parts[1:], args_defaults=ARGS_DEFAULTS,
                    extra_args_provider=_extra_args_provider(script_module), **common)
            return
        container = parse_pretrain_config(script, script_module, model_config)
        if not model_config:
            common["model_provider"] = _legacy_model_provider()
        wrapped(container, *parts, **common)


def usage(script: PretrainScript = GPT) -> str:
    """`--help`: our flags, and where Megatron-LM's are described. Megatron-LM's own `--help`
    cannot stand in: core_v0.19.0's parser raises while printing one of its help strings."""
    import argparse

    parser = argparse.ArgumentParser(
        prog=f"{script.tool}.py", add_help=False,
        usage=f"torchrun ... tools/{script.tool}.py [{PATH_FLAG} DIR] [HoPE flags] "
              f"<Megatron-LM's {script.module}.py flags>",
        description=f"Megatron-LM's own pretrain() with the forward_step and datasets of its "
                    f"{script.module}.py, and megatron-hope's model.")
    parser.add_argument(PATH_FLAG, metavar="DIR",
                        help=f"the Megatron-LM checkout (default: ${ENV_VAR}); tested tags: "
                             + ", ".join(TESTED_TAGS.values()))
    add_hope_arguments(parser)
    return parser.format_help() + (
        "\n--position-embedding-type also takes hope-pretrain's types (hope, rope, p-rope, none, "
        "ab1-ab3), spelled for Megatron-LM's parser as --position-embedding-type rope "
        "--hope-position-embedding-type TYPE. Every other flag is Megatron-LM's: see its "
        "megatron/training/arguments.py at your tag.\n")


def main(argv: list[str] | None = None, script: PretrainScript = GPT,
         model_config: bool = True) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(usage(script))
        return 0
    try:
        path, rest = split_path_flag(argv)
        folder = find_megatron_lm(path, script)
        check_dataset_helpers_build(folder)
    except ValueError as error:
        print(f"{script.tool}: {error}", file=sys.stderr)
        return 2
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    program = sys.argv[0] if sys.argv else f"{script.tool}.py"
    sys.argv = [program, *megatron_lm_argv(rest)]  # Megatron-LM's parser reads it
    run_pretrain(script, model_config)
    return 0
