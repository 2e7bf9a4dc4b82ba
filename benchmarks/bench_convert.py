"""Export time and peak memory of `hope-convert` against the checkpoint size.

    # CPU, ~120M parameters (16 layers, hidden 768, SwiGLU 2048, vocab 4096), fp32, ~1 min
    python benchmarks/bench_convert.py --workdir /tmp/bench-convert

    # larger: --num-layers 24 --hidden-size 1024 --ffn-hidden-size 2816

Each measurement runs in a fresh process: the baseline is its RSS after importing torch,
megatron-core and transformers and starting the 1-rank process group; the peak is
`ru_maxrss` after the export (`--no-verify`: verification loads both whole models by design).
The issue's goal: peak - baseline < 1.5 x one layer's weights + one output shard. The export
streams tensors into pre-planned safetensors files, so it never holds a shard; the embedding
(read once) is the other large resident tensor and is reported beside the layer.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def make_checkpoint(args) -> None:
    """A randomly initialised model saved as hope-pretrain would (iteration 0, model only)."""
    import dataclasses

    from megatron_hope.data.sample_data import prepare_sample_data
    from megatron_hope.data.tokenizer import build_tokenizer
    from megatron_hope.megatron.model import (
        ModelArchitecture,
        build_model,
        build_transformer_config,
        padded_vocab_size,
    )
    from megatron_hope.rope.config import PositionEncodingConfig
    from megatron_hope.training import checkpointing
    from megatron_hope.training.distributed import initialize_distributed, set_random_seed

    sample = prepare_sample_data(
        Path(args.workdir) / "data", vocab_size=args.vocab_size, max_bytes=3_000_000
    )
    tokenizer = build_tokenizer("HuggingFaceTokenizer", str(sample.tokenizer_path))
    initialize_distributed()
    set_random_seed(1234)
    d = args.hidden_size // args.num_attention_heads
    arch = ModelArchitecture(
        num_layers=args.num_layers,
        hidden_size=args.hidden_size,
        num_attention_heads=args.num_attention_heads,
        vocab_size=tokenizer.vocab_size,
        seq_length=2048,
        ffn_hidden_size=args.ffn_hidden_size,
        swiglu=True,
        normalization="RMSNorm",
        add_bias_linear=False,
        untie_embeddings_and_output_weights=True,
        position_encoding=PositionEncodingConfig("hope", d, 10000.0, 2048),
    )
    padded = padded_vocab_size(arch.vocab_size, 1)
    model = build_model(arch, build_transformer_config(arch), vocab_size=padded)
    metadata = {
        "format": "megatron-hope/1",
        "position_encoding": arch.position_encoding.to_dict(),
        "arch": {k: v for k, v in dataclasses.asdict(arch).items() if k != "position_encoding"},
        "padded_vocab_size": padded,
        "tokenizer": {"type": "HuggingFaceTokenizer", "model": str(sample.tokenizer_path)},
    }
    checkpointing.save_checkpoint(
        Path(args.workdir) / "ckpt", checkpointing.TrainingState(), [model], None, None, metadata
    )
    params = sum(p.numel() for p in model.parameters())
    layer = sum(p.numel() * p.element_size() for p in model.decoder.layers[0].parameters())
    embedding = model.embedding.word_embeddings.weight
    print(
        json.dumps(
            {
                "parameters": params,
                "layer_bytes": layer,
                "embedding_bytes": embedding.numel() * embedding.element_size(),
            }
        )
    )


def measure(args) -> None:
    import transformers  # noqa: F401 - part of the baseline, as in a real export

    from megatron_hope.convert.export import ExportOptions, ensure_single_process, export_checkpoint

    ensure_single_process()
    baseline = _rss_bytes()
    start = time.perf_counter()
    result = export_checkpoint(
        ExportOptions(
            str(Path(args.workdir) / "ckpt"),
            str(Path(args.workdir) / f"hf-{args.max_shard_size}"),
            target=args.target,
            max_shard_size=args.max_shard_size,
            verify=False,
            overwrite=True,
            progress=False,
        )
    )
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    index = json.loads((result.save_dir / "model.safetensors.index.json").read_text())
    shards = {}
    for name in set(index["weight_map"].values()):
        shards[name] = (result.save_dir / name).stat().st_size
    print(
        json.dumps(
            {
                "seconds": seconds,
                "baseline_rss": baseline,
                "peak_rss": peak,
                "largest_shard_bytes": max(shards.values()),
                "shards": len(shards),
                "bytes_written": result.bytes_written,
            }
        )
    )


def _run(mode: str, args, extra=()) -> dict:
    command = [
        sys.executable,
        __file__,
        f"--{mode}",
        "--workdir",
        args.workdir,
        "--num-layers",
        str(args.num_layers),
        "--hidden-size",
        str(args.hidden_size),
        "--num-attention-heads",
        str(args.num_attention_heads),
        "--ffn-hidden-size",
        str(args.ffn_hidden_size),
        "--vocab-size",
        str(args.vocab_size),
        "--target",
        args.target,
        *extra,
    ]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="/tmp/bench-convert")
    parser.add_argument("--num-layers", type=int, default=16)
    parser.add_argument("--hidden-size", type=int, default=768)
    parser.add_argument("--num-attention-heads", type=int, default=12)
    parser.add_argument("--ffn-hidden-size", type=int, default=2048)
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--target", default="llama")
    parser.add_argument("--max-shard-size", default="5GB")
    parser.add_argument("--make-checkpoint", action="store_true")
    parser.add_argument("--measure", action="store_true")
    args = parser.parse_args(argv)
    if args.make_checkpoint:
        make_checkpoint(args)
        return 0
    if args.measure:
        measure(args)
        return 0
    model = _run("make-checkpoint", args)
    ckpt = Path(args.workdir) / "ckpt"
    size = sum(p.stat().st_size for p in ckpt.rglob("*") if p.is_file())
    print(
        f"model: {model['parameters'] / 1e6:.1f}M parameters, checkpoint {size / 2**20:.0f} MiB, "
        f"one layer {model['layer_bytes'] / 2**20:.1f} MiB, embedding "
        f"{model['embedding_bytes'] / 2**20:.1f} MiB"
    )
    print(
        "| max shard | shards | export s | MB/s | peak - baseline RSS MiB | "
        "goal (1.5 layer + shard) MiB |"
    )
    print("|---|---|---|---|---|---|")
    for shard in (args.max_shard_size, "200MB"):
        result = _run("measure", args, ["--max-shard-size", shard])
        extra = (result["peak_rss"] - result["baseline_rss"]) / 2**20
        goal = (1.5 * model["layer_bytes"] + result["largest_shard_bytes"]) / 2**20
        rate = result["bytes_written"] / 1e6 / result["seconds"]
        print(
            f"| {shard} | {result['shards']} | {result['seconds']:.1f} | {rate:.0f} | "
            f"{extra:.0f} | {goal:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
