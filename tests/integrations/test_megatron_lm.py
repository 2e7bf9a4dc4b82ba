"""Megatron-LM's own loop (`pretrain()` of the tag paired with the installed megatron-core,
unpacked from ../shared/megatron-lm) trains HoPE through `tools/pretrain_hope_gpt.py`.

Megatron-LM runs in a subprocess under `megatron_lm_cpu_execution` (non-strict: its loop
all-reduces host tensors on gloo groups); the run is the session's `megatron_lm_run`
(`conftest.py`), shared with the parity, resume and conversion tests.

    PYTHONPATH=. python -m pytest tests/integrations -q -m megatron_lm
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from megatron_hope.integrations import launcher
from megatron_hope.integrations.megatron_lm import megatron_lm_argv
from tests.distributed import run_on_ranks
from tests.integrations import megatron_lm_runs as runs
from tests.integrations.megatron_lm_runs import SEQ_LENGTH, TRAIN_ITERS

pytestmark = pytest.mark.megatron_lm


def test_position_flags_reach_megatron_lm_as_rope_plus_hope_type():
    assert megatron_lm_argv(["--lr", "1"]) == [
        "--lr", "1", "--position-embedding-type", "rope", "--hope-position-embedding-type",
        "hope"]
    assert megatron_lm_argv(["--position-embedding-type=none"])[-3:] == [
        "none", "--hope-position-embedding-type", "none"]
    assert megatron_lm_argv(["--position-embedding-type", "learned_absolute"]) == [
        "--position-embedding-type", "learned_absolute"]
    # RoPE over part of the head is Megatron-LM's own model.
    assert megatron_lm_argv(["--position-embedding-type", "rope", "--rotary-percent", "0.5"]) == [
        "--rotary-percent", "0.5", "--position-embedding-type", "rope"]


def test_megatron_lms_own_encodings_read_as_ours_or_are_named():
    import argparse

    from megatron_hope.integrations.megatron_lm import checkpoint_position_encoding

    args = argparse.Namespace(position_embedding_type="rope", rotary_percent=1.0, kv_channels=None,
                              hidden_size=64, num_attention_heads=4, rotary_base=10000)
    assert checkpoint_position_encoding(args).to_dict()["position_embedding_type"] == "rope"
    args.rotary_percent = 0.5  # Megatron-LM's block RoPE: upstream's module, read as it is
    encoding = checkpoint_position_encoding(args)
    assert encoding.rotary_block and encoding.rotary_percent == 0.5
    args.use_rope_scaling = True
    with pytest.raises(ValueError, match=r"--use-rope-scaling"):
        checkpoint_position_encoding(args)
    args.use_rope_scaling = False
    args.position_embedding_type, args.rotary_percent = "learned_absolute", 1.0
    with pytest.raises(ValueError, match="learned_absolute"):
        checkpoint_position_encoding(args)


def test_a_megatron_lm_that_builds_its_model_another_way_is_named():
    """`built_as` swaps the class a builder instantiates; a builder that reaches its model
    class by another name would build upstream's model: an error, never a silent RoPE run."""
    import types

    from megatron_hope.integrations.megatron_lm import built_as
    from megatron_hope.megatron.model import HopeGPTModel
    from megatron_hope.rope.config import PositionEncodingConfig

    encoding = PositionEncodingConfig("hope", 16, 10000.0, SEQ_LENGTH)
    builders = types.SimpleNamespace(__name__="gpt_builders", GPTModel=dict)
    with pytest.raises(ValueError, match="gpt_builders built dict, not HopeGPTModel"):
        built_as(HopeGPTModel, encoding, builders, "GPTModel", dict)  # not through the name
    assert builders.GPTModel is dict  # restored
    with pytest.raises(ValueError, match="gpt_builders has no GPTModel"):
        built_as(HopeGPTModel, encoding, types.SimpleNamespace(__name__="gpt_builders"),
                 "GPTModel", dict)


def test_launcher_names_the_dataset_helpers_makefile_pypi_lacks(megatron_lm_folder, capsys):
    """Outside the CPU shim (a GPU run), Megatron-LM's rank 0 runs `make -C` in megatron-core's
    datasets folder: a wheel without the Makefile is named before the job starts."""
    from pathlib import Path

    from megatron.core.datasets import utils

    datasets = Path(utils.__file__).resolve().parent
    if (datasets / "Makefile").is_file():
        pytest.skip(f"this megatron-core has its Makefile ({datasets})")
    assert launcher.main(["--megatron-lm-path", str(megatron_lm_folder),
                          "--train-iters", "1"]) == 2
    message = capsys.readouterr().err
    assert f"{datasets} holds megatron-core's compiled dataset helpers but no Makefile" in message
    assert "megatron/core/datasets/Makefile" in message, message


def test_launcher_help_is_its_own(capsys):
    """Megatron-LM's core_v0.19.0 parser raises printing its own help: ours needs no checkout."""
    assert launcher.main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "--megatron-lm-path" in text and "--hope-train-length" in text, text


def test_launcher_says_how_to_get_megatron_lm(monkeypatch, capsys):
    monkeypatch.delenv(launcher.ENV_VAR, raising=False)
    assert launcher.main(["--train-iters", "1"]) == 2
    message = capsys.readouterr().err
    assert "git clone" in message and "--megatron-lm-path" in message, message


def test_megatron_lm_loop_trains_hope(megatron_lm_run):
    losses = megatron_lm_run["losses"]
    assert sorted(losses) == list(range(1, TRAIN_ITERS + 1)), megatron_lm_run["output"][-3000:]
    assert all(math.isfinite(loss) for loss in losses.values())
    assert losses[TRAIN_ITERS] < losses[1]


def _loaded_rotary(rank, save):
    from megatron_hope.training.model_loading import load_model_from_checkpoint

    loaded = load_model_from_checkpoint(save)
    logits = loaded.logits(torch.arange(SEQ_LENGTH).remainder(loaded.vocab_size)[None])
    return {"inv_freq": loaded.model.rotary_pos_emb.inv_freq.cpu().tolist(),
            "finite": bool(torch.isfinite(logits).all())}


def test_checkpoint_carries_hope_settings_for_our_tools(megatron_lm_run):
    from megatron_hope.rope.config import PositionEncodingConfig

    directory = megatron_lm_run["save"] / f"iter_{TRAIN_ITERS:07d}"
    metadata = json.loads((directory / "hope_run.json").read_text())
    expected = PositionEncodingConfig("hope", 16, 10000.0, SEQ_LENGTH)
    assert metadata["position_encoding"] == expected.to_dict()
    assert metadata["layout"]["tensor_model_parallel_size"] == 1
    assert metadata["arch"]["ffn_hidden_size"] == 128  # Megatron-LM's --swiglu default
    # Megatron-LM's --vocab-size, under the name our tokenizer flags read it by.
    assert metadata["args"]["tokenizer_vocab_size"] == runs.VOCAB_SIZE
    # In a fresh process: loading initialises megatron-core's parallel state.
    [loaded] = run_on_ranks(1, _loaded_rotary, str(megatron_lm_run["save"]))
    assert loaded["inv_freq"] == expected.inv_freq().tolist()
    assert loaded["finite"]
