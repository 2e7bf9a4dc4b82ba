"""Build megatron-core GPT models whose rotary embedding is HoPE (or RoPE, p-RoPE, NoPE, AB1-3).

The transformer layers come from megatron-core's own specs (local on CPU, Transformer Engine on
GPU); the position encoding only changes the model's rotary module, so any Megatron pipeline that
builds layers from specs runs HoPE with no other change.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from megatron.core.models.gpt import GPTModel
from megatron.core.models.gpt.gpt_layer_specs import (
    get_gpt_layer_local_spec,
    get_gpt_layer_with_transformer_engine_spec,
)
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_config import TransformerConfig

from megatron_hope.flag_checks import check_range
from megatron_hope.megatron.no_rope import check_no_rope_pattern
from megatron_hope.megatron.rotary import HopeRotaryEmbedding
from megatron_hope.rope.config import PositionEncodingConfig

TRANSFORMER_IMPLS = ("local", "transformer_engine")
NORMALIZATIONS = ("LayerNorm", "RMSNorm")
FP8_FORMATS = ("e4m3", "hybrid")
FP8_RECIPES = ("delayed", "tensorwise", "mxfp8", "blockwise")


def transformer_engine_available() -> bool:
    """Whether Transformer Engine can be imported (GPU images only; never installed in CI)."""
    return importlib.util.find_spec("transformer_engine") is not None


@dataclass(frozen=True)
class ModelArchitecture:
    """Shape and numerics of a GPT model; names follow Megatron-LM's flags."""

    num_layers: int = 4
    """--num-layers"""
    hidden_size: int = 256
    """--hidden-size"""
    num_attention_heads: int = 4
    """--num-attention-heads"""
    vocab_size: int = 4096
    """Tokenizer vocabulary, padded with `padded_vocab_size` before use."""
    seq_length: int = 256
    """--seq-length: the training length."""
    ffn_hidden_size: int | None = None
    """--ffn-hidden-size; default 4 x hidden, or with --swiglu Megatron-LM's 8/3 x hidden rounded
    down to a multiple of 64 (`megatron_lm_swiglu_ffn_size`)."""
    num_query_groups: int | None = None
    """--num-query-groups with --group-query-attention; None means multi-head attention."""
    kv_channels: int | None = None
    """--kv-channels, the head dim d; default hidden_size / num_attention_heads."""
    max_position_embeddings: int | None = None
    """--max-position-embeddings; default seq_length."""
    position_encoding: PositionEncodingConfig = field(default_factory=PositionEncodingConfig)
    """--position-embedding-type, --rotary-base, --hope-train-length, --rope-fraction."""
    swiglu: bool = False
    """--swiglu: gated SiLU MLP as in Llama."""
    normalization: str = "LayerNorm"
    """--normalization {LayerNorm, RMSNorm}"""
    untie_embeddings_and_output_weights: bool = False
    """--untie-embeddings-and-output-weights"""
    add_bias_linear: bool = True
    """False with --disable-bias-linear."""
    init_method_std: float = 0.02
    """--init-method-std"""
    hidden_dropout: float = 0.0
    """--hidden-dropout (the HoPE paper trains with 0)."""
    attention_dropout: float = 0.0
    """--attention-dropout"""
    transformer_impl: str = "local"
    """--transformer-impl {local, transformer_engine}"""
    bf16: bool = False
    """--bf16"""
    fp8_format: str | None = None
    """--fp8-format {e4m3, hybrid}; needs Transformer Engine."""
    fp8_recipe: str = "delayed"
    """--fp8-recipe {delayed, tensorwise, mxfp8, blockwise} (Megatron-LM's default: delayed);
    which ones run depends on the installed Transformer Engine and the GPU generation."""
    apply_rope_fusion: bool = False
    """--apply-rope-fusion: TE's fused RoPE kernel (exact for HoPE: zero-frequency pairs)."""
    no_rope_freq: tuple[int, ...] | None = None
    """--no-rope-freq, expanded to one entry per layer (1: the layer skips rotary); see
    `megatron.no_rope.parse_no_rope_freq`."""

    def __post_init__(self) -> None:
        positive = ("num_layers", "hidden_size", "num_attention_heads", "vocab_size", "seq_length")
        for name in positive:
            value = getattr(self, name)
            if value <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {value}")
        # Given explicitly, these must be positive too (None: derived from the sizes above).
        for name in ("ffn_hidden_size", "num_query_groups", "kv_channels",
                     "max_position_embeddings"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {value}")
        check_range("init_method_std", self.init_method_std, 0.0)
        for name in ("hidden_dropout", "attention_dropout"):
            check_range(name, getattr(self, name), 0.0, 1.0, high_included=True)
        if self.hidden_size % self.num_attention_heads and self.kv_channels is None:
            raise ValueError(
                f"--hidden-size ({self.hidden_size}) is not divisible by --num-attention-heads "
                f"({self.num_attention_heads}); change one or pass --kv-channels"
            )
        groups = self.query_groups
        if self.num_attention_heads % groups:
            raise ValueError(
                f"--num-attention-heads ({self.num_attention_heads}) must be divisible by "
                f"--num-query-groups ({groups})"
            )
        if self.position_encoding.kv_channels != self.head_dim:
            raise ValueError(
                f"position encoding kv_channels ({self.position_encoding.kv_channels}) differs "
                f"from the model's head dim ({self.head_dim}); build both from the same flags"
            )
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(
                f"--normalization {self.normalization!r} is not one of {', '.join(NORMALIZATIONS)}"
            )
        if self.transformer_impl not in TRANSFORMER_IMPLS:
            raise ValueError(
                f"--transformer-impl {self.transformer_impl!r} is not one of "
                f"{', '.join(TRANSFORMER_IMPLS)}"
            )
        if self.fp8_recipe not in FP8_RECIPES:
            raise ValueError(
                f"--fp8-recipe {self.fp8_recipe!r} is not one of {', '.join(FP8_RECIPES)}"
            )
        if self.fp8_format is not None:
            if self.fp8_format not in FP8_FORMATS:
                raise ValueError(
                    f"--fp8-format {self.fp8_format!r} is not one of {', '.join(FP8_FORMATS)}"
                )
            if self.transformer_impl != "transformer_engine" or not transformer_engine_available():
                raise ValueError(
                    f"--fp8-format {self.fp8_format} needs Transformer Engine: run in the GPU "
                    "image (see Dockerfile) with --transformer-impl transformer_engine, or drop "
                    "--fp8-format"
                )
        if self.transformer_impl == "transformer_engine" and not transformer_engine_available():
            raise ValueError(
                "--transformer-impl transformer_engine needs Transformer Engine, which is not "
                "importable here; use --transformer-impl local (CPU) or the GPU image"
            )
        if self.apply_rope_fusion and self.transformer_impl != "transformer_engine":
            raise ValueError(
                "--apply-rope-fusion uses Transformer Engine's fused RoPE kernel; add "
                "--transformer-impl transformer_engine or drop --apply-rope-fusion"
            )
        if self.no_rope_freq is not None:
            # JSON metadata gives back a list: stored as a checked tuple.
            object.__setattr__(self, "no_rope_freq", check_no_rope_pattern(
                self.no_rope_freq, self.num_layers))
        if self.ffn_size < 1:
            raise ValueError(
                f"--swiglu at --hidden-size {self.hidden_size} gives Megatron-LM's default FFN "
                f"size {self.ffn_size} (8/3 x hidden rounded down to 64); pass --ffn-hidden-size"
            )
        if self.max_positions < self.seq_length:
            raise ValueError(
                f"--max-position-embeddings ({self.max_positions}) is below --seq-length "
                f"({self.seq_length}); raise it"
            )

    def weight_shape_settings(self) -> dict[str, object]:
        """The settings that fix the shapes of the weights, resolved (defaults applied): two
        architectures whose settings differ here cannot load each other's checkpoints."""
        return {
            "num_layers": self.num_layers, "hidden_size": self.hidden_size,
            "num_attention_heads": self.num_attention_heads,
            "num_query_groups": self.query_groups, "kv_channels": self.head_dim,
            "ffn_hidden_size": self.ffn_size, "swiglu": self.swiglu,
            "normalization": self.normalization, "add_bias_linear": self.add_bias_linear,
            "untie_embeddings_and_output_weights": self.untie_embeddings_and_output_weights,
        }

    @property
    def head_dim(self) -> int:
        return self.kv_channels or self.hidden_size // self.num_attention_heads

    @property
    def query_groups(self) -> int:
        return self.num_query_groups or self.num_attention_heads

    @property
    def max_positions(self) -> int:
        return self.max_position_embeddings or self.seq_length

    @property
    def ffn_size(self) -> int:
        if self.ffn_hidden_size is not None:
            return self.ffn_hidden_size
        if self.swiglu:
            return megatron_lm_swiglu_ffn_size(self.hidden_size)
        return 4 * self.hidden_size


def megatron_lm_swiglu_ffn_size(hidden_size: int) -> int:
    """Megatron-LM's `validate_args` default for --swiglu: two fc1 projections of 8/3 x hidden
    keep the MLP's parameters near those of 4 x hidden; rounded DOWN to a multiple of 64 (its
    exact expression, so the same flags build the same model in both loops)."""
    return int((4 * hidden_size * 2 / 3) / 64) * 64


def padded_vocab_size(
    vocab_size: int,
    tensor_model_parallel_size: int,
    divisible_by: int = 128,
    checkpoint_padded_size: int | None = None,
) -> int:
    """Megatron-LM's `--make-vocab-size-divisible-by` padding, per TP rank.

    When resuming, the checkpoint's padded size wins if the current TP size divides it: the
    padding depends on the TP size at save time, and the embedding must keep its saved shape for
    a checkpoint to load at another TP size.
    """
    if checkpoint_padded_size is not None and checkpoint_padded_size >= vocab_size and (
        checkpoint_padded_size % tensor_model_parallel_size == 0
    ):
        return checkpoint_padded_size
    multiple = divisible_by * tensor_model_parallel_size
    return (vocab_size + multiple - 1) // multiple * multiple


def build_transformer_config(
    arch: ModelArchitecture,
    tensor_model_parallel_size: int = 1,
    pipeline_model_parallel_size: int = 1,
    context_parallel_size: int = 1,
    use_cpu_initialization: bool | None = None,
    **overrides,
) -> TransformerConfig:
    """megatron-core's TransformerConfig for `arch` at the given parallel sizes; `overrides` are
    further TransformerConfig fields (recompute, sequence parallelism, per-token loss, ...)."""
    if use_cpu_initialization is None:
        use_cpu_initialization = not torch.cuda.is_available()
    dtype = torch.bfloat16 if arch.bf16 else torch.float32
    extra = {}
    if arch.fp8_format is not None:
        extra.update(fp8=arch.fp8_format, fp8_recipe=arch.fp8_recipe)
    if arch.swiglu:
        extra.update(gated_linear_unit=True, activation_func=F.silu)
    if arch.no_rope_freq is not None and any(arch.no_rope_freq):
        extra.update(no_rope_freq=list(arch.no_rope_freq))
    return TransformerConfig(
        num_layers=arch.num_layers,
        hidden_size=arch.hidden_size,
        num_attention_heads=arch.num_attention_heads,
        num_query_groups=arch.query_groups,
        kv_channels=arch.head_dim,
        ffn_hidden_size=arch.ffn_size,
        tensor_model_parallel_size=tensor_model_parallel_size,
        pipeline_model_parallel_size=pipeline_model_parallel_size,
        context_parallel_size=context_parallel_size,
        normalization=arch.normalization,
        add_bias_linear=arch.add_bias_linear,
        init_method_std=arch.init_method_std,
        hidden_dropout=arch.hidden_dropout,
        attention_dropout=arch.attention_dropout,
        bf16=arch.bf16,
        params_dtype=dtype,
        pipeline_dtype=dtype,
        apply_rope_fusion=arch.apply_rope_fusion,
        use_cpu_initialization=use_cpu_initialization,
        # Fusions need apex/TE kernels; megatron-core's defaults leave them to the caller.
        bias_activation_fusion=arch.transformer_impl == "transformer_engine" and arch.swiglu,
        masked_softmax_fusion=arch.transformer_impl == "transformer_engine",
        persist_layer_norm=False,
        gradient_accumulation_fusion=False,
        **{**extra, **overrides},
    )


def build_layer_spec(arch: ModelArchitecture) -> ModuleSpec:
    """megatron-core's layer spec for the chosen implementation; rotary lives in the model."""
    if arch.transformer_impl == "transformer_engine":
        return get_gpt_layer_with_transformer_engine_spec()
    return get_gpt_layer_local_spec(normalization=arch.normalization)


class HopeGPTModel(GPTModel):
    """megatron-core's GPTModel with its rotary module replaced by `HopeRotaryEmbedding`.

    All GPTModel behaviour (embedding, decoder, output layer, sharded state dict, inference
    caches) is upstream's; `position_encoding` decides the rotary frequencies, or builds the model
    without rotary embedding for `none`.
    """

    def __init__(
        self,
        config: TransformerConfig,
        transformer_layer_spec: ModuleSpec,
        vocab_size: int,
        max_sequence_length: int,
        position_encoding: PositionEncodingConfig,
        seq_len_interpolation_factor: float | None = None,
        **gpt_model_kwargs,
    ) -> None:
        super().__init__(
            config=config,
            transformer_layer_spec=transformer_layer_spec,
            vocab_size=vocab_size,
            max_sequence_length=max_sequence_length,
            position_embedding_type="rope" if position_encoding.uses_rotary else "none",
            rotary_percent=1.0,
            rotary_base=position_encoding.rotary_base,
            seq_len_interpolation_factor=seq_len_interpolation_factor,
            **gpt_model_kwargs,
        )
        self.position_encoding = position_encoding
        if position_encoding.uses_rotary:
            self.rotary_pos_emb = HopeRotaryEmbedding(
                position_encoding,
                rotary_interleaved=config.rotary_interleaved,
                seq_len_interpolation_factor=seq_len_interpolation_factor,
                use_cpu_initialization=config.use_cpu_initialization,
                cp_group=self.pg_collection.cp,
            )


def build_model(
    arch: ModelArchitecture,
    config: TransformerConfig,
    pre_process: bool = True,
    post_process: bool = True,
    vocab_size: int | None = None,
    seq_len_interpolation_factor: float | None = None,
    vp_stage: int | None = None,
) -> HopeGPTModel:
    """One pipeline stage of the model (`pre_process`: has the embedding; `post_process`: has
    the output layer). `vocab_size` is the padded vocabulary (default: `arch.vocab_size`)."""
    kwargs = {}
    if vp_stage is not None:
        kwargs["vp_stage"] = vp_stage
    return HopeGPTModel(
        config=config,
        transformer_layer_spec=build_layer_spec(arch),
        vocab_size=vocab_size or arch.vocab_size,
        max_sequence_length=arch.max_positions,
        position_encoding=arch.position_encoding,
        seq_len_interpolation_factor=seq_len_interpolation_factor,
        pre_process=pre_process,
        post_process=post_process,
        share_embeddings_and_output_weights=not arch.untie_embeddings_and_output_weights,
        parallel_output=True,
        **kwargs,
    )
