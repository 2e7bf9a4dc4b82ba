"""One run's model, optimizer, schedule and checkpoints, built from megatron-core the way
Megatron-LM's `setup_model_and_optimizer` builds them, and its train and evaluation steps.
`loop.pretrain` drives it.
"""

from __future__ import annotations

import dataclasses
import logging
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
from megatron_hope.training import checkpointing, megatron_lm_checkpoint, numerics
from megatron_hope.training.async_save import AsyncCheckpointQueue
from megatron_hope.training.config import PretrainConfig, flag
from megatron_hope.training.data import build_data_loader
from megatron_hope.training.megatron_configs import (
    ddp_config,
    force_param_sync,
    optimizer_config,
    transformer_overrides,
    wire_overlap,
)
from megatron_hope.training.memory import check_weights_fit
from megatron_hope.training.run_metadata import canonical_encoding, canonical_encoding_dict
from megatron_hope.training.step import LOSS_KEY, forward_step, mean_loss

logger = logging.getLogger(__name__)


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
            context_parallel_size=config.context_parallel_size,
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
        self.model = self._build_model_chunks()
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
        self.async_queue = AsyncCheckpointQueue() if config.async_save else None

    def _build_model_chunks(self) -> list[DistributedDataParallel]:
        """As Megatron-LM's `get_model`: one chunk per virtual stage (interleaved 1F1B), each
        moved to the device and wrapped in megatron-core's DDP (bucketed for the first only)."""
        vpp = self.config.virtual_pipeline_model_parallel_size
        chunks = []
        for index in range(vpp or 1):
            vp_stage = index if vpp else None
            model = build_model(
                self.arch,
                self.transformer_config,
                pre_process=parallel_state.is_pipeline_first_stage(
                    ignore_virtual=False, vp_stage=vp_stage),
                post_process=parallel_state.is_pipeline_last_stage(
                    ignore_virtual=False, vp_stage=vp_stage),
                vocab_size=self.padded_vocab_size,
                vp_stage=vp_stage,
            )
            # Whatever the spec built on the host (norms of the local spec, everything under
            # use_cpu_initialization) moves to the device before wrapping.
            model.cuda(torch.cuda.current_device())
            if self.arch.bf16:
                model = Float16Module(self.transformer_config, model)
            chunks.append(DistributedDataParallel(
                self.transformer_config, ddp_config(self.config), model,
                disable_bucketing=index > 0))
        return chunks

    def data_iterators(self, dataset, consumed_samples: int):
        """The schedule's `data_iterator`: one loader, or one per model chunk (each chunk takes
        every micro-batch in order; the interleaved schedule runs chunks at different steps)."""
        config = self.config
        iterators = [iter(build_data_loader(
            dataset, consumed_samples, config.micro_batch_size,
            parallel_state.get_data_parallel_rank(), self.layout.data_parallel_size,
            config.num_workers, config.exit_signal if config.exit_signal_handler else None,
        )) for _ in self.model]
        return iterators if len(iterators) > 1 else iterators[0]

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
            self.scheduler, self.run_metadata(), self.async_queue,
            keep_last=self.config.keep_last_checkpoints,
            args=megatron_lm_checkpoint.checkpoint_args(
                self.config, self.arch, self.padded_vocab_size, checkpointing.layout(),
                self.state.iteration, self.state.consumed_train_samples),
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
        iterator = self.data_iterators(dataset, 0)
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
