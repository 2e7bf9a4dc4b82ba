"""`hope-convert`: Megatron (hope-pretrain) <-> HuggingFace checkpoints with exact HoPE.

    # Megatron -> HF, the target that most serving engines run exactly (--target auto: phi3 for
    # HoPE, plain Llama for RoPE; it prints its choice); verifies itself; writes a model card
    hope-convert --load-dir runs/hope/checkpoints --save-dir runs/hope/hf \\
        --eval-results runs/hope/eval/ppl_vs_length.json

    # Llama with rope type "proportional" (transformers >= 5 only), position interpolation x4
    hope-convert --load-dir runs/hope/checkpoints --save-dir runs/hope/hf-llama --target llama \\
        --rope-scaling linear:4

    # HF -> Megatron (our exports, or a plain Llama RoPE model switched to HoPE)
    hope-convert --from-hf --load-dir llama-dir --save-dir runs/llama-hope \\
        --position-embedding-type hope --hope-train-length 4096 --target-tensor-parallel-size 2
    hope-pretrain --load runs/llama-hope --no-load-optim --no-load-rng <the model's flags> ...

Runs on one CPU process (no torchrun); flag names follow Megatron-LM's
tools/checkpoint/convert.py where they overlap.
"""

from __future__ import annotations

import argparse
import logging
import sys

from megatron_hope.convert.weight_map import TARGETS
from megatron_hope.rope.arguments import add_position_encoding_arguments


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hope-convert", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--load-dir", required=True,
                        help="hope-pretrain --save directory (or the HF directory with --from-hf)")
    parser.add_argument("--save-dir", required=True, help="directory to create")
    parser.add_argument("--from-hf", action="store_true", help="HF -> Megatron instead")
    parser.add_argument("--target", default="auto",
                        help=f"HF architecture to export to: auto, {', '.join(TARGETS)} (default "
                             "auto: the exact target most serving engines run; see "
                             "megatron_hope/convert/engines.py)")
    parser.add_argument("--rope-scaling", default=None,
                        help="inference-time scaling in the exported config: linear:F or "
                             "yarn:F[:ORIGINAL_LENGTH]")
    parser.add_argument("--dtype", default="auto",
                        help="auto (the checkpoint's), float32, bfloat16 or float16")
    parser.add_argument("--max-shard-size", default="5GB", help="per safetensors file")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip the HF-vs-Megatron logit check after export")
    parser.add_argument("--tolerance", type=float, default=None,
                        help="max |logit difference| (default 1e-4 fp32, 0.1 16-bit)")
    parser.add_argument("--keep-vocab-padding", action="store_true",
                        help="keep Megatron's padded vocabulary rows in the export")
    parser.add_argument("--tokenizer-model", default=None,
                        help="the run's tokenizer.json if it moved since training")
    parser.add_argument("--eval-results", nargs="*", default=(),
                        help="hope-eval result files (*.json) to summarise in the model card")
    parser.add_argument("--model-name", default=None,
                        help="name in the README.md model card (default: the --save-dir name)")
    parser.add_argument("--overwrite", action="store_true", help="replace --save-dir")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    group = parser.add_argument_group("--from-hf")
    group.add_argument("--target-tensor-parallel-size", type=int, default=1)
    group.add_argument("--target-pipeline-parallel-size", type=int, default=1)
    # Switch the encoding on import (e.g. hope for a RoPE model); the base is the model's.
    add_position_encoding_arguments(group, rotary_base=False, default_type=None,
                                    rotary_percent=False)
    group.add_argument("--seq-length", type=int, default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s", stream=sys.stderr)
    args = build_parser().parse_args(argv)
    from megatron_hope.megatron.cpu import cpu_execution

    with cpu_execution():  # CUDA where there is a GPU; the host, through the shim, elsewhere
        return _run(args)


def _run(args) -> int:
    try:
        if args.from_hf:
            from megatron_hope.convert.import_hf import ImportOptions, import_checkpoint

            path = import_checkpoint(ImportOptions(
                args.load_dir, args.save_dir, args.target_tensor_parallel_size,
                args.target_pipeline_parallel_size, args.position_embedding_type,
                args.hope_train_length, args.rope_fraction, args.seq_length, args.overwrite,
                not args.no_progress))
            print(f"hope-convert: wrote Megatron checkpoint {path} (load it with hope-pretrain "
                  "--load ... --no-load-optim --no-load-rng)")
            return 0
        from megatron_hope.convert.export import ExportOptions, export_checkpoint

        result = export_checkpoint(ExportOptions(
            args.load_dir, args.save_dir, args.target, args.rope_scaling, args.dtype,
            args.max_shard_size, not args.no_verify, args.tolerance, args.keep_vocab_padding,
            args.tokenizer_model, args.overwrite, not args.no_progress,
            tuple(args.eval_results), args.model_name))
    except ValueError as error:  # ConversionError, or a setting the model library refuses
        print(f"hope-convert: error: {error}", file=sys.stderr)
        return 2
    print(f"hope-convert: {result.reach}")
    print(f"hope-convert: wrote {result.save_dir} ({result.target}, "
          f"{result.bytes_written / 1e6:.1f} MB of weights) in {result.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
