"""The parts of a checkpoint that Megatron-LM's loop reads beside the weights, and the model
shape both loops derive from the same flags (`training.megatron_lm_checkpoint`, `model`).
The loops themselves resume each other in `tests/integrations/test_megatron_lm_resume.py`."""

from __future__ import annotations

import argparse
import pickle
import types

import pytest
import torch

from megatron_hope.megatron.model import ModelArchitecture, megatron_lm_swiglu_ffn_size
from megatron_hope.rope.config import PositionEncodingConfig
from megatron_hope.training import megatron_lm_checkpoint, optimizer_state
from megatron_hope.training.arguments import parse_config
from megatron_hope.training.model_loading import arch_from_metadata
from megatron_hope.training.run_metadata import RunMetadata


@pytest.mark.parametrize("hidden, expected", [(64, 128), (256, 640), (2048, 5440),
                                              (4096, 10880)])
def test_swiglu_default_ffn_is_megatron_lms(hidden, expected):
    # Megatron-LM's validate_args: int((4 * hidden * 2 / 3) / 64) * 64.
    assert megatron_lm_swiglu_ffn_size(hidden) == expected
    arch = ModelArchitecture(hidden_size=hidden, num_attention_heads=4, swiglu=True,
                             position_encoding=PositionEncodingConfig(
                                 "hope", hidden // 4, 10000.0, 256))
    assert arch.ffn_size == expected


def test_swiglu_default_that_rounds_to_nothing_names_the_flag():
    with pytest.raises(ValueError, match="--ffn-hidden-size"):
        ModelArchitecture(hidden_size=16, num_attention_heads=1, swiglu=True,
                          position_encoding=PositionEncodingConfig("rope", 16, 10000.0))


def test_run_metadata_stores_the_resolved_ffn_size_and_reads_older_files():
    encoding = PositionEncodingConfig("hope", 16, 10000.0, 64)
    arch = ModelArchitecture(num_layers=2, hidden_size=64, num_attention_heads=4,
                             seq_length=64, swiglu=True, position_encoding=encoding)
    metadata = RunMetadata.of(arch, 640, "NullTokenizer", None).to_dict()
    assert metadata["arch"]["ffn_hidden_size"] == 128
    assert arch_from_metadata(metadata).ffn_size == 128
    # Written before the size was stored: the default of then (8/3 x hidden rounded up).
    metadata["arch"]["ffn_hidden_size"] = None
    assert arch_from_metadata(metadata).ffn_size == 192


def test_checkpoint_args_carry_what_megatron_lm_reads():
    config = parse_config(["--num-layers", "2", "--hidden-size", "64", "--num-attention-heads",
                           "4", "--seq-length", "64", "--swiglu", "--tokenizer-type",
                           "NullTokenizer", "--vocab-size", "760", "--hope-train-length", "64",
                           "--use-distributed-optimizer"])
    layout = {"tensor_model_parallel_size": 2, "pipeline_model_parallel_size": 1,
              "data_parallel_size": 3}
    args = megatron_lm_checkpoint.checkpoint_args(config, config.arch, 768, layout, 7, 56)
    assert isinstance(args, argparse.Namespace)
    # load_checkpoint: the data position and the layout that decides the RNG restore.
    assert (args.consumed_train_samples, args.iteration) == (56, 7)
    assert (args.tensor_model_parallel_size, args.pipeline_model_parallel_size) == (2, 1)
    assert (args.world_size, args.data_parallel_size) == (6, 3)
    # check_checkpoint_args and --use-checkpoint-args, under Megatron-LM's names and forms.
    assert (args.num_layers, args.hidden_size, args.num_attention_heads) == (2, 64, 4)
    assert (args.ffn_hidden_size, args.kv_channels, args.padded_vocab_size) == (128, 16, 768)
    assert (args.position_embedding_type, args.hope_position_embedding_type) == ("rope", "hope")
    assert args.vocab_size == 760 and args.use_distributed_optimizer
    assert pickle.loads(pickle.dumps(args)) == args  # the common state is pickled


def test_consumed_samples_from_either_loop():
    assert megatron_lm_checkpoint.consumed_train_samples({"consumed_train_samples": 12}) == 12
    megatron_lm = {"args": argparse.Namespace(consumed_train_samples=20)}
    assert megatron_lm_checkpoint.consumed_train_samples(megatron_lm) == 20
    assert megatron_lm_checkpoint.consumed_train_samples({"args": None}) == 0


def test_rng_states_restore_from_megatron_lms_list_and_our_older_dict(single_rank_megatron):
    import random

    import numpy as np

    saved = megatron_lm_checkpoint.rng_state()
    assert set(saved) == {"random_rng_state", "np_rng_state", "torch_rng_state",
                          "cuda_rng_state", "rng_tracker_states"}
    expected = (random.random(), float(np.random.rand()), float(torch.rand(())))
    megatron_lm_checkpoint.restore_rng_state([saved])
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected
    older = {"random": saved["random_rng_state"], "numpy": saved["np_rng_state"],
             "torch": saved["torch_rng_state"], "tracker": saved["rng_tracker_states"]}
    megatron_lm_checkpoint.restore_rng_state(older)
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected


def test_fully_reshardable_optimizer_state_into_torch_adam_names_the_way_out():
    adam = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))])
    optimizer = types.SimpleNamespace(chained_optimizers=[types.SimpleNamespace(optimizer=adam)])
    with pytest.raises(ValueError, match="--no-load-optim"):
        optimizer_state.check_loadable_optimizer_form(
            "ckpt", {"distrib_optim_sharding_type": "fully_reshardable"}, optimizer)
    optimizer_state.check_loadable_optimizer_form(
        "ckpt", {"distrib_optim_sharding_type": "dp_reshardable"}, optimizer)
