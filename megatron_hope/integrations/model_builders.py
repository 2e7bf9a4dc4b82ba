"""HoPE on Megatron-LM's ModelConfig/ModelBuilder path: how core_v0.19.0's `pretrain_gpt.py` and
`pretrain_hybrid.py` build their models, and the only path Megatron-LM main keeps.

    from megatron_hope.integrations.model_builders import gpt_model_config_from_args
    model_cfg = gpt_model_config_from_args(args)  # HopeGPTModelConfig for a HoPE type
    pretrain(pretrain_cfg_container_from_args(args, model_cfg), datasets_provider,
             ModelType.encoder_or_decoder, forward_step)

- `HopeGPTModelConfig`, `HopeHybridModelConfig`: upstream's `GPTModelConfig` and
  `HybridModelConfig` plus our `position_encoding`; their `builder` names ours. They serialize
  like upstream's (`as_dict`/`from_dict`, the container's `to_dict`/`to_yaml`), the encoding as
  a nested dataclass.
- `HopeGPTModelBuilder`, `HopeHybridModelBuilder`: upstream's builders. Their `build_model` runs
  upstream's (layer spec, MTP, vocab padding, pre/post-process, VPP stage, pg_collection) with
  `HopeGPTModel` / `HopeHybridModel` in place of the class it instantiates, so
  `build_distributed_models` (DDP/FSDP wrapping, pre/post-wrap hooks) is upstream's too.
- `gpt_model_config_from_args`, `hybrid_model_config_from_args`: the model config those
  scripts build from Megatron-LM's parsed args, ours for a HoPE type (the args of
  `add_hope_arguments`), upstream's unchanged for Megatron-LM's own position types.

Importable only where Megatron-LM's `megatron.training.models` is (core_v0.19.0 and newer; the
megatron-core 0.19.x wheel ships a copy of `megatron.training`, a checkout first on sys.path wins).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import ClassVar

try:
    from megatron.training.argument_utils import gpt_config_from_args, hybrid_config_from_args
    from megatron.training.models import gpt as upstream_gpt
    from megatron.training.models import hybrid as upstream_hybrid
except ImportError as error:  # no megatron.training, or core_v0.16.1's (no models, no functions)
    if not (error.name or "").startswith("megatron.training"):
        raise
    raise ImportError(
        "megatron_hope.integrations.model_builders needs Megatron-LM's megatron.training.models "
        "(tag core_v0.19.0 or newer on sys.path; the megatron-core 0.19 wheel ships a copy); "
        "with core_v0.16.1 build through "
        "partial(model_provider, hope_gpt_builder) from megatron_hope.integrations.megatron_lm"
    ) from error

from megatron_hope.integrations.megatron_lm import built_as, position_encoding_from_args
from megatron_hope.megatron.hybrid import hope_hybrid_model_class
from megatron_hope.megatron.model import HopeGPTModel
from megatron_hope.rope.config import PositionEncodingConfig


@dataclass(kw_only=True)
class HopeGPTModelConfig(upstream_gpt.GPTModelConfig):
    """Megatron-LM's `GPTModelConfig`, built by `HopeGPTModelBuilder` into `HopeGPTModel`."""

    builder: ClassVar[str] = "megatron_hope.integrations.model_builders.HopeGPTModelBuilder"
    position_encoding: PositionEncodingConfig | None = None
    """Our position encoding (`position_encoding_from_args` gives it for Megatron-LM's args);
    the builder needs it. It alone decides the rotary module: upstream's
    `position_embedding_type`, `rotary_percent` and `rotary_base` are not read."""


@dataclass(kw_only=True)
class HopeHybridModelConfig(upstream_hybrid.HybridModelConfig):
    """Megatron-LM's `HybridModelConfig`, built by `HopeHybridModelBuilder` into
    `HopeHybridModel` (needs Transformer Engine: the hybrid stack builds TE norms)."""

    builder: ClassVar[str] = "megatron_hope.integrations.model_builders.HopeHybridModelBuilder"
    position_encoding: PositionEncodingConfig | None = None
    """Our position encoding (`position_encoding_from_args` gives it for Megatron-LM's args);
    the builder needs it. It alone decides the rotary module: upstream's
    `position_embedding_type`, `rotary_percent` and `rotary_base` are not read."""


def checked_position_encoding(config) -> PositionEncodingConfig:
    """`config.position_encoding`, present and spanning the model's head dimension."""
    encoding = config.position_encoding
    name = type(config).__name__
    if encoding is None:
        raise ValueError(
            f"{name}.position_encoding is None: set it (position_encoding_from_args(args) for "
            "Megatron-LM's args), or use Megatron-LM's own model config for its position types")
    head_dim = config.transformer.kv_channels
    if encoding.kv_channels != head_dim:
        raise ValueError(
            f"{name}.position_encoding.kv_channels ({encoding.kv_channels}) is not the model's "
            f"head dimension (transformer.kv_channels {head_dim}); build the encoding with "
            f"kv_channels={head_dim}")
    return encoding


class HopeGPTModelBuilder(upstream_gpt.GPTModelBuilder):
    """Megatron-LM's `GPTModelBuilder`, instantiating `HopeGPTModel`."""

    def build_model(self, pg_collection, pre_process=None, post_process=None, vp_stage=None):
        encoding = checked_position_encoding(self._model_config)
        build = partial(super().build_model, pg_collection, pre_process, post_process, vp_stage)
        return built_as(HopeGPTModel, encoding, upstream_gpt, "GPTModel", build)


class HopeHybridModelBuilder(upstream_hybrid.HybridModelBuilder):
    """Megatron-LM's `HybridModelBuilder`, instantiating `HopeHybridModel`."""

    def build_model(self, pg_collection, pre_process=None, post_process=None, vp_stage=None):
        encoding = checked_position_encoding(self._model_config)
        build = partial(super().build_model, pg_collection, pre_process, post_process, vp_stage)
        return built_as(hope_hybrid_model_class(), encoding, upstream_hybrid, "HybridModel",
                        build)


def _model_config_from_args(args, upstream_from_args, hope_config_cls, modelopt_config_cls):
    encoding = position_encoding_from_args(args)
    if encoding is None:  # Megatron-LM's own position type: its own config, unchanged
        return upstream_from_args(args, **({"model_config_cls": modelopt_config_cls}
                                           if modelopt_config_cls else {}))
    if modelopt_config_cls is not None:
        raise ValueError(
            f"ModelOpt is enabled: its builder ({modelopt_config_cls.builder}) builds its own "
            f"model, without --position-embedding-type {encoding.position_embedding_type}; "
            "run ModelOpt through Megatron-LM's own script with its own position types")
    config = upstream_from_args(args, model_config_cls=hope_config_cls)
    config.position_encoding = encoding
    return config


def gpt_model_config_from_args(args, modelopt_config_cls: type | None = None):
    """The model config core_v0.19.0's `pretrain_gpt.py` builds from `args`
    (`gpt_config_from_args`), as `HopeGPTModelConfig` with its encoding where `args` name a HoPE
    type; upstream's `GPTModelConfig` (or `modelopt_config_cls`, where ModelOpt is enabled)
    otherwise."""
    return _model_config_from_args(args, gpt_config_from_args, HopeGPTModelConfig,
                                   modelopt_config_cls)


def hybrid_model_config_from_args(args, modelopt_config_cls: type | None = None):
    """`pretrain_hybrid.py`'s model config (`hybrid_config_from_args`), as
    `HopeHybridModelConfig` where `args` name a HoPE type (see `gpt_model_config_from_args`)."""
    return _model_config_from_args(args, hybrid_config_from_args, HopeHybridModelConfig,
                                   modelopt_config_cls)
