"""The pretraining loop, composed from megatron-core the way Megatron-LM's `training.py` is.

Parts: `parallel_state` groups, one `HopeGPTModel` per pipeline stage wrapped in megatron-core's
`DistributedDataParallel`, `get_megatron_optimizer` + `OptimizerParamScheduler`, the schedule from
`get_forward_backward_func` (1F1B with pipeline parallelism), `GPTDataset` batches, and
`dist_checkpointing` checkpoints. Works the same on CPU (gloo) and GPU (nccl).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from megatron.core import parallel_state
from megatron.core.distributed import DistributedDataParallel
from megatron.core.optimizer import get_megatron_optimizer
from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler
from megatron.core.pipeline_parallel import get_forward_backward_func
from megatron.core.transformer.module import Float16Module

from megatron_hope.megatron.model import (
    build_model,
    build_transformer_config,
    padded_vocab_size,
)
from megatron_hope.training import checkpointing, helper_processes, numerics
from megatron_hope.training.config import PretrainConfig, flag
from megatron_hope.training.data import (
    build_data_loader,
    build_train_and_validation,
)
from megatron_hope.training.distributed import (
    initialize_distributed,
    set_random_seed,
    shutdown_distributed,
)
from megatron_hope.training.megatron_configs import (
    ddp_config,
    force_param_sync,
    optimizer_config,
    transformer_overrides,
    wire_overlap,
)
from megatron_hope.training.memory import check_weights_fit, estimate_for
from megatron_hope.training.reporting import (
    IntervalStats,
    Reporter,
    format_iteration_line,
    format_validation_line,
)
from megatron_hope.training.run_control import ExitDuration, ManualGC, SignalFlag
from megatron_hope.training.run_metadata import canonical_encoding, canonical_encoding_dict
from megatron_hope.training.step import LOSS_KEY, forward_step, mean_loss
from megatron_hope.training.throughput import ThroughputMeter, memory_scalars

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


def _unwrap(model):
    while hasattr(model, "module"):
        model = model.module
    return model


class Trainer:
    """State and steps of one run; `pretrain` drives it."""

    def __init__(self, config: PretrainConfig, tokenizer) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.layout = config.layout(dist.get_world_size())
        self.global_batch_size = config.resolved_global_batch_size(self.layout)
        self.num_microbatches = config.num_microbatches(self.layout)
        arch = dataclasses.replace(config.arch, vocab_size=tokenizer.vocab_size)
        self.arch = arch
        self.transformer_config = build_transformer_config(
            arch,
            tensor_model_parallel_size=config.tensor_model_parallel_size,
            pipeline_model_parallel_size=config.pipeline_model_parallel_size,
            **transformer_overrides(config),
        )
        self.load_iteration = checkpointing.agreed_load_iteration(config.load, config.strict_load)
        self.padded_vocab_size = padded_vocab_size(
            tokenizer.vocab_size,
            config.tensor_model_parallel_size,
            checkpoint_padded_size=_saved_padded_vocab_size(config.load, self.load_iteration),
        )
        check_weights_fit(arch, self.padded_vocab_size, config.tensor_model_parallel_size,
                          config.pipeline_model_parallel_size)
        model = build_model(
            arch,
            self.transformer_config,
            pre_process=parallel_state.is_pipeline_first_stage(),
            post_process=parallel_state.is_pipeline_last_stage(),
            vocab_size=self.padded_vocab_size,
        )
        # As Megatron-LM's get_model: whatever the spec built on the host (norms of the local
        # spec, everything under use_cpu_initialization) moves to the device before wrapping.
        model.cuda(torch.cuda.current_device())
        if arch.bf16:
            model = Float16Module(self.transformer_config, model)
        self.model = [DistributedDataParallel(self.transformer_config, ddp_config(config), model)]
        self.optimizer = get_megatron_optimizer(optimizer_config(config), self.model)
        gbs = self.global_batch_size
        decay_iters = config.lr_decay_iters or config.train_iters
        self.scheduler = OptimizerParamScheduler(
            self.optimizer,
            init_lr=0.0,
            max_lr=config.lr,
            min_lr=config.min_lr,
            lr_warmup_steps=config.lr_warmup_iters * gbs,
            lr_decay_steps=max(decay_iters, config.lr_warmup_iters + 1) * gbs,
            lr_decay_style=config.lr_decay_style,
            start_wd=config.weight_decay,
            end_wd=config.weight_decay,
            wd_incr_steps=max(1, config.train_iters) * gbs,
            wd_incr_style="constant",
        )
        wire_overlap(self.transformer_config, self.model, self.optimizer, config)
        self.state = checkpointing.TrainingState()
        self.forward_backward = get_forward_backward_func()

    # -- checkpoints ------------------------------------------------------------------------

    def run_metadata(self) -> checkpointing.RunMetadata:
        return checkpointing.run_metadata(
            self.arch, self.padded_vocab_size, self.config.tokenizer_type,
            self.config.tokenizer_model, dataclasses.asdict(self.config),
        )

    def resumed_from_save_dir(self) -> bool:
        """True when this run continues the checkpoint series it saves to."""
        config = self.config
        return bool(self.load_iteration is not None and config.save and config.load
                    and not config.no_load_optim
                    and Path(config.save).resolve() == Path(config.load).resolve())

    def save(self) -> str:
        force_param_sync(self.model, self.config)
        path = checkpointing.save_checkpoint(
            self.config.save, self.state, [_unwrap(m) for m in self.model], self.optimizer,
            self.scheduler, self.run_metadata(),
        )
        return str(path)

    def load(self) -> bool:
        """Resume from `--load` if it holds a checkpoint; False when there is none yet."""
        load_dir = self.config.load
        if load_dir is None:
            return False
        if self.load_iteration is None:
            logger.warning("--load %s holds no checkpoint yet: starting from scratch", load_dir)
            return False
        metadata = checkpointing.read_run_metadata(load_dir, self.load_iteration)
        directory = checkpointing.checkpoint_dir(load_dir, self.load_iteration)
        saved_shapes = checkpointing.saved_architecture(metadata, directory).weight_shape_settings()
        ours = self.arch.weight_shape_settings()
        if saved_shapes != ours:
            differences = ", ".join(_setting_change(name, saved_shapes[name], ours[name])
                                    for name in ours if saved_shapes[name] != ours[name])
            raise ValueError(
                f"--load {load_dir}: {directory / checkpointing.RUN_METADATA_FILENAME} describes "
                f"another model ({differences}); pass the model flags it was trained with"
            )
        saved = metadata.get("position_encoding")
        saved = canonical_encoding_dict(saved) if saved is not None else None
        current = canonical_encoding(self.arch.position_encoding).to_dict()
        if saved is not None and saved != current and not self.config.no_load_optim:
            raise ValueError(
                f"--load {load_dir} was trained with position encoding {saved}, this run asks "
                f"for {current}; to switch encodings deliberately (continued pretraining from "
                "these weights, optimizer and schedule restarted), add --no-load-optim"
            )
        self.state, _ = checkpointing.load_checkpoint(
            load_dir, [_unwrap(m) for m in self.model], self.optimizer, self.scheduler,
            load_optimizer=not self.config.no_load_optim, load_rng=not self.config.no_load_rng,
            iteration=self.load_iteration,
        )
        if dist.get_rank() == 0:
            print(f" successfully loaded checkpoint from {load_dir} at iteration "
                  f"{self.state.iteration}", flush=True)
        if self.config.no_load_optim:
            # A model-only load (new layout, new encoding, or fine-tuning) starts its schedule anew.
            self.state = checkpointing.TrainingState()
        return True

    # -- steps ------------------------------------------------------------------------------

    def _run_schedule(self, data_iterator, forward_only: bool) -> list[dict[str, torch.Tensor]]:
        """One global batch through megatron-core's schedule (1F1B when pipelined)."""
        return self.forward_backward(
            forward_step_func=forward_step,
            data_iterator=data_iterator,
            model=self.model,
            num_microbatches=self.num_microbatches,
            seq_length=self.arch.seq_length,
            micro_batch_size=self.config.micro_batch_size,
            forward_only=forward_only,
        )

    def train_step(self, data_iterator) -> tuple[dict[str, float], float | None, bool, bool]:
        """One global batch and update; returns (losses, grad norm, updated, non-finite).

        A NaN/Inf loss or gradient on any rank skips the update (`numerics` has the policy)."""
        for chunk in self.model:
            chunk.train()
            chunk.zero_grad_buffer()
        self.optimizer.zero_grad()
        losses = mean_loss(self._run_schedule(data_iterator, forward_only=False))
        if self.config.check_for_nan_in_loss_and_grad and numerics.nonfinite_on_any_rank(
                losses.get(LOSS_KEY), self.model):
            return losses, None, False, True
        update_successful, grad_norm, _ = self.optimizer.step()
        if update_successful:
            self.scheduler.step(increment=self.global_batch_size)
        return losses, grad_norm, update_successful, False

    @torch.no_grad()
    def evaluate(self, dataset) -> dict[str, float]:
        """Mean loss over the first `--eval-iters` global batches of `dataset` (the same
        batches at every evaluation, so successive values are comparable)."""
        iterator = iter(build_data_loader(
            dataset, 0, self.config.micro_batch_size,
            parallel_state.get_data_parallel_rank(), self.layout.data_parallel_size,
            self.config.num_workers,
        ))
        force_param_sync(self.model, self.config)
        for chunk in self.model:
            chunk.eval()
        collected = []
        for _ in range(self.config.eval_iters):
            collected.extend(self._run_schedule(iterator, forward_only=True))
        for chunk in self.model:
            chunk.train()
        return mean_loss(collected)


def _setting_change(name: str, there, here) -> str:
    """`--num-layers 3 there, 2 here`, by the flag that sets it."""
    if name == "add_bias_linear":  # set by --disable-bias-linear
        return f"--disable-bias-linear {not there} there, {not here} here"
    return f"{flag(name)} {there} there, {here} here"


def _saved_padded_vocab_size(load_dir: str | None, iteration: int | None) -> int | None:
    if load_dir is None or iteration is None:
        return None
    return checkpointing.read_run_metadata(load_dir, iteration).get("padded_vocab_size")


def pretrain(config: PretrainConfig, tokenizer) -> PretrainResult:
    """Run (or resume) pretraining on the already-resolved data of `config`.

    Call on every rank; initialises torch.distributed and megatron-core's groups if needed and
    tears down what it created.
    """
    started = time.monotonic()  # --exit-duration-in-mins counts set-up, as Megatron-LM's does
    created_group = not dist.is_initialized()
    helper_processes.install()
    initialize_distributed(config.tensor_model_parallel_size, config.pipeline_model_parallel_size,
                           timeout_minutes=config.distributed_timeout_minutes)
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
    signal_flag = SignalFlag(config.exit_signal_handler)
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
            reporter.print(f" saved checkpoint at iteration {state.iteration:8d} to "
                           f"{result.last_checkpoint}")

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
            iterator = iter(build_data_loader(
                train_dataset, state.consumed_train_samples, config.micro_batch_size,
                parallel_state.get_data_parallel_rank(), trainer.layout.data_parallel_size,
                config.num_workers,
            ))
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
                result.exit_reason = "SIGTERM"
                break
            if exit_duration.expired():
                checkpoint_now()
                result.exit_reason = f"exit duration {config.exit_duration_in_mins} min"
                break
        else:
            if config.train_iters:
                validate()
            checkpoint_now()
    finally:
        signal_flag.restore()
        manual_gc.restore()
        reporter.close()
    result.final_iteration = state.iteration
    result.tokens_per_second = tokens_per_step * measured_steps / max(measured_seconds, 1e-9)
    return result
