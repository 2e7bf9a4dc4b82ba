"""Load a `hope-pretrain` checkpoint as one in-memory megatron-core model (TP=1, PP=1).

For evaluation and export: whatever TP/PP/DP layout wrote the checkpoint, `dist_checkpointing`
reassembles the full tensors into a single-process `HopeGPTModel` built from the settings saved in
`hope_run.json`.

    from megatron_hope.training.model_loading import load_model_from_checkpoint
    loaded = load_model_from_checkpoint("runs/hope-default/checkpoints")
    logits = loaded.logits(token_ids)        # [b, s, vocab]
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from megatron.core import parallel_state

from megatron_hope.megatron.model import (
    HopeGPTModel,
    ModelArchitecture,
    build_model,
    build_transformer_config,
)
from megatron_hope.rope.config import PositionEncodingConfig
from megatron_hope.training import checkpoint_files, checkpointing
from megatron_hope.training.distributed import initialize_distributed, set_random_seed


def arch_from_metadata(metadata: dict[str, Any], **overrides) -> ModelArchitecture:
    """The model architecture a checkpoint was trained with (fields from `hope_run.json`)."""
    known = {field.name for field in dataclasses.fields(ModelArchitecture)}
    values = {key: value for key, value in metadata["arch"].items() if key in known}
    values["position_encoding"] = PositionEncodingConfig.from_dict(metadata["position_encoding"])
    if values.get("swiglu") and values.get("ffn_hidden_size") is None:
        # Written before the size was stored resolved, when --swiglu's default rounded 8/3 x
        # hidden UP to a multiple of 64 (now Megatron-LM's, rounded down).
        values["ffn_hidden_size"] = (int(8 * values["hidden_size"] / 3) + 63) // 64 * 64
    values.update(overrides)
    return ModelArchitecture(**values)


@dataclass
class LoadedModel:
    """A single-process model with its settings."""

    model: HopeGPTModel
    arch: ModelArchitecture
    metadata: dict[str, Any]
    iteration: int
    checkpoint_dir: Path

    @property
    def vocab_size(self) -> int:
        """The tokenizer's vocabulary (logits beyond it are padding)."""
        return self.arch.vocab_size

    @torch.no_grad()
    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """`tokens` `[b, s]` int64 -> logits `[b, s, vocab]` on the device (padding dropped)."""
        device = torch.cuda.current_device()
        tokens = tokens.cuda(device, non_blocking=True)
        positions = torch.arange(tokens.shape[1], device=device).expand_as(tokens)
        output = self.model(tokens, positions, None)
        return output[..., : self.vocab_size].float()


def load_model_from_checkpoint(
    load_dir: str | Path,
    iteration: int | None = None,
    transformer_impl: str = "local",
    seq_len_interpolation_factor: float | None = None,
    seed: int = 1234,
) -> LoadedModel:
    """Build the checkpoint's model on this process and load its weights (model only).

    Initialises a single-rank process group and megatron-core's parallel state if none exists;
    call it in a process that runs nothing else distributed.
    """
    load_dir = Path(load_dir)
    if not load_dir.is_dir():
        raise ValueError(f"--load {load_dir}: no such directory")
    if iteration is None:
        iteration = checkpointing.read_tracker(load_dir)
    directory = checkpointing.checkpoint_dir(load_dir, iteration)
    if not directory.is_dir():
        raise ValueError(f"--load {load_dir}: {directory.name} does not exist")
    metadata = checkpointing.read_run_metadata(load_dir, iteration)

    if not dist.is_initialized() or not parallel_state.model_parallel_is_initialized():
        initialize_distributed()
    if parallel_state.get_tensor_model_parallel_world_size() != 1 or (
        parallel_state.get_pipeline_model_parallel_world_size() != 1
    ):
        raise ValueError("load_model_from_checkpoint builds the whole model on one rank: "
                         "initialise megatron-core with TP=1 and PP=1")
    set_random_seed(seed)  # megatron's attention forks the model-parallel RNG even in eval
    problem = checkpoint_files.dcp_problem(directory)  # before building a model for nothing
    if problem is not None:
        raise ValueError(problem)
    arch = dataclasses.replace(checkpointing.saved_architecture(metadata, directory),
                               transformer_impl=transformer_impl)
    config = build_transformer_config(arch)
    model = build_model(arch, config, vocab_size=metadata["padded_vocab_size"],
                        seq_len_interpolation_factor=seq_len_interpolation_factor)
    model.cuda(torch.cuda.current_device())  # as Megatron-LM's get_model
    sharded = {"model": model.sharded_state_dict()}
    checkpointing.check_stored_shapes(sharded["model"], directory,
                                      f"the settings in {directory / 'hope_run.json'}")
    loaded = checkpointing.load_sharded(sharded, directory)
    model.load_state_dict(loaded["model"])
    model.eval()
    return LoadedModel(model, arch, metadata, iteration, directory)
