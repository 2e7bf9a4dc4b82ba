"""`hope-pretrain` flags: Megatron-LM's names and meanings, plus the HoPE rotary flags."""

from __future__ import annotations

import argparse
import dataclasses

from megatron_hope.data.tokenizer_args import add_tokenizer_arguments
from megatron_hope.megatron.model import (
    FP8_FORMATS,
    FP8_RECIPES,
    NORMALIZATIONS,
    TRANSFORMER_IMPLS,
    ModelArchitecture,
)
from megatron_hope.megatron.no_rope import parse_no_rope_freq
from megatron_hope.rope.arguments import add_position_encoding_arguments
from megatron_hope.rope.config import PositionEncodingConfig
from megatron_hope.training.config import EXIT_SIGNALS, LR_DECAY_STYLES, PretrainConfig
from megatron_hope.training.feature_checks import (
    ATTENTION_BACKENDS,
    CP_COMM_TYPES,
    RECOMPUTE_GRANULARITIES,
    RECOMPUTE_METHODS,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hope-pretrain",
        description="Pretrain a megatron-core GPT model with HoPE (or RoPE, p-RoPE, NoPE, AB1-3). "
        "Without --data-path it trains the embedded default: a small HoPE model on a sample "
        "corpus built from this machine's Python standard library.",
    )
    model = parser.add_argument_group("model")
    model.add_argument("--num-layers", type=int, default=4)
    model.add_argument("--hidden-size", type=int, default=256)
    model.add_argument("--ffn-hidden-size", type=int, default=None)
    model.add_argument("--num-attention-heads", type=int, default=4)
    model.add_argument("--kv-channels", type=int, default=None,
                       help="head dim d; default hidden-size / num-attention-heads")
    model.add_argument("--group-query-attention", action="store_true")
    model.add_argument("--num-query-groups", type=int, default=None)
    model.add_argument("--seq-length", type=int, default=256)
    model.add_argument("--max-position-embeddings", type=int, default=None)
    model.add_argument("--swiglu", action="store_true")
    model.add_argument("--normalization", choices=NORMALIZATIONS, default="LayerNorm")
    model.add_argument("--untie-embeddings-and-output-weights", action="store_true")
    model.add_argument("--disable-bias-linear", action="store_true")
    model.add_argument("--init-method-std", type=float, default=0.02)
    model.add_argument("--hidden-dropout", type=float, default=0.0)
    model.add_argument("--attention-dropout", type=float, default=0.0)
    model.add_argument("--transformer-impl", choices=TRANSFORMER_IMPLS, default="local")
    model.add_argument("--bf16", action="store_true")
    model.add_argument("--fp8-format", choices=FP8_FORMATS, default=None)
    model.add_argument("--fp8-recipe", choices=FP8_RECIPES, default="delayed")
    model.add_argument("--fp8-param-gather", action="store_true",
                       help="FP8 compute weights, all-gathered in FP8 (TE, distributed optimizer)")
    model.add_argument("--apply-rope-fusion", action="store_true")
    model.add_argument("--no-rope-freq", default=None,
                       help="layers that skip rotary (NoPE layers), as Megatron-LM's flag: N "
                       "(every N-th layer) or a 0/1 list expression such as \"([0]*3+[1])*2\"")
    model.add_argument("--attention-backend", choices=ATTENTION_BACKENDS, default="auto",
                       help="Transformer Engine's attention kernel: flash, fused (cuDNN), "
                       "unfused, or auto (TE picks); local: megatron-core's own (local spec)")

    add_position_encoding_arguments(parser)

    parallel = parser.add_argument_group("parallelism")
    parallel.add_argument("--tensor-model-parallel-size", type=int, default=1)
    parallel.add_argument("--pipeline-model-parallel-size", type=int, default=1)
    parallel.add_argument("--context-parallel-size", type=int, default=1)
    parallel.add_argument("--cp-comm-type", choices=CP_COMM_TYPES, default="p2p")
    parallel.add_argument("--num-layers-per-virtual-pipeline-stage", type=int, default=None,
                          help="interleaved 1F1B schedule")
    parallel.add_argument("--sequence-parallel", action="store_true",
                          help="shard norms/dropout over the sequence in TP (TE spec)")
    parallel.add_argument("--use-distributed-optimizer", action="store_true")
    parallel.add_argument("--overlap-grad-reduce", action="store_true",
                          help="overlap the DP gradient reduction with the backward pass")
    parallel.add_argument("--overlap-param-gather", action="store_true",
                          help="overlap the distributed optimizer's all-gather with the forward")
    parallel.add_argument("--ddp-bucket-size", type=int, default=None,
                          help="elements per DP communication bucket")
    parallel.add_argument("--distributed-timeout-minutes", type=int, default=10)

    training = parser.add_argument_group("training")
    training.add_argument("--micro-batch-size", type=int, default=8)
    training.add_argument("--global-batch-size", type=int, default=None)
    training.add_argument("--train-iters", type=int, default=300)
    training.add_argument("--train-samples", type=int, default=None,
                          help="instead of --train-iters: samples to train on")
    training.add_argument("--lr", type=float, default=1e-3)
    training.add_argument("--min-lr", type=float, default=1e-4)
    training.add_argument("--lr-warmup-iters", type=int, default=20)
    training.add_argument("--lr-decay-style", choices=LR_DECAY_STYLES, default="cosine")
    training.add_argument("--lr-decay-iters", type=int, default=None)
    training.add_argument("--weight-decay", type=float, default=0.01)
    training.add_argument("--adam-beta1", type=float, default=0.9)
    training.add_argument("--adam-beta2", type=float, default=0.999)
    training.add_argument("--adam-eps", type=float, default=1e-8)
    training.add_argument("--clip-grad", type=float, default=1.0)
    training.add_argument("--seed", type=int, default=1234)
    training.add_argument("--recompute-granularity", choices=RECOMPUTE_GRANULARITIES,
                          default=None)
    training.add_argument("--recompute-method", choices=RECOMPUTE_METHODS, default=None)
    training.add_argument("--recompute-num-layers", type=int, default=None)
    training.add_argument("--calculate-per-token-loss", action="store_true")
    training.add_argument("--exit-duration-in-mins", type=float, default=None)
    training.add_argument("--manual-gc", action="store_true",
                          help="disable automatic GC; collect at --manual-gc-interval and eval")
    training.add_argument("--manual-gc-interval", type=int, default=0)
    training.add_argument("--check-for-nan-in-loss-and-grad",
                          action=argparse.BooleanOptionalAction, default=True,
                          help="NaN/Inf loss or gradient: skip the update and count it as a nan "
                          "iteration (default, as Megatron-LM checks by default); --no-... turns "
                          "the check off")
    training.add_argument("--max-consecutive-nan-iterations", type=int, default=10,
                          help="stop the run after this many NaN/Inf iterations in a row")

    data = parser.add_argument_group("data")
    data.add_argument("--data-path", nargs="+", default=None,
                      help="PREFIX or 'W1 PREFIX1 W2 PREFIX2 ...' of Megatron .bin/.idx files")
    data.add_argument("--split", default="969,30,1")
    data.add_argument("--data-cache-path", default=None)
    data.add_argument("--num-workers", type=int, default=2,
                      help="DataLoader worker processes per rank (0: load in the training process)")
    data.add_argument("--mock-data", action="store_true",
                      help="random tokens (benchmarks); no --data-path")
    data.add_argument("--reset-position-ids", action="store_true")
    data.add_argument("--reset-attention-mask", action="store_true")
    data.add_argument("--eod-mask-loss", action="store_true")
    add_tokenizer_arguments(parser)

    ckpt = parser.add_argument_group("checkpointing")
    ckpt.add_argument("--save", default=None)
    ckpt.add_argument("--load", default=None)
    ckpt.add_argument("--save-interval", type=int, default=None)
    ckpt.add_argument("--keep-last-checkpoints", type=int, default=None, metavar="N",
                      help="ours, not Megatron-LM's: after each save keep the tracker's "
                      "checkpoint and the N-1 whole ones before it, remove older ones "
                      "(default: keep all)")
    ckpt.add_argument("--no-load-optim", action="store_true")
    ckpt.add_argument("--no-load-rng", action="store_true")
    ckpt.add_argument("--exit-interval", type=int, default=None)
    ckpt.add_argument("--exit-signal-handler", action="store_true",
                      help="on --exit-signal, save a checkpoint and stop at the next step")
    ckpt.add_argument("--exit-signal", choices=EXIT_SIGNALS, default="SIGTERM",
                      help="the signal --exit-signal-handler listens for (Slurm: SIGTERM on "
                      "preemption, or SIGUSR1 with sbatch --signal=USR1@SECONDS)")
    ckpt.add_argument("--async-save", action="store_true")
    ckpt.add_argument("--strict-load", action="store_true",
                      help="stop when the checkpoint the tracker names is incomplete, instead of "
                      "falling back to the newest complete one")

    log = parser.add_argument_group("logging and evaluation")
    log.add_argument("--eval-interval", type=int, default=100)
    log.add_argument("--eval-iters", type=int, default=10)
    log.add_argument("--log-interval", type=int, default=10)
    log.add_argument("--tensorboard-dir", default=None)
    log.add_argument("--no-progress", action="store_true", help="hide the tqdm progress bar")
    log.add_argument("--log-throughput", action="store_true",
                     help="TFLOP/s per GPU and MFU in the iteration line")
    log.add_argument("--peak-tflops", type=float, default=None,
                     help="peak TFLOP/s per GPU for MFU (default: from the device name)")
    log.add_argument("--log-memory-to-tensorboard", action="store_true")
    return parser


def config_from_args(args: argparse.Namespace) -> PretrainConfig:
    """Validated config; raises ValueError naming the flag at fault."""
    if args.num_query_groups is not None and not args.group_query_attention:
        raise ValueError("--num-query-groups needs --group-query-attention")
    if args.group_query_attention and args.num_query_groups is None:
        raise ValueError("--group-query-attention needs --num-query-groups")
    head_dim = (args.kv_channels if args.kv_channels is not None
                else args.hidden_size // max(1, args.num_attention_heads))
    encoding = PositionEncodingConfig(
        position_embedding_type=args.position_embedding_type,
        kv_channels=head_dim,
        rotary_base=args.rotary_base,
        hope_train_length=args.hope_train_length or args.seq_length,
        rope_fraction=args.rope_fraction,
        rotary_percent=args.rotary_percent,
    )
    arch = _from_args(
        ModelArchitecture, args, position_encoding=encoding,
        no_rope_freq=parse_no_rope_freq(args.no_rope_freq, args.num_layers),
        add_bias_linear=not args.disable_bias_linear,
    )
    return _from_args(
        PretrainConfig, args, arch=arch, progress=not args.no_progress,
        data_path=tuple(args.data_path) if args.data_path else None,
    )


def _from_args(cls, args: argparse.Namespace, **explicit):
    """Build a config dataclass from the flags whose dest equals a field name (all of them, by
    construction: flags follow the field names), plus the values derived in `explicit`."""
    values = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(cls)
        if hasattr(args, field.name)
    }
    values.update(explicit)
    return cls(**values)


def parse_config(argv: list[str] | None = None) -> PretrainConfig:
    """Parse flags into a config; bad values exit with status 2 and the message, like argparse."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return config_from_args(args)
    except ValueError as error:
        parser.error(str(error))
        raise  # unreachable: parser.error exits
