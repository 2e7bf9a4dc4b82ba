"""Settings of one pretraining run, validated at construction.

Field names are Megatron-LM's argument names (`--micro-batch-size` is `micro_batch_size`), so
messages can name the flag to change.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from megatron_hope.flag_checks import check_range, flag
from megatron_hope.megatron.model import ModelArchitecture
from megatron_hope.training.feature_checks import check_features

LR_DECAY_STYLES = ("constant", "linear", "cosine", "inverse-square-root", "WSD")
EXIT_SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2")
"""What `--exit-signal` accepts: Slurm preempts with SIGTERM, `--signal=USR1@secs` warns ahead."""

DEFAULT_RUN_DIR = Path("runs") / "hope-default"
"""Where the embedded default run (no --data-path) keeps its data, checkpoints and logs."""


MAX_SEED = 2**32 - 1
"""numpy's `np.random.seed` takes nothing larger (Megatron-LM seeds numpy, torch and random)."""

NUMBER_RANGES = {
    # field: (low, high, low_included); None: unbounded; the high bound is excluded.
    "lr": (0.0, None, True),
    "weight_decay": (0.0, None, True),
    "adam_beta1": (0.0, 1.0, True),
    "adam_beta2": (0.0, 1.0, True),
    "adam_eps": (0.0, None, False),
    "clip_grad": (0.0, None, True),
}
"""Ranges of the optimizer flags, as torch's Adam checks them when it is built (after the model,
with a message that names no flag)."""


def split_weights(split: str) -> list[float]:
    """`--split 969,30,1` (or 90/5/5): the train, validation and test weights, read as
    megatron-core's `parse_and_normalize_split` reads them, which fails obscurely (a division by
    zero, an assert) on text without numbers or with more than three."""
    parts = re.findall(r"[.0-9]+", split)
    try:
        weights = [float(part) for part in parts]
    except ValueError:
        weights = []
    if not weights or len(weights) > 3 or not sum(weights) > 0 or not all(
        math.isfinite(weight) for weight in weights
    ):
        raise ValueError(
            f"--split {split!r}: expected up to three non-negative train,validation,test "
            "weights with a positive sum, such as 969,30,1"
        )
    return weights


@dataclass(frozen=True)
class ParallelLayout:
    """How `world_size` ranks split into tensor, pipeline and data parallel groups."""

    world_size: int
    tensor_model_parallel_size: int = 1
    pipeline_model_parallel_size: int = 1
    context_parallel_size: int = 1
    """Ranks that split each sequence; they share one data-parallel rank's batch."""

    def __post_init__(self) -> None:
        model_parallel = self.model_parallel_size
        if self.tensor_model_parallel_size < 1 or self.pipeline_model_parallel_size < 1:
            raise ValueError("--tensor-model-parallel-size and --pipeline-model-parallel-size "
                             "must be at least 1")
        if self.world_size % model_parallel:
            raise ValueError(
                f"world size {self.world_size} is not divisible by --tensor-model-parallel-size "
                f"({self.tensor_model_parallel_size}) x --pipeline-model-parallel-size "
                f"({self.pipeline_model_parallel_size}) x --context-parallel-size "
                f"({self.context_parallel_size}); launch a multiple of {model_parallel} "
                "processes"
            )

    @property
    def model_parallel_size(self) -> int:
        """Ranks that hold one replica of the model and its batch: TP x PP x CP."""
        return (self.tensor_model_parallel_size * self.pipeline_model_parallel_size
                * self.context_parallel_size)

    @property
    def data_parallel_size(self) -> int:
        return self.world_size // self.model_parallel_size


@dataclass(frozen=True)
class PretrainConfig:
    """Everything `hope-pretrain` needs to run; see `training.arguments` for the flags."""

    arch: ModelArchitecture = field(default_factory=ModelArchitecture)
    """Model shape, numerics and position encoding."""

    # Parallelism.
    tensor_model_parallel_size: int = 1
    pipeline_model_parallel_size: int = 1
    context_parallel_size: int = 1
    """Context parallelism needs Transformer Engine's attention (GPU only)."""
    use_distributed_optimizer: bool = False
    overlap_grad_reduce: bool = False
    """Overlap the data-parallel gradient reduction with the backward pass."""
    overlap_param_gather: bool = False
    """Overlap the distributed optimizer's parameter all-gather with the next forward pass."""
    ddp_bucket_size: int | None = None
    """Elements per data-parallel communication bucket (megatron-core's default when None)."""
    sequence_parallel: bool = False
    """Shard norms and dropout over the sequence within TP (TE spec; off at TP 1, as upstream)."""
    num_layers_per_virtual_pipeline_stage: int | None = None
    """Interleaved 1F1B: layers per virtual stage (needs --pipeline-model-parallel-size > 1)."""
    cp_comm_type: str = "p2p"
    """Context-parallel exchange: p2p, a2a, allgather or a2a+p2p (TE attention)."""
    attention_backend: str = "auto"
    """Megatron-LM's --attention-backend: flash, fused (cuDNN) or unfused pick Transformer
    Engine's kernel; auto lets TE choose; local is megatron-core's own attention (local spec)."""

    # Memory and numerics.
    recompute_granularity: str | None = None
    """full (whole layers) or selective (core attention only)."""
    recompute_method: str | None = None
    """uniform or block, with --recompute-granularity full."""
    recompute_num_layers: int | None = None
    """Layers per recompute unit (uniform) or recomputed layers per stage (block)."""
    fp8_param_gather: bool = False
    """Keep compute weights in FP8 and all-gather them in FP8 (TE, FP8, distributed optimizer)."""
    calculate_per_token_loss: bool = False
    """Average the loss over all tokens of the global batch, not per micro-batch."""

    # Batches and schedule.
    micro_batch_size: int = 8
    global_batch_size: int | None = None
    """Default: micro_batch_size x data-parallel size (one micro-batch per rank per step)."""
    train_iters: int = 300
    train_samples: int | None = None
    """Train on this many samples instead: train_iters becomes train_samples // global batch."""
    lr: float = 1e-3
    min_lr: float = 1e-4
    lr_warmup_iters: int = 20
    lr_decay_style: str = "cosine"
    lr_decay_iters: int | None = None
    """Default: train_iters."""
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    clip_grad: float = 1.0
    seed: int = 1234

    # Data.
    data_path: tuple[str, ...] | None = None
    """Megatron blend: `PREFIX` or `W1 PREFIX1 W2 PREFIX2 ...`; None runs the embedded sample."""
    split: str = "969,30,1"
    tokenizer_type: str = "HuggingFaceTokenizer"
    tokenizer_model: str | None = None
    vocab_file: str | None = None
    merge_file: str | None = None
    tokenizer_vocab_size: int | None = None
    eod_token: str | None = None
    tokenizer_hf_include_special_tokens: bool | None = None
    """The tokenizer flags, as `megatron_hope.data.tokenizer_args.TokenizerArgs` reads them."""
    data_cache_path: str | None = None
    num_workers: int = 2
    """DataLoader worker processes per rank (Megatron-LM's --num-workers)."""
    mock_data: bool = False
    """Random tokens from megatron-core's MockGPTDataset, for benchmarks (no --data-path)."""
    reset_position_ids: bool = False
    """Packed documents: position ids restart after each end-of-document token."""
    reset_attention_mask: bool = False
    """Packed documents: attention does not cross end-of-document tokens."""
    eod_mask_loss: bool = False
    """Packed documents: no loss on end-of-document tokens."""

    # Checkpoints.
    save: str | None = None
    load: str | None = None
    save_interval: int | None = None
    keep_last_checkpoints: int | None = None
    """Ours (Megatron-LM keeps all): after each save, remove whole checkpoints older than the
    tracker's N - 1 predecessors (`training.checkpoint_retention`); None keeps everything."""
    no_load_optim: bool = False
    no_load_rng: bool = False
    exit_interval: int | None = None
    exit_signal_handler: bool = False
    exit_signal: str = "SIGTERM"
    """The signal `--exit-signal-handler` saves and stops on (Megatron-LM's `--exit-signal`)."""
    exit_duration_in_mins: float | None = None
    """Save and stop once the run has lasted this long (checked after every step)."""
    async_save: bool = False
    """Write checkpoints in the background (megatron-core's async dist_checkpointing)."""
    distributed_timeout_minutes: int = 10
    """Timeout of torch.distributed collectives, e.g. the barrier while rank 0 builds indexes."""
    manual_gc: bool = False
    """Disable Python's automatic GC; collect at --manual-gc-interval steps and around eval."""
    manual_gc_interval: int = 0
    strict_load: bool = False
    """--load stops when the checkpoint its tracker names is incomplete, instead of falling back
    to the newest complete one."""

    # Numbers that go bad (`training.numerics` has the policy).
    check_for_nan_in_loss_and_grad: bool = True
    """Megatron-LM's `--no-check-for-nan-in-loss-and-grad` turns the check (and the skip) off."""
    max_consecutive_nan_iterations: int = 10
    """Stop the run after this many NaN/Inf iterations in a row."""

    # Evaluation and logging.
    eval_interval: int = 100
    eval_iters: int = 10
    log_interval: int = 10
    tensorboard_dir: str | None = None
    progress: bool = True
    """tqdm progress bar on the logging rank."""
    log_throughput: bool = False
    """TFLOP/s per GPU (Megatron-LM's FLOP count) and MFU in the iteration line."""
    peak_tflops: float | None = None
    """Peak TFLOP/s per GPU for MFU; default from the device name (training.flops table)."""
    log_memory_to_tensorboard: bool = False
    """CUDA allocator statistics (mem-*-bytes) to TensorBoard every step."""

    def __post_init__(self) -> None:
        for name in ("micro_batch_size", "log_interval", "eval_interval", "seed",
                     "max_consecutive_nan_iterations"):
            if getattr(self, name) < (0 if name == "seed" else 1):
                raise ValueError(f"{flag(name)} must be positive, got {getattr(self, name)}")
        for name in ("train_iters", "eval_iters", "lr_warmup_iters", "num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{flag(name)} must be >= 0, got {getattr(self, name)}")
        if self.exit_signal not in EXIT_SIGNALS:
            raise ValueError(
                f"--exit-signal {self.exit_signal!r} is not one of {', '.join(EXIT_SIGNALS)}")
        for name in ("global_batch_size", "lr_decay_iters", "exit_interval"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{flag(name)} must be at least 1, got {value}")
        if self.seed > MAX_SEED:
            raise ValueError(f"--seed ({self.seed}) must lie in [0, {MAX_SEED}]")
        for name, bounds in NUMBER_RANGES.items():
            check_range(name, getattr(self, name), *bounds)
        split_weights(self.split)
        if self.lr_decay_style not in LR_DECAY_STYLES:
            raise ValueError(
                f"--lr-decay-style {self.lr_decay_style!r} is not one of "
                f"{', '.join(LR_DECAY_STYLES)}"
            )
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"--min-lr ({self.min_lr}) must lie in [0, --lr ({self.lr})]")
        tp = self.tensor_model_parallel_size
        if tp < 1:
            raise ValueError(f"--tensor-model-parallel-size must be at least 1, got {tp}")
        if self.arch.num_attention_heads % tp:
            raise ValueError(
                f"--num-attention-heads ({self.arch.num_attention_heads}) is not divisible by "
                f"--tensor-model-parallel-size ({tp}); choose a TP size that divides it"
            )
        if self.arch.query_groups % tp:
            raise ValueError(
                f"--num-query-groups ({self.arch.query_groups}) is not divisible by "
                f"--tensor-model-parallel-size ({tp})"
            )
        pp = self.pipeline_model_parallel_size
        if pp < 1 or self.arch.num_layers % pp:
            raise ValueError(
                f"--num-layers ({self.arch.num_layers}) is not divisible by "
                f"--pipeline-model-parallel-size ({pp})"
            )
        if self.save_interval is not None and self.save_interval < 1:
            raise ValueError(f"--save-interval must be positive, got {self.save_interval}")
        if self.save_interval is not None and self.save is None:
            raise ValueError("--save-interval needs --save DIR to write checkpoints to")
        if self.keep_last_checkpoints is not None:
            if self.keep_last_checkpoints < 1:
                raise ValueError(
                    f"--keep-last-checkpoints must be at least 1, got "
                    f"{self.keep_last_checkpoints} (leave it out to keep every checkpoint)")
            if self.save is None:
                raise ValueError("--keep-last-checkpoints needs --save DIR, the checkpoints "
                                 "it prunes")
        check_features(self)
        for name in ("save", "load", "tensorboard_dir", "data_cache_path"):
            path = getattr(self, name)
            if path is not None and os.path.exists(path) and not os.path.isdir(path):
                raise ValueError(f"{flag(name)} {path} exists and is not a directory")
        if self.data_path is not None:
            self._validate_data()
        elif not self.mock_data:
            self._refuse_unused_tokenizer()

    def _validate_data(self) -> None:
        from megatron_hope.training.data import parse_data_path  # local: data imports megatron

        for prefix in parse_data_path(self.data_path)[0]:
            for suffix in (".bin", ".idx"):
                if not os.path.isfile(prefix + suffix):
                    raise ValueError(
                        f"--data-path: {prefix + suffix} does not exist; pass the prefix of a "
                        "Megatron .bin/.idx pair (without the suffix)"
                    )
        files_flag = {"GPT2BPETokenizer": self.vocab_file, "NullTokenizer": True}
        if files_flag.get(self.tokenizer_type, self.tokenizer_model) is None:
            raise ValueError(
                "--data-path needs the tokenizer that wrote it: --tokenizer-model (or "
                "--vocab-file/--merge-file with --tokenizer-type GPT2BPETokenizer)"
            )

    def _refuse_unused_tokenizer(self) -> None:
        """Without --data-path the embedded default trains on its own sample corpus and
        tokenizer: a tokenizer the user named would be silently replaced."""
        for name in ("tokenizer_model", "vocab_file", "merge_file"):
            value = getattr(self, name)
            if value is not None:
                raise ValueError(
                    f"{flag(name)} {value} without --data-path: the embedded default would train "
                    "on its own sample corpus and tokenizer instead; pass --data-path PREFIX "
                    "(data written with this tokenizer, e.g. by hope-preprocess) or --mock-data, "
                    f"or drop {flag(name)}")

    def layout(self, world_size: int) -> ParallelLayout:
        """The parallel layout for `world_size` ranks, checked against the batch sizes."""
        layout = ParallelLayout(world_size, self.tensor_model_parallel_size,
                                self.pipeline_model_parallel_size, self.context_parallel_size)
        per_step = self.micro_batch_size * layout.data_parallel_size
        if self.resolved_global_batch_size(layout) % per_step:
            raise ValueError(
                f"--global-batch-size ({self.global_batch_size}) is not divisible by "
                f"--micro-batch-size ({self.micro_batch_size}) x data-parallel size "
                f"({layout.data_parallel_size})"
            )
        pp, microbatches = self.pipeline_model_parallel_size, self.num_microbatches(layout)
        if self.virtual_pipeline_model_parallel_size and microbatches < pp:
            raise ValueError(
                f"--num-layers-per-virtual-pipeline-stage: the interleaved schedule needs at "
                f"least --pipeline-model-parallel-size ({pp}) micro-batches per step, got "
                f"{microbatches}; raise --global-batch-size")
        return layout

    @property
    def virtual_pipeline_model_parallel_size(self) -> int | None:
        """Model chunks per pipeline rank (Megatron-LM's derivation; None: no interleaving)."""
        per_virtual_stage = self.num_layers_per_virtual_pipeline_stage
        if per_virtual_stage is None:
            return None
        chunks = self.arch.num_layers // self.pipeline_model_parallel_size // per_virtual_stage
        return chunks if chunks > 1 else None

    def resolved_global_batch_size(self, layout: ParallelLayout) -> int:
        return self.global_batch_size or self.micro_batch_size * layout.data_parallel_size

    def num_microbatches(self, layout: ParallelLayout) -> int:
        return self.resolved_global_batch_size(layout) // (
            self.micro_batch_size * layout.data_parallel_size
        )

    def replace(self, **changes) -> PretrainConfig:
        return dataclasses.replace(self, **changes)
