"""Training throughput and MFU of a ~1B-parameter HoPE model and its RoPE twin (figures only).

    # One GPU (H200: about 2-3 minutes for both models, start-up included)
    python benchmarks/bench_gpu_throughput.py --json gpu_throughput.json
    python benchmarks/bench_gpu_throughput.py --transformer-impl transformer_engine  # TE images

    # CPU smoke run of the same code path: 2 layers, hidden 64, seq 128, 3 iterations (< 90 s)
    python benchmarks/bench_gpu_throughput.py --dry-run

Both models go through the product: flags -> `parse_config` -> `run(config)` in this process
(megatron-core schedule, DDP, optimizer, clipping, data loader), on the offline sample corpus
(`prepare_sample_data`, 2 MB of stdlib text: a few dozen 4096-token samples are all 10
iterations need). Shape: Llama-style (swiglu, RMSNorm, no linear biases), hidden 2048, 20
layers, 16 heads (d = 128), sequence 4096, micro-batch 1, bf16; the HoPE model differs from
the RoPE one only in `--position-embedding-type`.

Per model it prints ms per iteration and tokens/s (mean over the iterations after the first,
as `PretrainResult.tokens_per_second`), TFLOP/s per GPU by Megatron-LM's formula
(`megatron_hope.training.flops`), MFU against the device's dense BF16 peak (`--peak-tflops`, or
the table in `flops.py` looked up by `torch.cuda.get_device_name()`), and the parameter count.
HoPE and RoPE have the same FLOPs by that count, so the final line, the HoPE/RoPE ratio of ms
per iteration, is pure overhead (goal: 1.00 or below):

    HOPE/ROPE ms ratio: X.XXX
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

# On CPU every megatron-core import warns that apex/TE are missing: expected, and noise here.
warnings.filterwarnings("ignore", message=r".*(Apex is|Apex are|Engine and Apex are) not installed")

import torch  # noqa: E402

POSITION_TYPES = ("hope", "rope")
FULL_SHAPE = {"num_layers": 20, "hidden_size": 2048, "num_attention_heads": 16,
              "seq_length": 4096, "train_iters": 10}
DRY_RUN_SHAPE = {"num_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
                 "seq_length": 128, "train_iters": 3}
SAMPLE_MAX_BYTES = 2_000_000

_started = time.perf_counter()


def progress(message: str) -> None:
    print(f"[{time.perf_counter() - _started:6.1f} s] {message}", flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="tiny model on CPU (or the GPU if there is one), same code path")
    parser.add_argument("--transformer-impl", choices=("local", "transformer_engine"),
                        default="local")
    parser.add_argument("--num-layers", type=int, default=None)
    parser.add_argument("--hidden-size", type=int, default=None)
    parser.add_argument("--num-attention-heads", type=int, default=None)
    parser.add_argument("--seq-length", type=int, default=None)
    parser.add_argument("--train-iters", type=int, default=None,
                        help="iterations per model; the first is not timed")
    parser.add_argument("--micro-batch-size", type=int, default=1)
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="dense BF16 peak per GPU; default: looked up by device name")
    parser.add_argument("--data-dir", type=Path,
                        default=Path(tempfile.gettempdir()) / "hope-bench-gpu-throughput",
                        help="where the sample corpus is built (reused on later runs)")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="DataLoader workers (default 2 on GPU, 0 in --dry-run)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return parser


def pretrain_flags(args: argparse.Namespace, shape: dict, position_type: str, data) -> list[str]:
    """`hope-pretrain` flags of one model; only the position encoding differs between them."""
    flags = [
        "--position-embedding-type", position_type,
        "--transformer-impl", args.transformer_impl,
        "--swiglu", "--normalization", "RMSNorm", "--disable-bias-linear",
        "--num-layers", str(shape["num_layers"]),
        "--hidden-size", str(shape["hidden_size"]),
        "--num-attention-heads", str(shape["num_attention_heads"]),
        "--seq-length", str(shape["seq_length"]),
        "--micro-batch-size", str(args.micro_batch_size),
        "--train-iters", str(shape["train_iters"]),
        "--lr-warmup-iters", "0",
        "--eval-iters", "0", "--eval-interval", str(shape["train_iters"]),
        "--log-interval", "1",
        "--split", "1,0,0",  # no validation/test documents needed (eval-iters 0)
        "--data-path", str(data.data_prefix),
        "--tokenizer-type", "HuggingFaceTokenizer",
        "--tokenizer-model", str(data.tokenizer_path),
        "--num-workers", str(args.num_workers),
        "--no-progress",
    ]
    if torch.cuda.is_available():
        # bf16 is what the MFU peak refers to; the CPU dry run stays in fp32 (CPU bf16 GEMMs
        # are slow and say nothing about the GPU).
        flags.append("--bf16")
    return flags


def measure(args: argparse.Namespace, shape: dict, position_type: str, data) -> dict:
    """Train one model; its timing, FLOPs and size."""
    from megatron_hope.data.tokenizer import build_tokenizer
    from megatron_hope.megatron.model import padded_vocab_size
    from megatron_hope.training.arguments import parse_config
    from megatron_hope.training.cli import run
    from megatron_hope.training.flops import (
        num_floating_point_operations,
        num_parameters,
        tflops_per_gpu,
    )

    config = parse_config(pretrain_flags(args, shape, position_type, data))
    tokenizer = build_tokenizer(config.tokenizer_type, config.tokenizer_model)
    arch = dataclasses.replace(config.arch, vocab_size=tokenizer.vocab_size)
    vocab = padded_vocab_size(tokenizer.vocab_size, config.tensor_model_parallel_size)
    parameters = num_parameters(arch, vocab)
    progress(f"{position_type}: {_count(parameters)} parameters, training "
             f"{shape['train_iters']} iterations")
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    config, result = run(config)
    world_size = 1  # one process: run() makes a one-rank group
    global_batch = config.micro_batch_size * world_size
    tokens_per_iteration = global_batch * arch.seq_length
    seconds = tokens_per_iteration / result.tokens_per_second
    flops = num_floating_point_operations(arch, global_batch, vocab)
    figures = {
        "parameters": parameters,
        "ms_per_iteration": 1000.0 * seconds,
        "tokens_per_second": result.tokens_per_second,
        "tflops_per_gpu": tflops_per_gpu(flops, seconds, world_size),
        "flops_per_iteration": flops,
        "final_loss": result.train_losses[max(result.train_losses)],
        "iterations": result.final_iteration,
    }
    if torch.cuda.is_available():
        figures["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    progress(f"{position_type}: {figures['ms_per_iteration']:.1f} ms/iteration, "
             f"loss {figures['final_loss']:.3f}")
    del result
    gc.collect()  # the model and optimizer of this run must not share the GPU with the next
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return figures


def _count(number: float) -> str:
    """1.234B / 56.7M / 890K: the dry run's model is a thousandth of a billion."""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if number >= scale:
            return f"{number / scale:.3f}{suffix}"
    return f"{number:.0f}"


def table(models: dict[str, dict], peak: float | None) -> str:
    from megatron_hope.training.flops import mfu

    header = (f"{'model':<6} {'params':>9} {'ms/iter':>10} {'tokens/s':>11} "
              f"{'TFLOP/s/GPU':>12} {'MFU':>7}")
    lines = [header, "-" * len(header)]
    for name, figures in models.items():
        share = f"{100 * mfu(figures['tflops_per_gpu'], peak):.1f}%" if peak else "n/a"
        lines.append(
            f"{name.upper():<6} {_count(figures['parameters']):>9} "
            f"{figures['ms_per_iteration']:>10.2f} {figures['tokens_per_second']:>11.0f} "
            f"{figures['tflops_per_gpu']:>12.4g} {share:>7}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from megatron_hope.data.sample_data import prepare_sample_data
    from megatron_hope.megatron.cpu import cpu_execution
    from megatron_hope.training.flops import peak_bf16_tflops

    shape = dict(DRY_RUN_SHAPE if args.dry_run else FULL_SHAPE)
    for key in shape:
        if getattr(args, key) is not None:
            shape[key] = getattr(args, key)
    if args.num_workers is None:
        args.num_workers = 0 if args.dry_run else 2
    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name() if cuda else "cpu"
    peak = args.peak_tflops or (peak_bf16_tflops(device) if cuda else None)
    progress(f"device {device}; peak {peak or 'unknown'} TFLOP/s (dense BF16); "
             f"{args.transformer_impl} spec; shape {shape}")
    if not cuda and not args.dry_run:
        progress("no CUDA device: the 1B model on CPU takes very long; use --dry-run")

    progress(f"preparing sample data in {args.data_dir}")
    data = prepare_sample_data(args.data_dir, max_bytes=SAMPLE_MAX_BYTES)
    progress(f"sample data: {data.num_tokens} tokens in {data.num_documents} documents")

    models = {}
    with cpu_execution():  # does nothing where CUDA exists
        for position_type in POSITION_TYPES:
            models[position_type] = measure(args, shape, position_type, data)

    ratio = models["hope"]["ms_per_iteration"] / models["rope"]["ms_per_iteration"]
    print()
    print(table(models, peak))
    if args.json:
        args.json.write_text(json.dumps({
            "device": device, "peak_tflops": peak, "transformer_impl": args.transformer_impl,
            "dry_run": args.dry_run, "shape": shape, "micro_batch_size": args.micro_batch_size,
            "models": models, "hope_rope_ms_ratio": ratio,
            "seconds_total": time.perf_counter() - _started,
        }, indent=2))
        progress(f"figures written to {args.json}")
    print(f"HOPE/ROPE ms ratio: {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
