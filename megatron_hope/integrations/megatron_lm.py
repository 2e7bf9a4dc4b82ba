"""HoPE in Megatron-LM's own training loop: its `pretrain()`, `forward_step` and datasets, our
model. Megatron-LM's `megatron/training` is not in the megatron-core wheel: a checkout of the tag
that pairs with the installed megatron-core must be importable (see `tools/pretrain_hope_gpt.py`).

Usable from a user's own Megatron-LM script too:

    from megatron_hope.integrations.megatron_lm import add_hope_arguments, hope_gpt_builder
    pretrain(train_valid_test_datasets_provider, partial(model_provider, hope_gpt_builder),
             ModelType.encoder_or_decoder, forward_step, extra_args_provider=add_hope_arguments)
    # flags: --position-embedding-type rope --hope-position-embedding-type hope ...

- `add_hope_arguments` (an `extra_args_provider`) and `megatron_lm_argv`: `hope-pretrain`'s
  HoPE flags on Megatron-LM's parser (see `add_hope_arguments` for the type's spelling there).
- `hope_gpt_builder`: Megatron-LM's `gpt_builder` signature. It runs Megatron-LM's own
  `gpt_builder` (specs, MoE, MTP, VPP stage, `pg_collection`, yaml config: every choice stays
  upstream's) and only swaps the class it instantiates for `HopeGPTModel`. Without a HoPE
  type (Megatron-LM's learned_absolute, yarn, mrope, relative, or its RoPE with
  `--rotary-percent`) it is Megatron-LM's GPTModel, unchanged. From core_v0.19.0 on, the
  ModelConfig path does the same through `model_builders` (`HopeGPTModelConfig`).
- `write_checkpoint_run_metadata`: `hope_run.json` beside a checkpoint Megatron-LM saved, as
  `hope-pretrain` writes it, so `hope-convert`, `hope-eval` and `hope-pretrain --load` read it.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from megatron_hope.megatron.model import HopeGPTModel, ModelArchitecture
from megatron_hope.megatron.no_rope import check_no_rope_pattern, parse_no_rope_freq
from megatron_hope.rope.arguments import add_position_encoding_arguments
from megatron_hope.rope.config import PositionEncodingConfig
from megatron_hope.rope.frequencies import POSITION_ENCODING_TYPES
from megatron_hope.training import checkpointing

HOPE_TYPE_FLAG = "--hope-position-embedding-type"
"""Where Megatron-LM's parser carries our type (see `megatron_lm_argv`)."""


def add_hope_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Megatron-LM `extra_args_provider`: `--hope-train-length` and `--rope-fraction` with
    `hope-pretrain`'s names and meanings, and the type as `--hope-position-embedding-type`.

    Megatron-LM's `--position-embedding-type` keeps its declaration: `pretrain()` parses
    sys.argv a second time with Megatron-LM's parser alone (`ft_integration.setup`, in-process
    restart), where `hope` would be an invalid choice. `megatron_lm_argv` turns the user's
    `--position-embedding-type hope` into `rope` (HoPE is a rotary embedding to Megatron-LM)
    plus `--hope-position-embedding-type hope`. `--rotary-base` stays Megatron-LM's.
    """
    add_position_encoding_arguments(parser, rotary_base=False, type_flag=HOPE_TYPE_FLAG,
                                    default_type=None, rotary_percent=False)
    return parser


def megatron_lm_argv(argv: list[str]) -> list[str]:
    """The user's flags (`hope-pretrain`'s `--position-embedding-type`, default hope) in the
    form Megatron-LM's parser takes; Megatron-LM's own types, and its RoPE with a
    `--rotary-percent` below 1, pass through unchanged."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--position-embedding-type", default="hope")
    parser.add_argument("--rotary-percent", type=float, default=1.0)
    known, rest = parser.parse_known_args(argv)
    kind = known.position_embedding_type
    if known.rotary_percent != 1.0:
        rest += ["--rotary-percent", str(known.rotary_percent)]
        if kind == "rope":  # Megatron-LM's RoPE over part of the head: its own model
            return [*rest, "--position-embedding-type", kind]
    if kind not in POSITION_ENCODING_TYPES:
        return [*rest, "--position-embedding-type", kind]
    megatron_kind = "none" if kind == "none" else "rope"
    return [*rest, "--position-embedding-type", megatron_kind, HOPE_TYPE_FLAG, kind]


def _kv_channels(args: argparse.Namespace) -> int:
    """The head dimension Megatron-LM derives: --kv-channels, else hidden / heads."""
    return args.kv_channels or args.hidden_size // args.num_attention_heads


def position_encoding_from_args(args: argparse.Namespace) -> PositionEncodingConfig | None:
    """Our position encoding for Megatron-LM's parsed args; None where Megatron-LM's own model
    is the right one (no `--hope-position-embedding-type`: its own types, RoPE over a
    `--rotary-percent` fraction)."""
    kind = getattr(args, "hope_position_embedding_type", None)
    if kind is None:
        if (getattr(args, "hope_train_length", None) is not None
                or getattr(args, "rope_fraction", None) is not None):
            raise ValueError(
                "--hope-train-length/--rope-fraction need a HoPE-family type: "
                f"{HOPE_TYPE_FLAG} (or, through tools/pretrain_hope_gpt.py, "
                "--position-embedding-type) one of " + ", ".join(POSITION_ENCODING_TYPES)
            )
        return None
    rotary_percent = getattr(args, "rotary_percent", 1.0)
    if kind not in POSITION_ENCODING_TYPES:
        raise ValueError(
            f"--position-embedding-type {kind!r} is not one of "
            f"{', '.join(POSITION_ENCODING_TYPES)}"
        )
    if getattr(args, "use_rope_scaling", False):
        raise ValueError(
            f"--use-rope-scaling (Llama 3.1 frequency scaling) is not defined for "
            f"--position-embedding-type {kind}; drop it"
        )
    kv_channels = _kv_channels(args)
    return PositionEncodingConfig(
        position_embedding_type=kind,
        kv_channels=kv_channels,
        rotary_base=float(args.rotary_base),
        hope_train_length=args.hope_train_length or args.seq_length,
        rope_fraction=args.rope_fraction,
        rotary_percent=rotary_percent,  # rope only: PositionEncodingConfig names the flag
    )


def _hope_model_factory(model_class, encoding: PositionEncodingConfig):
    """Stands in for `GPTModel` (or `HybridModel`) in Megatron-LM's builders: takes the keywords
    they pass and builds `model_class`, whose rotary module is decided by `encoding` alone (it
    drops the rotary keywords the builder passes)."""

    def build(*, position_embedding_type=None, rotary_percent=1.0, rotary_base=None,
              rope_scaling=False, **model_kwargs):
        return model_class(position_encoding=encoding, **model_kwargs)

    return build


@contextlib.contextmanager
def _class_swapped(module: Any, class_name: str, replacement: Any):
    """`module.class_name` is `replacement` for the duration of one model build."""
    if not hasattr(module, class_name):
        raise ValueError(
            f"{module.__name__} has no {class_name}: this Megatron-LM version is not one "
            "megatron-hope plugs into (tested: core_v0.16.1, core_v0.19.0)"
        )
    original = getattr(module, class_name)
    setattr(module, class_name, replacement)
    try:
        yield
    finally:
        setattr(module, class_name, original)


def built_as(model_class, encoding: PositionEncodingConfig, module: Any, class_name: str,
             build: Callable[[], Any]):
    """`build()`, one of Megatron-LM's builders run unchanged, with `module.class_name` (the
    class it instantiates) standing for `model_class` (`HopeGPTModel`, `HopeHybridModel`) with
    `encoding`. Checks that it built ours: a version that instantiates its model another way
    would otherwise train upstream's model, silently."""
    with _class_swapped(module, class_name, _hope_model_factory(model_class, encoding)):
        model = build()
    if not isinstance(model, model_class):
        raise ValueError(
            f"{module.__name__} built {type(model).__name__}, not {model_class.__name__}: this "
            "Megatron-LM version builds its model another way (tested: core_v0.16.1, "
            "core_v0.19.0)")
    return model


def hope_gpt_builder(args, pre_process, post_process, vp_stage=None, config=None,
                     pg_collection=None):
    """Megatron-LM's `gpt_builder`, building `HopeGPTModel` (see the module docstring)."""
    import gpt_builders  # Megatron-LM's, beside its pretrain_gpt.py

    build = functools.partial(gpt_builders.gpt_builder, args, pre_process, post_process,
                              vp_stage, config=config, pg_collection=pg_collection)
    encoding = position_encoding_from_args(args)
    if encoding is None:
        return build()
    return built_as(HopeGPTModel, encoding, gpt_builders, "GPTModel", build)


def architecture_from_args(args: argparse.Namespace,
                           encoding: PositionEncodingConfig | None = None
                           ) -> ModelArchitecture | None:
    """The `ModelArchitecture` Megatron-LM's parsed (and validated) args describe, with
    `encoding` (default: `position_encoding_from_args`; None for Megatron-LM's own types)."""
    encoding = encoding or position_encoding_from_args(args)
    if encoding is None:
        return None
    return ModelArchitecture(
        num_layers=args.num_layers,
        hidden_size=args.hidden_size,
        num_attention_heads=args.num_attention_heads,
        vocab_size=_tokenizer_vocab_size(args),
        seq_length=args.seq_length,
        ffn_hidden_size=args.ffn_hidden_size,
        num_query_groups=args.num_query_groups if args.group_query_attention else None,
        kv_channels=encoding.kv_channels,
        max_position_embeddings=args.max_position_embeddings,
        position_encoding=encoding,
        swiglu=args.swiglu,
        normalization=args.normalization,
        untie_embeddings_and_output_weights=args.untie_embeddings_and_output_weights,
        add_bias_linear=args.add_bias_linear,
        init_method_std=args.init_method_std,
        hidden_dropout=args.hidden_dropout,
        attention_dropout=args.attention_dropout,
        transformer_impl=args.transformer_impl,
        bf16=args.bf16,
        fp8_format=getattr(args, "fp8", None),
        fp8_recipe=getattr(args, "fp8_recipe", "delayed"),
        apply_rope_fusion=False,  # a kernel choice of the run, not of the model: loads set it
        no_rope_freq=_no_rope_pattern(getattr(args, "no_rope_freq", None), args.num_layers),
    )


def _tokenizer_vocab_size(args: argparse.Namespace) -> int:
    """The tokenizer's vocabulary (logits beyond it are padding): Megatron-LM's tokenizer's,
    which for NullTokenizer is not always `--vocab-size` (core_v0.16.1's has one more, its
    EOD); our build of the same flags outside Megatron-LM's loop."""
    try:
        from megatron.training import get_tokenizer

        return int(get_tokenizer().vocab_size)
    except (ImportError, AssertionError):
        from megatron_hope.data.tokenizer_args import TokenizerArgs

        flags = argparse.Namespace(**{**vars(args),
                                      "tokenizer_vocab_size": getattr(args, "vocab_size", None)})
        return TokenizerArgs.of(flags).build().vocab_size


def _no_rope_pattern(value, num_layers: int) -> tuple[int, ...] | None:
    """Megatron-LM's parsed --no-rope-freq (an int, or the list its expression gave)."""
    if isinstance(value, (list, tuple)):
        return check_no_rope_pattern(value, num_layers)
    return parse_no_rope_freq(value, num_layers)


def run_metadata_from_args(args: argparse.Namespace) -> checkpointing.RunMetadata | None:
    """`hope_run.json`'s content for a Megatron-LM run (None for Megatron-LM's own types)."""
    arch = architecture_from_args(args)
    if arch is None:
        return None
    return checkpointing.run_metadata(
        arch, args.padded_vocab_size, args.tokenizer_type,
        getattr(args, "tokenizer_model", None), _settings(args),
    )


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    settings = {key: value for key, value in vars(args).items() if not key.startswith("_")}
    settings.setdefault("trained_with", "megatron-lm pretrain()")
    # Megatron-LM's NullTokenizer --vocab-size is `tokenizer_vocab_size` to our tools.
    settings.setdefault("tokenizer_vocab_size", getattr(args, "vocab_size", None))
    return settings


def checkpoint_position_encoding(args: argparse.Namespace) -> PositionEncodingConfig:
    """The position encoding of a checkpoint's Megatron-LM `args`: ours where the plug-in (or
    `hope-pretrain`) wrote them; Megatron-LM's own full-width RoPE, or no position embedding,
    as ours (the same model: `rope` is bit-identical to megatron-core's RotaryEmbedding); an
    error naming the setting for what `HopeGPTModel` does not build. RoPE over a
    `--rotary-percent` block is Megatron-LM's own rotary module inside `HopeGPTModel`."""
    encoding = position_encoding_from_args(args)
    if encoding is not None:
        return encoding
    kind = args.position_embedding_type
    kv_channels = _kv_channels(args)
    rotary_percent = getattr(args, "rotary_percent", 1.0)
    unsupported = [
        setting for setting, present in (
            ("--use-rope-scaling", getattr(args, "use_rope_scaling", False)),
            ("--rotary-interleaved", getattr(args, "rotary_interleaved", False)),
            ("--rotary-seq-len-interpolation-factor",
             getattr(args, "rotary_seq_len_interpolation_factor", None)),
        ) if present]
    if kind == "none":
        return PositionEncodingConfig("none", kv_channels, float(args.rotary_base))
    if kind == "rope" and not unsupported:
        return PositionEncodingConfig("rope", kv_channels, float(args.rotary_base),
                                      rotary_percent=rotary_percent)
    raise ValueError(
        f"a Megatron-LM checkpoint with --position-embedding-type {kind}"
        + (f" and {', '.join(unsupported)}" if unsupported else "")
        + ": not a model megatron-hope builds (it reads Megatron-LM's RoPE, also with "
        "--rotary-percent, no position embedding, and the HoPE family)")


def run_metadata_from_checkpoint(directory: str | Path) -> checkpointing.RunMetadata | None:
    """`hope_run.json`'s content for a checkpoint without one (Megatron-LM's own loop, no
    plug-in), from the `args` Megatron-LM keeps in its common state; None where there are none.
    Raises ValueError for a model `checkpoint_position_encoding` cannot express."""
    from megatron.core import dist_checkpointing

    try:
        common = dist_checkpointing.load_common_state_dict(str(directory))
    except Exception:  # megatron-core raises several types for a missing or unreadable state
        return None
    args = common.get("args") if isinstance(common, dict) else None
    if args is None or not hasattr(args, "num_layers"):
        return None
    arch = architecture_from_args(args, checkpoint_position_encoding(args))
    metadata = checkpointing.run_metadata(
        arch, args.padded_vocab_size, args.tokenizer_type,
        getattr(args, "tokenizer_model", None), _settings(args))
    layout = {"tensor_model_parallel_size": args.tensor_model_parallel_size,
              "pipeline_model_parallel_size": args.pipeline_model_parallel_size,
              "data_parallel_size": getattr(args, "data_parallel_size", 1)}
    return metadata.at(int(common.get("iteration", 0) or 0),
                       int(getattr(args, "consumed_train_samples", 0) or 0), layout)


def write_checkpoint_run_metadata(args: argparse.Namespace, iteration: int) -> Path | None:
    """Rank 0 writes `hope_run.json` into the checkpoint Megatron-LM saved at `iteration`."""
    import torch.distributed as dist

    metadata = run_metadata_from_args(args)
    if metadata is None or args.save is None or (dist.is_initialized() and dist.get_rank()):
        return None
    directory = checkpointing.checkpoint_dir(args.save, iteration)
    directory.mkdir(parents=True, exist_ok=True)  # an async save may not have made it yet
    metadata = metadata.at(iteration, getattr(args, "consumed_train_samples", 0),
                           checkpointing.layout())
    return metadata.write(directory)


def saving_run_metadata(save_checkpoint):
    """Megatron-LM's `save_checkpoint(iteration, ...)`, followed by `hope_run.json`."""

    @functools.wraps(save_checkpoint)
    def save(iteration, *args, **kwargs):
        result = save_checkpoint(iteration, *args, **kwargs)
        from megatron.training import get_args

        write_checkpoint_run_metadata(get_args(), iteration)
        return result

    return save
