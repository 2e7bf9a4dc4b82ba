"""`tools/pretrain_hope_gpt.py`: Megatron-LM's `pretrain()` with its own `forward_step` and
dataset provider, and `hope_gpt_builder` for the model. Every flag but `--megatron-lm-path` is
Megatron-LM's (plus the HoPE flags of `add_hope_arguments`).

How each tested tag is called (their `pretrain_gpt.py` differ in the entry, not in the parts):
- core_v0.16.1: `pretrain(datasets_provider, partial(model_provider, builder), model_type,
  forward_step, args_defaults=..., extra_args_provider=...)`, which parses the flags itself.
- core_v0.19.0: `pretrain(cfg_container, datasets_provider, model_type, forward_step,
  model_provider=...)`; the flags are parsed first (`parse_and_validate_args`) and the container
  is built without a `ModelConfig`, so `pretrain` builds through the legacy `model_provider`.
  Megatron-LM main drops that path for a `ModelConfig` whose `builder` names a
  `ModelBuilder`: a newer tag plugs in there (a builder whose `build_model` builds
  `HopeGPTModel`), or through the config's `pre_wrap_hooks`.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import sys
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
ARGS_DEFAULTS = {"tokenizer_type": "GPT2BPETokenizer"}  # as Megatron-LM's pretrain_gpt.py


def _how_to_get_it() -> str:
    import megatron.core

    version = ".".join(megatron.core.__version__.split(".")[:2])
    tag = TESTED_TAGS.get(version, "core_v" + megatron.core.__version__)
    return (
        f"git clone --depth 1 --branch {tag} https://github.com/NVIDIA/Megatron-LM "
        f"(the tag that pairs with megatron-core {megatron.core.__version__}), then pass "
        f"{PATH_FLAG} DIR or set {ENV_VAR}=DIR"
    )


def find_megatron_lm(path: str | None) -> Path:
    """The Megatron-LM checkout: `path`, else $MEGATRON_LM_PATH; an actionable error if absent."""
    given = path or os.environ.get(ENV_VAR)
    if not given:
        raise ValueError(f"Megatron-LM's training loop is not part of megatron-core: "
                         f"{_how_to_get_it()}")
    folder = Path(given).expanduser().resolve()
    needed = ("pretrain_gpt.py", "gpt_builders.py", "model_provider.py",
              "megatron/training/training.py")
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        raise ValueError(f"{folder} is not a Megatron-LM checkout (no {', '.join(missing)}): "
                         f"{_how_to_get_it()}")
    return folder


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


def _extra_args_provider(pretrain_gpt):
    """Ours, then ModelOpt's where Megatron-LM's pretrain_gpt.py would add it."""
    if not getattr(pretrain_gpt, "has_nvidia_modelopt", False):
        return add_hope_arguments
    return lambda parser: pretrain_gpt.add_modelopt_args(add_hope_arguments(parser))


@contextlib.contextmanager
def _hope_run_metadata_on_save():
    """Megatron-LM's loop calls `training.save_checkpoint`; each save also writes
    `hope_run.json`. Restored when the run ends."""
    from megatron.training import training

    original = training.save_checkpoint
    training.save_checkpoint = saving_run_metadata(original)
    try:
        yield
    finally:
        training.save_checkpoint = original


def run_pretrain() -> None:
    """Megatron-LM's `pretrain_gpt.py` main block with `hope_gpt_builder`; flags in sys.argv."""
    import pretrain_gpt  # Megatron-LM's: its forward_step and datasets provider
    from megatron.core.enums import ModelType
    from megatron.training import inprocess_restart, pretrain
    from model_provider import model_provider

    datasets_provider = pretrain_gpt.train_valid_test_datasets_provider
    datasets_provider.is_distributed = True
    provider = partial(model_provider, hope_gpt_builder)
    extra_args = _extra_args_provider(pretrain_gpt)
    takes_container = "cfg_container" in inspect.signature(pretrain).parameters
    wrapped, store = inprocess_restart.maybe_wrap_for_inprocess_restart(pretrain)
    common = dict(store=store, get_embedding_ranks=pretrain_gpt.get_embedding_ranks)
    with _hope_run_metadata_on_save():
        if takes_container:  # core_v0.19.0
            from megatron.training.argument_utils import pretrain_cfg_container_from_args
            from megatron.training.arguments import parse_and_validate_args

            args = parse_and_validate_args(extra_args_provider=extra_args,
                                           args_defaults=ARGS_DEFAULTS)
            container = pretrain_cfg_container_from_args(args, None)
            wrapped(container, datasets_provider, ModelType.encoder_or_decoder,
                    pretrain_gpt.forward_step, model_provider=provider, **common)
        else:  # core_v0.16.1
            wrapped(datasets_provider, provider, ModelType.encoder_or_decoder,
                    pretrain_gpt.forward_step, args_defaults=ARGS_DEFAULTS,
                    extra_args_provider=extra_args, **common)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        path, rest = split_path_flag(argv)
        folder = find_megatron_lm(path)
    except ValueError as error:
        print(f"pretrain_hope_gpt: {error}", file=sys.stderr)
        return 2
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    program = sys.argv[0] if sys.argv else "pretrain_hope_gpt.py"
    sys.argv = [program, *megatron_lm_argv(rest)]  # Megatron-LM's parser reads it
    run_pretrain()
    return 0
