"""The pretraining loop, composed from megatron-core the way Megatron-LM's `training.py` is.

Parts: `parallel_state` groups, one `HopeGPTModel` per pipeline stage wrapped in megatron-core's
`DistributedDataParallel`, `get_megatron_optimizer` + `OptimizerParamScheduler`, the schedule from
`get_forward_backward_func` (1F1B with pipeline parallelism), `GPTDataset` batches, and
`dist_checkpointing` checkpoints. Works the same on CPU (gloo) and GPU (nccl).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch.distributed as dist
from megatron.core import parallel_state

from megatron_hope.training import helper_processes, numerics
from megatron_hope.training.config import PretrainConfig
from megatron_hope.training.data import (
    build_train_and_validation,
)
from megatron_hope.training.distributed import (
    initialize_distributed,
    set_random_seed,
    shutdown_distributed,
)
from megatron_hope.training.memory import estimate_for
from megatron_hope.training.reporting import (
    IntervalStats,
    Reporter,
    format_iteration_line,
    format_validation_line,
)
from megatron_hope.training.run_control import ExitDuration, ManualGC, SignalFlag
from megatron_hope.training.step import LOSS_KEY
from megatron_hope.training.throughput import ThroughputMeter, memory_scalars
from megatron_hope.training.trainer import Trainer

logger = logging.getLogger(__name__)


@dataclass
class PretrainResult:
    """What a run did, as seen from this rank (losses only on the last pipeline stage)."""

    train_losses: dict[int, float] = field(default_factory=dict)
    """Per iteration: the global-batch mean of the token loss."""
    validation_losses: dict[int, float] = field(default_factory=dict)
    grad_norms: dict[int, float] = field(default_factory=dict)
    last_checkpoint: str | None = None
    final_iteration: int = 0
    tokens_per_second: float = 0.0
    """Mean over the run's iterations after the first (which pays one-off set-up costs)."""
    exit_reason: str = "finished"
    logging_rank: bool = False
    """True on the one rank that prints the run's log lines."""


def initialize_parallel_state(config: PretrainConfig) -> None:
    """torch.distributed and megatron-core's groups for `config`'s layout (a no-op when they
    exist already)."""
    initialize_distributed(
        config.tensor_model_parallel_size, config.pipeline_model_parallel_size,
        context_parallel_size=config.context_parallel_size,
        timeout_minutes=config.distributed_timeout_minutes,
        virtual_pipeline_model_parallel_size=config.virtual_pipeline_model_parallel_size)


def pretrain(config: PretrainConfig, tokenizer) -> PretrainResult:
    """Run (or resume) pretraining on the already-resolved data of `config`.

    Call on every rank; initialises torch.distributed and megatron-core's groups if needed and
    tears down what it created.
    """
    started = time.monotonic()  # --exit-duration-in-mins counts set-up, as Megatron-LM's does
    created_group = not dist.is_initialized()
    helper_processes.install()
    initialize_parallel_state(config)
    try:
        set_random_seed(config.seed)
        if config.train_samples is not None:
            # Megatron-LM's --train-samples: iterations of whole global batches.
            gbs = config.resolved_global_batch_size(config.layout(dist.get_world_size()))
            config = config.replace(train_iters=config.train_samples // gbs)
        trainer = Trainer(config, tokenizer)
        trainer.load()
        return _train(config, trainer, started)
    finally:
        shutdown_distributed(destroy_process_group=created_group)


def _is_logging_rank() -> bool:
    return (
        parallel_state.is_pipeline_last_stage()
        and parallel_state.get_tensor_model_parallel_rank() == 0
        and parallel_state.get_context_parallel_rank() == 0
        and parallel_state.get_data_parallel_rank() == 0
    )


def _train(config: PretrainConfig, trainer: Trainer, started: float) -> PretrainResult:
    train_dataset, valid_dataset = build_train_and_validation(
        config, trainer.global_batch_size, trainer.tokenizer)
    state = trainer.state
    result = PretrainResult(final_iteration=state.iteration, logging_rank=_is_logging_rank())
    last_stage = parallel_state.is_pipeline_last_stage()
    reporter = Reporter(_is_logging_rank(), config.train_iters, state.iteration,
                        config.tensorboard_dir, config.progress)
    signal_flag = SignalFlag(config.exit_signal_handler, config.exit_signal)
    exit_duration = ExitDuration(config.exit_duration_in_mins, started)
    manual_gc = ManualGC(config.manual_gc, config.manual_gc_interval)
    throughput = ThroughputMeter(trainer.arch, trainer.global_batch_size,
                                 trainer.padded_vocab_size, dist.get_world_size(),
                                 config.peak_tflops) if config.log_throughput else None
    if dist.get_rank() == 0:
        print(estimate_for(config, dist.get_world_size(), trainer.padded_vocab_size).line(),
              flush=True)
    tokens_per_step = trainer.global_batch_size * config.arch.seq_length
    interval = IntervalStats()
    measured_seconds, measured_steps = 0.0, 0
    # A resumed run does not write again the checkpoint it resumed from.
    saved_at = state.iteration if trainer.resumed_from_save_dir() else None
    validated_at = None
    nan_streak = numerics.NanStreak(config.max_consecutive_nan_iterations)

    def checkpoint_now() -> None:
        nonlocal saved_at
        if config.save and saved_at != state.iteration:
            result.last_checkpoint = trainer.save()
            saved_at = state.iteration
            reporter.print(f" {'started saving' if config.async_save else 'saved'} checkpoint at "
                           f"iteration {state.iteration:8d} to {result.last_checkpoint}")

    def validate() -> None:
        nonlocal validated_at
        if valid_dataset is None or not config.eval_iters or validated_at == state.iteration:
            return
        validated_at = state.iteration
        manual_gc.around_eval()
        losses = trainer.evaluate(valid_dataset)
        manual_gc.around_eval()
        if last_stage and losses:
            result.validation_losses[state.iteration] = losses[LOSS_KEY]
            reporter.print(format_validation_line(state.iteration, losses))
            reporter.scalars(state.iteration, {f"{LOSS_KEY} validation": losses[LOSS_KEY]})

    try:
        if config.train_iters == 0:
            checkpoint_now()
        iterator = None
        if state.iteration < config.train_iters:
            iterator = trainer.data_iterators(train_dataset, state.consumed_train_samples)
        while state.iteration < config.train_iters:
            started = time.perf_counter()
            losses, grad_norm, updated, nonfinite = trainer.train_step(iterator)
            seconds = time.perf_counter() - started
            state.iteration += 1
            state.consumed_train_samples += trainer.global_batch_size
            manual_gc.after_step(state.iteration)
            if state.iteration > 1 or measured_steps == 0:
                measured_seconds += seconds
                measured_steps += 1
            if last_stage and losses:
                loss = losses[LOSS_KEY]
                result.train_losses[state.iteration] = loss
                if grad_norm is not None:
                    result.grad_norms[state.iteration] = float(grad_norm)
                if nonfinite:
                    logger.warning("iteration %d: NaN/Inf loss (%s) or gradient; update skipped",
                                   state.iteration, loss)
                interval.add(losses, seconds, skipped=not updated, nan=nonfinite)
                reporter.advance({"loss": loss})
                reporter.scalars(state.iteration, {
                    LOSS_KEY: loss,
                    "learning-rate": trainer.optimizer.param_groups[0]["lr"],
                    "grad-norm": float(grad_norm) if grad_norm is not None else None,
                    "throughput-tokens-per-sec": tokens_per_step / seconds,
                    **(throughput.scalars(*throughput.figures(seconds)) if throughput else {}),
                    **(memory_scalars() if config.log_memory_to_tensorboard else {}),
                })
                if state.iteration % config.log_interval == 0 or (
                    state.iteration == config.train_iters
                ):
                    mean_seconds = interval.seconds / max(1, interval.iterations)
                    flops_fields = (throughput.log_fields(*throughput.figures(mean_seconds))
                                    if throughput else "")
                    reporter.print(format_iteration_line(
                        state.iteration, config.train_iters, state.consumed_train_samples,
                        1000.0 * mean_seconds, trainer.optimizer.param_groups[0]["lr"],
                        trainer.global_batch_size, interval.mean_losses(),
                        float(grad_norm) if grad_norm is not None else None,
                        tokens_per_step / max(mean_seconds, 1e-9),
                        skipped_iterations=interval.skipped, nan_iterations=interval.nan,
                        flops_fields=flops_fields,
                    ))
                    interval = IntervalStats()
            nan_streak.record(state.iteration, nonfinite, result.last_checkpoint)
            if trainer.async_queue is not None:
                trainer.async_queue.finalize()  # publish the background saves that are written
            if state.iteration % config.eval_interval == 0:
                validate()
            if config.save_interval and state.iteration % config.save_interval == 0:
                checkpoint_now()
            if config.exit_interval and state.iteration % config.exit_interval == 0:
                checkpoint_now()
                result.exit_reason = f"exit interval {config.exit_interval}"
                break
            if config.exit_signal_handler and signal_flag.any_rank():
                checkpoint_now()
                result.exit_reason = config.exit_signal
                break
            if exit_duration.expired():
                checkpoint_now()
                result.exit_reason = f"exit duration {config.exit_duration_in_mins} min"
                break
        else:
            if config.train_iters:
                validate()
            checkpoint_now()
        if trainer.async_queue is not None:
            trainer.async_queue.close()  # every save published before the run reports its end
    finally:
        signal_flag.restore()
        manual_gc.restore()
        reporter.close()
    result.final_iteration = state.iteration
    result.tokens_per_second = tokens_per_step * measured_steps / max(measured_seconds, 1e-9)
    return result
