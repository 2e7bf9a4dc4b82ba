"""Megatron-LM's own loop (`pretrain()` of the tag paired with the installed megatron-core,
unpacked from ../shared/megatron-lm) trains HoPE through `tools/pretrain_hope_gpt.py`.

Megatron-LM runs in a subprocess under `megatron_lm_cpu_execution` (non-strict: its loop
all-reduces host tensors on gloo groups), on `.bin/.idx` written by `hope-preprocess`.

    PYTHONPATH=. python -m pytest tests/integrations -q -m megatron_lm
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys

import pytest
import torch

from megatron_hope.integrations import launcher
from megatron_hope.integrations.megatron_lm import megatron_lm_argv
from tests.data import megatron_lm
from tests.distributed import run_on_ranks

pytestmark = pytest.mark.megatron_lm

TRAIN_ITERS = 4
SEQ_LENGTH = 64
LOSS_LINE = re.compile(r"iteration\s+(\d+)/\s*\d+ \|.*?lm loss: ([0-9.E+-]+)")


def test_position_flags_reach_megatron_lm_as_rope_plus_hope_type():
    assert megatron_lm_argv(["--lr", "1"]) == [
        "--lr", "1", "--position-embedding-type", "rope", "--hope-position-embedding-type",
        "hope"]
    assert megatron_lm_argv(["--position-embedding-type=none"])[-3:] == [
        "none", "--hope-position-embedding-type", "none"]
    assert megatron_lm_argv(["--position-embedding-type", "learned_absolute"]) == [
        "--position-embedding-type", "learned_absolute"]


def test_launcher_says_how_to_get_megatron_lm(monkeypatch, capsys):
    monkeypatch.delenv(launcher.ENV_VAR, raising=False)
    assert launcher.main(["--train-iters", "1"]) == 2
    message = capsys.readouterr().err
    assert "git clone" in message and "--megatron-lm-path" in message, message


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = megatron_lm.unpack_tool_or_skip()
    from megatron_hope.data.sample_data import prepare_sample_data

    work = tmp_path_factory.mktemp("megatron_lm_loop")
    sample = prepare_sample_data(work / "data", vocab_size=600, max_bytes=300_000)
    save = work / "checkpoints"
    flags = [
        "--megatron-lm-path", str(folder),
        # What Megatron-LM needs on CPU (see /work/shared/megatron-lm/README.md).
        "--distributed-backend", "gloo", "--use-cpu-initialization", "--transformer-impl",
        "local", "--no-gradient-accumulation-fusion", "--no-rope-fusion",
        "--no-masked-softmax-fusion", "--no-bias-gelu-fusion", "--no-bias-dropout-fusion",
        "--no-persist-layer-norm",
        "--num-layers", "2", "--hidden-size", "64", "--num-attention-heads", "4",
        "--seq-length", str(SEQ_LENGTH), "--max-position-embeddings", str(SEQ_LENGTH),
        "--hidden-dropout", "0", "--attention-dropout", "0",
        "--micro-batch-size", "2", "--global-batch-size", "4", "--train-iters",
        str(TRAIN_ITERS), "--lr", "3e-3", "--min-lr", "3e-4", "--lr-warmup-iters", "1",
        "--lr-decay-style", "cosine", "--eval-iters", "0", "--eval-interval", "100",
        "--log-interval", "1", "--data-path", str(sample.data_prefix), "--split", "90,10,0",
        # The ids are below 600 (the sample's BPE); Megatron-LM's HF tokenizer wants a folder.
        "--tokenizer-type", "NullTokenizer", "--vocab-size", "600",
        "--save", str(save), "--save-interval", str(TRAIN_ITERS), "--ckpt-format", "torch_dist",
        "--position-embedding-type", "hope", "--hope-train-length", str(SEQ_LENGTH),
    ]
    paths = [str(megatron_lm.REPOSITORY), str(folder), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, paths)),
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(29500 + os.getpid() % 1000),
           "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, "-m", "tests.integrations.megatron_lm_driver", *flags],
        cwd=work, env=env, capture_output=True, text=True, timeout=400,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    losses = {int(i): float(loss) for i, loss in LOSS_LINE.findall(output)}
    print(f"Megatron-LM {megatron_lm.archive_tag()} pretrain() HoPE losses: {losses}")
    return {"losses": losses, "save": save, "output": output}


def test_megatron_lm_loop_trains_hope(trained):
    losses = trained["losses"]
    assert sorted(losses) == list(range(1, TRAIN_ITERS + 1)), trained["output"][-3000:]
    assert all(math.isfinite(loss) for loss in losses.values())
    assert losses[TRAIN_ITERS] < losses[1]


def _loaded_rotary(rank, save):
    from megatron_hope.training.model_loading import load_model_from_checkpoint

    loaded = load_model_from_checkpoint(save)
    logits = loaded.logits(torch.arange(SEQ_LENGTH).remainder(loaded.vocab_size)[None])
    return {"inv_freq": loaded.model.rotary_pos_emb.inv_freq.cpu().tolist(),
            "finite": bool(torch.isfinite(logits).all())}


def test_checkpoint_carries_hope_settings_for_our_tools(trained):
    from megatron_hope.rope.config import PositionEncodingConfig

    directory = trained["save"] / f"iter_{TRAIN_ITERS:07d}"
    metadata = json.loads((directory / "hope_run.json").read_text())
    expected = PositionEncodingConfig("hope", 16, 10000.0, SEQ_LENGTH)
    assert metadata["position_encoding"] == expected.to_dict()
    assert metadata["layout"]["tensor_model_parallel_size"] == 1
    # In a fresh process: loading initialises megatron-core's parallel state.
    [loaded] = run_on_ranks(1, _loaded_rotary, str(trained["save"]))
    assert loaded["inv_freq"] == expected.inv_freq().tolist()
    assert loaded["finite"]
