"""Training-step speed of the same model with HoPE, RoPE and NoPE (figures, not assertions).

    python benchmarks/bench_position_encodings.py                       # CPU, small model
    python benchmarks/bench_position_encodings.py --hidden-size 1024 --num-layers 8 \
        --seq-length 2048 --transformer-impl transformer_engine --bf16    # one GPU

Each type runs the real training step (megatron-core schedule, DDP, optimizer, clipping) on
synthetic token batches. Types are interleaved round by round so that machine noise hits them
alike; the median step time per type is reported with tokens/s and the HoPE/RoPE ratio (goal:
<= 1.00, since HoPE only changes the values of the rotary frequencies).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time

import torch

DEFAULT_TYPES = ("hope", "rope", "none")


@dataclasses.dataclass
class SyntheticTokenizer:
    """Just what the trainer reads from a tokenizer."""

    vocab_size: int


def synthetic_batches(vocab_size: int, micro_batch_size: int, seq_length: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    while True:
        tokens = torch.randint(
            0, vocab_size, (micro_batch_size, seq_length + 1), generator=generator
        )
        yield {
            "tokens": tokens[:, :-1].contiguous(),
            "labels": tokens[:, 1:].contiguous(),
            "loss_mask": torch.ones(micro_batch_size, seq_length),
            "position_ids": torch.arange(seq_length).expand(micro_batch_size, seq_length),
        }


def make_trainer(args, kind: str):
    from megatron_hope.megatron.model import ModelArchitecture
    from megatron_hope.rope.config import PositionEncodingConfig
    from megatron_hope.training.config import PretrainConfig
    from megatron_hope.training.distributed import set_random_seed
    from megatron_hope.training.trainer import Trainer

    head_dim = args.hidden_size // args.num_attention_heads
    arch = ModelArchitecture(
        num_layers=args.num_layers,
        hidden_size=args.hidden_size,
        num_attention_heads=args.num_attention_heads,
        seq_length=args.seq_length,
        vocab_size=args.vocab_size,
        transformer_impl=args.transformer_impl,
        bf16=args.bf16,
        apply_rope_fusion=args.apply_rope_fusion,
        position_encoding=PositionEncodingConfig(kind, head_dim, args.rotary_base, args.seq_length),
    )
    config = PretrainConfig(
        arch=arch, micro_batch_size=args.micro_batch_size, train_iters=args.steps, progress=False
    )
    set_random_seed(args.seed)
    return Trainer(config, SyntheticTokenizer(args.vocab_size))


def time_steps(trainer, batches, steps: int) -> float:
    """Mean seconds per training step."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(batches)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--types", nargs="+", default=list(DEFAULT_TYPES))
    parser.add_argument("--num-layers", type=int, default=4)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--num-attention-heads", type=int, default=4)
    parser.add_argument("--seq-length", type=int, default=256)
    parser.add_argument("--micro-batch-size", type=int, default=8)
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--rotary-base", type=float, default=10000.0)
    parser.add_argument("--transformer-impl", default="local")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--apply-rope-fusion", action="store_true")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args(argv)

    from megatron_hope.training.distributed import initialize_distributed, shutdown_distributed

    initialize_distributed()
    try:
        trainers = {kind: make_trainer(args, kind) for kind in args.types}
        batches = {
            kind: synthetic_batches(
                args.vocab_size, args.micro_batch_size, args.seq_length, args.seed
            )
            for kind in args.types
        }
        for kind in args.types:
            time_steps(trainers[kind], batches[kind], args.warmup)
        samples: dict[str, list[float]] = {kind: [] for kind in args.types}
        for _ in range(args.rounds):
            for kind in args.types:
                samples[kind].append(time_steps(trainers[kind], batches[kind], args.steps))
    finally:
        shutdown_distributed(destroy_process_group=True)

    tokens = args.micro_batch_size * args.seq_length
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(
        f"device: {device}; model: {args.num_layers} layers, hidden {args.hidden_size}, "
        f"seq {args.seq_length}, micro-batch {args.micro_batch_size}, "
        f"{args.rounds} rounds x {args.steps} steps"
    )
    print(f"{'type':<8} {'ms/step (median)':>18} {'min':>8} {'max':>8} {'tokens/s':>10}")
    medians = {}
    for kind in args.types:
        median = statistics.median(samples[kind])
        medians[kind] = median
        print(
            f"{kind:<8} {1000 * median:>18.1f} {1000 * min(samples[kind]):>8.1f} "
            f"{1000 * max(samples[kind]):>8.1f} {tokens / median:>10.0f}"
        )
    if "hope" in medians and "rope" in medians:
        print(f"HoPE/RoPE step-time ratio: {medians['hope'] / medians['rope']:.3f} (goal <= 1.00)")
    if "none" in medians and "rope" in medians:
        print(f"NoPE/RoPE step-time ratio: {medians['none'] / medians['rope']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
