"""`hope-pretrain`: pretrain a megatron-core GPT model with HoPE.

    # Embedded default: a small HoPE model on CPU, on a sample corpus made from this machine's
    # Python standard library (no download, a few minutes on 2 cores)
    hope-pretrain

    # One node, 8 GPUs (or 8 CPU processes with gloo)
    torchrun --nproc-per-node 8 -m megatron_hope.training.cli --tensor-model-parallel-size 2 \
        --data-path 1.0 /data/redpajama_text_document --tokenizer-model /data/llama-tokenizer ...

    # Slurm: one task per GPU; MASTER_ADDR is derived from SLURM_JOB_NODELIST
    srun --ntasks-per-node 8 hope-pretrain ...   (see examples/)
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

# On CPU every megatron-core import warns that apex/TE are missing; that is expected there and
# says nothing about the run. Filtered before megatron-core is first imported.
warnings.filterwarnings("ignore", message=r".*(Apex is|Apex are|Engine and Apex are) not installed")

import torch.distributed as dist  # noqa: E402

from megatron_hope.training.arguments import parse_config  # noqa: E402
from megatron_hope.training.config import DEFAULT_RUN_DIR, PretrainConfig  # noqa: E402

logger = logging.getLogger("megatron_hope")


def with_embedded_sample(config: PretrainConfig, run_dir: Path = DEFAULT_RUN_DIR) -> PretrainConfig:
    """Point a config without --data-path at the sample corpus (built once, by rank 0)."""
    from megatron_hope.data.sample_data import prepare_sample_data

    if dist.get_rank() == 0:
        sample = prepare_sample_data(run_dir / "data")
    dist.barrier()
    if dist.get_rank() != 0:
        sample = prepare_sample_data(run_dir / "data")
    return config.replace(
        data_path=(str(sample.data_prefix),),
        tokenizer_type="HuggingFaceTokenizer",
        tokenizer_model=str(sample.tokenizer_path),
        save=config.save or str(run_dir / "checkpoints"),
        tensorboard_dir=config.tensorboard_dir or str(run_dir / "tensorboard"),
    )


def check_tokenizer_and_data(config: PretrainConfig):
    """The tokenizer the flags name, after checking every --data-path prefix could be its data.

    Raises:
        ValueError: a bad tokenizer flag or file, or data of another tokenizer's vocabulary.
    """
    from megatron_hope.data.tokenizer_args import TokenizerArgs
    from megatron_hope.data.vocab_check import check_data_vocabulary
    from megatron_hope.training.data import parse_data_path

    tokenizer = TokenizerArgs.of(config).build()
    check_data_vocabulary(parse_data_path(config.data_path)[0], tokenizer)
    return tokenizer


def run(config: PretrainConfig):
    """Library entry: resolve data and tokenizer, then pretrain. Returns the PretrainResult."""
    from megatron_hope.data.tokenizer_args import TokenizerArgs
    from megatron_hope.training.distributed import shutdown_distributed
    from megatron_hope.training.loop import initialize_parallel_state, pretrain

    # The tokenizer, and that the data is its, are checked before any process group starts.
    if config.data_path is not None:
        check_tokenizer_and_data(config)
    created = not dist.is_initialized()
    initialize_parallel_state(config)
    try:
        if config.data_path is None and not config.mock_data:
            config = with_embedded_sample(config)
        tokenizer = TokenizerArgs.of(config).build()
        result = pretrain(config, tokenizer)
        return config, result
    finally:
        shutdown_distributed(destroy_process_group=created)


def finished_run(config: PretrainConfig) -> str | None:
    """The line to print when this run has already finished, else None.

    A job chained with `sbatch --dependency=afterany` may start after the run reached
    --train-iters; with --load == --save (resuming its own series) there is nothing left to do,
    and it exits before any process group, model or dataset exists. Checked on every rank from
    the tracker and the named checkpoint's completeness (an incomplete one falls through to
    --load's fallback).
    """
    if not (config.save and config.load) or config.no_load_optim:
        return None
    if Path(config.save).resolve() != Path(config.load).resolve():
        return None
    from megatron_hope.training.checkpoint_files import (
        checkpoint_dir,
        checkpoint_problem,
        read_tracker,
    )

    train_iters = config.train_iters
    if config.train_samples is not None:
        if not config.global_batch_size:
            return None
        train_iters = config.train_samples // config.global_batch_size
    try:
        iteration = read_tracker(config.load)
    except ValueError:
        return None
    if iteration < train_iters or checkpoint_problem(checkpoint_dir(config.load, iteration)):
        return None
    return (f"hope-pretrain: run already finished: {config.load} holds iteration {iteration} "
            f"(--train-iters {train_iters}); nothing to do")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        stream=sys.stderr)
    # megatron-core logs every dataset index and optimizer field at INFO; keep its warnings.
    logging.getLogger("megatron.core").setLevel(logging.WARNING)
    config = parse_config(argv)
    done = finished_run(config)
    if done is not None:
        if (os.environ.get("RANK") or os.environ.get("SLURM_PROCID") or "0") == "0":
            print(done, flush=True)
        return 0
    from megatron_hope.megatron.cpu import cpu_execution
    from megatron_hope.training.numerics import NonFiniteTrainingError

    try:
        with cpu_execution():  # CUDA where there is a GPU; the host, through the shim, elsewhere
            config, result = run(config)
    except ValueError as error:
        print(f"hope-pretrain: error: {error}", file=sys.stderr)
        return 2
    except NonFiniteTrainingError as error:
        print(f"hope-pretrain: stopped: {error}", file=sys.stderr)
        return 1
    if result.logging_rank and result.train_losses:
        first, last = min(result.train_losses), max(result.train_losses)
        print(f"done: {result.final_iteration} iterations ({result.exit_reason}); lm loss "
              f"{result.train_losses[first]:.4f} (it {first}) -> "
              f"{result.train_losses[last]:.4f} (it {last}); "
              f"{result.tokens_per_second:.0f} tokens/s")
        if result.validation_losses:
            iters = sorted(result.validation_losses)
            print("validation lm loss: " + ", ".join(
                f"{result.validation_losses[i]:.4f} (it {i})" for i in iters))
        if result.last_checkpoint:
            print(f"checkpoint: {result.last_checkpoint}")
        if config.tensorboard_dir:
            print(f"tensorboard: tensorboard --logdir {config.tensorboard_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
