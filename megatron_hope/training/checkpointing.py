"""Megatron-layout checkpoints through megatron-core's `dist_checkpointing` (torch_dist format).

Layout under `--save DIR` (the same as Megatron-LM, so its tools find their way around):

    DIR/iter_0000100/                  dist_checkpointing shards + common state
    DIR/iter_0000100/hope_run.json     run settings (position encoding, model shape, layout)
    DIR/latest_checkpointed_iteration.txt

A checkpoint is written into `iter_XXXXXXX.incomplete-PID/`, fsynced, renamed when every rank has
finished, and only then named in the tracker (replaced atomically): a kill at any moment leaves
the tracker naming a whole checkpoint (`checkpoint_files` has the protocol). `--load` checks
that the checkpoint the tracker names is complete and otherwise falls back to the newest complete
one with a warning (`--strict-load`: stops with the same message instead).

Model weights are sharded tensors: a checkpoint saved at one TP/PP/DP layout loads at another.
The regular optimizer's state reshards the same way. The distributed optimizer's state is saved
in megatron-core's `dp_reshardable` form (Megatron-LM's default), which follows data-parallel
changes only: its `fully_reshardable` form cannot restore torch Adam's state without apex/TE
(megatron-core 0.16.1 and 0.19.2 copy a per-parameter `step` it never saved), and such a
checkpoint is refused naming `--no-load-optim`. A model-only load covers the rest.

The common state also carries what Megatron-LM's `load_checkpoint` reads beside the weights
(`args`, `checkpoint_version`, its RNG layout: `megatron_lm_checkpoint`), so that either loop
resumes the other's checkpoints.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from megatron.core import dist_checkpointing, parallel_state

from megatron_hope.megatron.model import ModelArchitecture
from megatron_hope.training import (
    checkpoint_files,
    checkpoint_retention,
    megatron_lm_checkpoint,
    optimizer_state,
)
from megatron_hope.training.async_save import AsyncCheckpointQueue
from megatron_hope.training.checkpoint_files import (  # noqa: F401 (re-exported)
    TRACKER_FILENAME,
    agreed_load_iteration,
    checkpoint_dir,
    checkpoint_problem,
    read_tracker,
    resolve_load_iteration,
)
from megatron_hope.training.run_metadata import RUN_METADATA_FILENAME, RunMetadata

logger = logging.getLogger(__name__)

OPTIMIZER_SHARDING = {"distrib_optim_sharding_type": "dp_reshardable"}
"""How the distributed optimizer's state is sharded on disk (see the module docstring)."""


def read_run_metadata(load_dir: str | Path, iteration: int | None = None) -> dict[str, Any]:
    """The run settings saved beside a checkpoint (latest one by default), validated by
    `RunMetadata.read`, as a dict."""
    if iteration is None:
        iteration = read_tracker(load_dir)
    return RunMetadata.read(checkpoint_dir(load_dir, iteration)).to_dict()


def saved_architecture(metadata: dict[str, Any], directory: Path) -> ModelArchitecture:
    """The model `hope_run.json` describes; ValueError naming the file if it cannot be one."""
    from megatron_hope.training.model_loading import arch_from_metadata

    try:
        return arch_from_metadata(metadata, transformer_impl="local", fp8_format=None,
                                  apply_rope_fusion=False)
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{directory / RUN_METADATA_FILENAME}: unusable settings "
                         f"({type(error).__name__}: {error})") from None


def check_stored_shapes(model_state: dict[str, Any], directory: Path, built_from: str) -> None:
    """Every model tensor of `model_state` (a sharded state dict) is in the checkpoint with the
    same global shape; else a ValueError naming the tensor, both shapes and `built_from` (what
    the model was built from: the run's flags, or the checkpoint's hope_run.json). Without
    this, a mismatch surfaces deep inside torch's checkpoint reader."""
    from megatron.core.dist_checkpointing import ShardedTensor
    from megatron.core.dist_checkpointing.dict_utils import nested_values

    try:
        stored = dist_checkpointing.load_tensors_metadata(str(directory))
    except Exception as error:  # megatron-core raises several types for unreadable metadata
        raise ValueError(f"{directory}: not a readable dist_checkpointing checkpoint "
                         f"({type(error).__name__}: {error})") from None
    for tensor in nested_values(model_state):
        if not isinstance(tensor, ShardedTensor):
            continue
        saved = stored.get(tensor.key)
        if saved is None:
            raise ValueError(f"{directory} has no tensor {tensor.key}, which {built_from} "
                             "imply: the checkpoint is of another model")
        if tuple(saved.global_shape) != tuple(tensor.global_shape):
            raise ValueError(f"{directory}: {tensor.key} has shape {list(saved.global_shape)}, "
                             f"{built_from} imply {list(tensor.global_shape)}: the checkpoint "
                             "is of another model")


def load_sharded(sharded: dict[str, Any], directory: Path) -> dict[str, Any]:
    """`dist_checkpointing.load`, with the failures of a damaged checkpoint as a ValueError
    naming it. torch's `CheckpointException` derives from BaseException, so it would escape
    every `except Exception` above us as a traceback."""
    from torch.distributed.checkpoint.api import CheckpointException

    problem = checkpoint_files.dcp_problem(directory)
    if problem is not None:
        raise ValueError(problem)
    try:
        return dist_checkpointing.load(sharded, str(directory))
    except (Exception, CheckpointException) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ValueError(f"{directory}: cannot load the checkpoint ({type(error).__name__}: "
                         f"{first_line})") from error


def run_metadata(
    arch: ModelArchitecture,
    padded_vocab_size: int,
    tokenizer_type: str | None,
    tokenizer_model: str | None,
    args: dict[str, Any],
) -> RunMetadata:
    """The run settings written beside every checkpoint (`hope_run.json`), by `hope-pretrain`
    and by Megatron-LM's loop through `megatron_hope.integrations.megatron_lm` alike."""
    return RunMetadata.of(arch, padded_vocab_size, tokenizer_type, tokenizer_model, args)


def _model_sharded_state_dict(model_chunks) -> dict[str, Any]:
    if len(model_chunks) == 1:
        return {"model": model_chunks[0].sharded_state_dict()}
    return {f"model{i}": chunk.sharded_state_dict() for i, chunk in enumerate(model_chunks)}


def layout() -> dict[str, int]:
    return {
        "tensor_model_parallel_size": parallel_state.get_tensor_model_parallel_world_size(),
        "pipeline_model_parallel_size": parallel_state.get_pipeline_model_parallel_world_size(),
        "data_parallel_size": parallel_state.get_data_parallel_world_size(),
    }


@dataclass
class TrainingState:
    """What a resumed run continues from."""

    iteration: int = 0
    consumed_train_samples: int = 0


def save_checkpoint(
    save_dir: str | Path,
    state: TrainingState,
    model_chunks,
    optimizer,
    scheduler,
    run_metadata: RunMetadata,
    async_queue: AsyncCheckpointQueue | None = None,
    keep_last: int | None = None,
    args: argparse.Namespace | None = None,
) -> Path:
    """Save on every rank; returns the final checkpoint directory.

    `args` (`megatron_lm_checkpoint.checkpoint_args`) is the run's settings as Megatron-LM saves
    them, so that its `load_checkpoint` resumes the checkpoint (data position included).

    `model_chunks` are the unwrapped megatron-core models (one per virtual stage). With
    `async_queue` (`--async-save`) the shards are written in the background and the checkpoint
    is published (renamed, named in the tracker) when the queue finalizes it; until then the
    previous checkpoint stays the tracker's. `keep_last` (`--keep-last-checkpoints`) prunes
    older checkpoints once this one is published.
    """
    final = checkpoint_dir(save_dir, state.iteration)
    rank = dist.get_rank()
    # One staging name for every rank: rank 0's pid (the process whose liveness guards it).
    owner = [os.getpid()]
    dist.broadcast_object_list(owner, src=0)
    staging = checkpoint_files.staging_name(final, owner[0])
    if rank == 0:
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        checkpoint_files.remove_stale_staging(Path(save_dir), prefix="iter_")
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir()
    dist.barrier()

    sharded = _model_sharded_state_dict(model_chunks)
    model_state = sharded["model"] if len(model_chunks) == 1 else sharded
    if optimizer is not None:
        sharded["optimizer"] = optimizer.sharded_state_dict(
            model_state, is_loading=False, metadata=OPTIMIZER_SHARDING
        )
    sharded["opt_param_scheduler"] = scheduler.state_dict() if scheduler is not None else None
    sharded["iteration"] = state.iteration
    sharded["consumed_train_samples"] = state.consumed_train_samples
    sharded["checkpoint_version"] = megatron_lm_checkpoint.CHECKPOINT_VERSION
    if args is not None:
        sharded["args"] = args
    sharded["rng_state"] = megatron_lm_checkpoint.rng_sharded_object(
        [megatron_lm_checkpoint.rng_state()])
    metadata = run_metadata.at(state.iteration, state.consumed_train_samples, layout())
    publish = functools.partial(_publish, Path(save_dir), staging, final, state.iteration, metadata,
                                keep_last)
    if async_queue is None:
        dist_checkpointing.save(sharded, str(staging), content_metadata=dict(OPTIMIZER_SHARDING))
        publish()
    else:
        async_queue.save(sharded, staging, dict(OPTIMIZER_SHARDING), publish)
    return final


def _publish(save_dir: Path, staging: Path, final: Path, iteration: int,
             metadata: RunMetadata, keep_last: int | None) -> None:
    """Collective, once every rank's shards are written: make them durable, rename the staging
    directory into place, name it in the tracker (in that order), then prune old ones."""
    rank = dist.get_rank()
    # Each rank makes its own shard files durable; rank 0 the shared files and the directory.
    checkpoint_files.fsync_tree(staging, lambda name: name.startswith(f"__{rank}_"))
    dist.barrier()
    if rank == 0:
        metadata.write(staging)
        checkpoint_files.fsync_tree(staging, lambda name: not name.startswith("__"))
        checkpoint_files.publish_directory(staging, final)
        checkpoint_files.write_text_atomic(save_dir / TRACKER_FILENAME, f"{iteration}\n")
        logger.info("checkpoint at iteration %d published as %s", iteration, final)
        checkpoint_retention.prune_checkpoints(save_dir, keep_last)
    dist.barrier()


def load_checkpoint(
    load_dir: str | Path,
    model_chunks,
    optimizer,
    scheduler,
    load_optimizer: bool = True,
    load_rng: bool = True,
    iteration: int | None = None,
) -> tuple[TrainingState, dict[str, Any]]:
    """Load a checkpoint (default: the tracker's) into the given objects; returns the state and
    metadata.

    RNG states are restored only when the checkpoint's TP/PP layout equals the current one (they
    are per model-parallel rank); optimizer and model state reshard to any layout.
    """
    if iteration is None:
        iteration = read_tracker(load_dir)
    directory = checkpoint_dir(load_dir, iteration)
    if not directory.is_dir():
        raise ValueError(
            f"--load {load_dir}: {TRACKER_FILENAME} names iteration {iteration} but "
            f"{directory} does not exist"
        )
    metadata = read_run_metadata(load_dir, iteration)
    saved_layout = metadata.get("layout", {})
    current = layout()
    same_model_parallel = all(
        saved_layout.get(key) == current[key]
        for key in ("tensor_model_parallel_size", "pipeline_model_parallel_size")
    )
    saved_distributed = bool(metadata.get("args", {}).get("use_distributed_optimizer"))
    current_distributed = bool(getattr(getattr(optimizer, "config", None),
                                       "use_distributed_optimizer", False))
    if load_optimizer and optimizer is not None:
        if saved_distributed != current_distributed:
            raise ValueError(
                f"--load {load_dir}: its optimizer state was saved "
                f"{'with' if saved_distributed else 'without'} --use-distributed-optimizer and "
                f"this run is {'with' if current_distributed else 'without'} it; use the same "
                "setting, or add --no-load-optim to load the model weights only"
            )
        if saved_distributed and not same_model_parallel:
            raise ValueError(
                f"--load {load_dir}: the distributed optimizer's state was saved at {saved_layout} "
                "and reshards only across data-parallel sizes; keep TP/PP as saved, or add "
                "--no-load-optim to load the model weights only at the new layout"
            )
    if load_rng and not same_model_parallel:
        logger.info("checkpoint layout %s differs from %s: RNG states not restored",
                    saved_layout, current)
        load_rng = False

    sharded = _model_sharded_state_dict(model_chunks)
    model_state = sharded["model"] if len(model_chunks) == 1 else sharded
    check_stored_shapes(model_state, directory, "this run's model flags")
    if load_optimizer and optimizer is not None:
        content = dist_checkpointing.load_content_metadata(str(directory)) or OPTIMIZER_SHARDING
        optimizer_state.check_loadable_optimizer_form(load_dir, content, optimizer)
        optimizer_state.initialize_empty_adam_state(optimizer)
        sharded["optimizer"] = optimizer.sharded_state_dict(
            model_state, is_loading=True, metadata=content
        )
    if load_rng:
        sharded["rng_state"] = megatron_lm_checkpoint.rng_sharded_object(None)
    loaded = load_sharded(sharded, directory)

    if len(model_chunks) == 1:
        model_chunks[0].load_state_dict(loaded["model"])
    else:
        for i, chunk in enumerate(model_chunks):
            chunk.load_state_dict(loaded[f"model{i}"])
    if load_optimizer and optimizer is not None:
        with torch.no_grad():  # upstream copies into leaf parameters in place
            optimizer.load_state_dict(loaded["optimizer"])
        optimizer_state.restore_adam_steps(optimizer, loaded["optimizer"])
        if scheduler is not None and loaded.get("opt_param_scheduler") is not None:
            scheduler.load_state_dict(loaded["opt_param_scheduler"])
    if load_rng:
        megatron_lm_checkpoint.restore_rng_state(loaded["rng_state"])
    state = TrainingState(
        iteration=int(loaded["iteration"]),
        consumed_train_samples=megatron_lm_checkpoint.consumed_train_samples(loaded),
    )
    return state, metadata
