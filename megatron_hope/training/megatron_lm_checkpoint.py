"""What Megatron-LM's `load_checkpoint` reads from a checkpoint beside the weights, written by
`hope-pretrain` the way Megatron-LM writes it, and read back from either loop's checkpoints.

So that a `hope-pretrain` checkpoint resumes under Megatron-LM's `pretrain()` and the reverse
(`tests/integrations/test_megatron_lm_resume.py`), the common state carries:

- `args`: an `argparse.Namespace` with Megatron-LM's names. Its `load_checkpoint` takes the
  data position from it (`consumed_train_samples`; without it the resumed run starts the data
  again at sample 0), the saved TP/PP sizes (whether the RNG states can be restored) and the
  shape it checks (`check_checkpoint_args`); `--use-checkpoint-args` reads the model flags.
- `checkpoint_version` 3.0 (without it Megatron-LM takes 0 and runs its pre-2.0 QKV reordering).
- `rng_state`: a `ShardedObject` holding `[ {random_rng_state, np_rng_state, torch_rng_state,
  cuda_rng_state, rng_tracker_states} ]` per (pipeline, tensor) rank, replicated over
  data-parallel (with context-parallel) ranks: Megatron-LM's layout and key names.

Checkpoints that `hope-pretrain` wrote before this format (RNG under `random/numpy/torch/
tracker`, the data position only in `consumed_train_samples`) still load in `hope-pretrain`.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
from typing import Any

import numpy as np
import torch
from megatron.core import parallel_state, tensor_parallel
from megatron.core.dist_checkpointing.mapping import ShardedObject

CHECKPOINT_VERSION = 3.0
"""Megatron-LM's current `checkpoint_version` (QKV layout of megatron-core models)."""
MAKE_VOCAB_SIZE_DIVISIBLE_BY = 128
"""Megatron-LM's default --make-vocab-size-divisible-by, the padding `hope-pretrain` applies."""


def checkpoint_args(config, arch, padded_vocab_size: int, layout: dict[str, int],
                    iteration: int, consumed_train_samples: int) -> argparse.Namespace:
    """The `args` Megatron-LM saves, from a `PretrainConfig` and its resolved architecture.

    Every `PretrainConfig` and `ModelArchitecture` field under its own name (they are Megatron-
    LM's flag names), plus what Megatron-LM derives in `validate_args` and tracks while training.
    """
    encoding = arch.position_encoding
    values = {key: value for key, value in dataclasses.asdict(config).items() if key != "arch"}
    values.update({key: value for key, value in dataclasses.asdict(arch).items()
                   if key != "position_encoding"})
    hope_kind = encoding.position_embedding_type
    values.update(
        ffn_hidden_size=arch.ffn_size,
        kv_channels=arch.head_dim,
        num_query_groups=arch.query_groups,
        group_query_attention=arch.num_query_groups is not None,
        max_position_embeddings=arch.max_positions,
        add_qkv_bias=arch.add_bias_linear,
        fp8=arch.fp8_format,
        # Megatron-LM's parser sees our types as its rotary embedding plus ours (see
        # integrations.megatron_lm.megatron_lm_argv).
        position_embedding_type="none" if hope_kind == "none" else "rope",
        hope_position_embedding_type=hope_kind,
        hope_train_length=encoding.hope_train_length,
        rope_fraction=encoding.rope_fraction,
        use_rotary_position_embeddings=hope_kind != "none",
        add_position_embedding=True,  # Megatron-LM's default; only learned_absolute reads it
        rotary_base=encoding.rotary_base,
        rotary_percent=encoding.rotary_percent,
        rotary_interleaved=False,
        squared_relu=False,
        apply_layernorm_1p=False,
        vocab_size=config.tokenizer_vocab_size,
        padded_vocab_size=padded_vocab_size,
        make_vocab_size_divisible_by=MAKE_VOCAB_SIZE_DIVISIBLE_BY,
        tensor_model_parallel_size=layout["tensor_model_parallel_size"],
        pipeline_model_parallel_size=layout["pipeline_model_parallel_size"],
        data_parallel_size=layout["data_parallel_size"],
        world_size=(layout["tensor_model_parallel_size"] * layout["pipeline_model_parallel_size"]
                    * layout["data_parallel_size"] * config.context_parallel_size),
        virtual_pipeline_model_parallel_size=config.virtual_pipeline_model_parallel_size,
        expert_model_parallel_size=1,
        ckpt_format="torch_dist",
        use_dist_ckpt=True,
        no_save_optim=False,
        no_save_rng=False,
        data_parallel_random_init=False,
        iteration=iteration,
        consumed_train_samples=consumed_train_samples,
        skipped_train_samples=0,
        consumed_valid_samples=0,
    )
    return argparse.Namespace(**values)


def consumed_train_samples(loaded: dict[str, Any]) -> int:
    """The data position of a loaded common state: ours, else Megatron-LM's `args`."""
    if "consumed_train_samples" in loaded:
        return int(loaded["consumed_train_samples"])
    args = loaded.get("args")
    return int(getattr(args, "consumed_train_samples", 0) or 0)


def rng_state() -> dict[str, Any]:
    """This rank's generators under Megatron-LM's key names."""
    return {
        "random_rng_state": random.getstate(),
        "np_rng_state": np.random.get_state(),
        "torch_rng_state": torch.get_rng_state(),
        # Megatron-LM always saves one; on the host the device generator is the CPU one.
        "cuda_rng_state": (torch.cuda.get_rng_state() if torch.cuda.is_available()
                           else torch.get_rng_state()),
        "rng_tracker_states": tensor_parallel.get_cuda_rng_tracker().get_states(),
    }


def rng_sharded_object(states: list[dict[str, Any]] | None) -> ShardedObject:
    """Megatron-LM's `rng_state` entry: one list per (pipeline, tensor) rank, replicated over
    the data-parallel (with context-parallel) ranks. `states` None: a template to load into."""
    return ShardedObject(
        "rng_state",
        states,
        (
            parallel_state.get_pipeline_model_parallel_world_size(),
            parallel_state.get_tensor_model_parallel_world_size(),
        ),
        (
            parallel_state.get_pipeline_model_parallel_rank(),
            parallel_state.get_tensor_model_parallel_rank(),
        ),
        replica_id=parallel_state.get_data_parallel_rank(with_context_parallel=True),
    )


def restore_rng_state(saved: list[dict[str, Any]] | dict[str, Any]) -> None:
    """Set this rank's generators from a loaded `rng_state`: Megatron-LM's list (its first
    entry: data-parallel ranks share one state unless --data-parallel-random-init), or the
    dict that `hope-pretrain` saved before it wrote Megatron-LM's form."""
    if isinstance(saved, dict):  # hope-pretrain's earlier form
        saved = {"random_rng_state": saved["random"], "np_rng_state": saved["numpy"],
                 "torch_rng_state": saved["torch"], "cuda_rng_state": saved.get("cuda"),
                 "rng_tracker_states": saved["tracker"]}
    else:
        saved = saved[0]
    random.setstate(saved["random_rng_state"])
    np.random.set_state(saved["np_rng_state"])
    torch.set_rng_state(saved["torch_rng_state"])
    if saved.get("cuda_rng_state") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(saved["cuda_rng_state"])
    tensor_parallel.get_cuda_rng_tracker().set_states(saved["rng_tracker_states"])
