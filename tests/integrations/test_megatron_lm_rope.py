"""A Megatron-LM user's existing RoPE run (its own `pretrain_gpt.py`: no plug-in, no HoPE
flags, no `hope_run.json`) is read by our tools from the `args` in its checkpoint, exports to
plain Llama with its logits, and continues as HoPE under either loop (a model-only load with a
deliberate encoding switch), both loops again giving the same losses.

Megatron-LM's `--rotary-percent` below 1 (RoPE over the head's first int(p d) dims with its
frequencies re-spread over them, b^(-2j/r)) is read as what it is, upstream's block RoPE: it
exports to Phi3 with its rows as they are and to Llama (proportional, base b^(d/r)) with its q/k
rows moved to full-width pairs, both with Megatron's logits.
"""

from __future__ import annotations

import pytest
import torch

from tests.convert import helpers
from tests.distributed import run_on_ranks
from tests.integrations import megatron_lm_runs as runs

transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.megatron_lm

ROPE_ITERS = 3
ROPE = ("--position-embedding-type", "rope")


@pytest.fixture(scope="module")
def rope_run(megatron_lm_folder, golden_data, tmp_path_factory):
    """Megatron-LM's own loop and model, RoPE, from scratch."""
    work = tmp_path_factory.mktemp("megatron_lm_rope")
    flags = runs.model_flags(golden_data["prefix"], ROPE_ITERS, encoding=ROPE)
    result = runs.run_megatron_lm(
        megatron_lm_folder, [*flags, "--save", str(work / "checkpoints"),
                             "--save-interval", str(ROPE_ITERS)], work, upstream=True)
    return {**result, "save": work / "checkpoints"}


def test_checkpoint_reads_as_rope_from_its_megatron_lm_args(rope_run):
    from megatron_hope.training.checkpointing import read_run_metadata

    directory = rope_run["save"] / f"iter_{ROPE_ITERS:07d}"
    assert not (directory / "hope_run.json").exists()  # Megatron-LM's own loop wrote it
    metadata = read_run_metadata(rope_run["save"])
    assert metadata["position_encoding"] == {
        "position_embedding_type": "rope", "kv_channels": 16, "rotary_base": 10000.0,
        "hope_train_length": None, "rope_fraction": None}
    assert metadata["iteration"] == ROPE_ITERS and metadata["arch"]["ffn_hidden_size"] == 128
    assert metadata["layout"]["tensor_model_parallel_size"] == 1


def test_exports_to_plain_llama_with_its_logits(rope_run, golden_data, tmp_path):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    dataset = IndexedDataset(golden_data["prefix"])
    tokens = torch.tensor(dataset[1][: runs.SEQ_LENGTH].astype("int64"))[None]
    del dataset
    job = {"load_dir": str(rope_run["save"]), "save_dir": str(tmp_path / "hf"), "tokens": tokens}
    [results] = run_on_ranks(1, helpers.export_many, {"auto": job})
    result = results["auto"]
    model = transformers.AutoModelForCausalLM.from_pretrained(
        result["save_dir"], dtype=torch.float32).eval()
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.rope_parameters["rope_type"] == "default"
    with torch.no_grad():
        difference = float((model(tokens).logits.float() - result["logits"]).abs().max())
    print(f"Megatron-LM RoPE -> Llama: export check {result['diff']:.2e}, HF logits "
          f"{difference:.2e}")
    assert result["diff"] < 1e-4 and difference < 1e-4


def test_continues_as_hope_under_either_loop(megatron_lm_folder, golden_data, rope_run,
                                            tmp_path):
    """The RoPE weights, loaded model-only into HoPE (`hope-pretrain` allows the switch with
    --no-load-optim): both loops train the same HoPE continuation."""
    flags = [*runs.model_flags(golden_data["prefix"], ROPE_ITERS),
             *runs.from_checkpoint(rope_run["save"])]
    ours = runs.run_hope_pretrain([*flags, "--save", str(tmp_path / "hope")])
    theirs = runs.run_megatron_lm(megatron_lm_folder, flags, tmp_path / "megatron_lm")
    difference = runs.max_relative_difference(theirs["losses"], ours["train"])
    print(f"HoPE from Megatron-LM's RoPE: hope-pretrain {ours['train']}, Megatron-LM "
          f"{theirs['losses']}; max relative difference {difference:.2e}")
    assert difference < 1e-6
    from megatron_hope.training.checkpointing import read_run_metadata

    continued = read_run_metadata(tmp_path / "hope")["position_encoding"]
    assert continued["position_embedding_type"] == "hope"


@pytest.fixture(scope="module")
def rotary_percent_run(megatron_lm_folder, golden_data, tmp_path_factory):
    """Megatron-LM's own loop and model, RoPE over half of each head, two iterations."""
    work = tmp_path_factory.mktemp("megatron_lm_rotary_percent")
    flags = runs.model_flags(golden_data["prefix"], 2, encoding=(*ROPE, "--rotary-percent", "0.5"))
    result = runs.run_megatron_lm(
        megatron_lm_folder, [*flags, "--save", str(work / "checkpoints"), "--save-interval", "2"],
        work, upstream=True)
    return {**result, "save": work / "checkpoints"}


def test_rotary_percent_run_exports_as_what_it_is(rotary_percent_run, golden_data, tmp_path):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    from megatron_hope.training.checkpointing import read_run_metadata

    encoding = read_run_metadata(rotary_percent_run["save"])["position_encoding"]
    assert encoding["position_embedding_type"] == "rope" and encoding["rotary_percent"] == 0.5
    dataset = IndexedDataset(golden_data["prefix"])
    tokens = torch.tensor(dataset[1][: runs.SEQ_LENGTH].astype("int64"))[None]
    del dataset
    jobs = {target: {"load_dir": str(rotary_percent_run["save"]), "target": target,
                     "save_dir": str(tmp_path / target), "tokens": tokens}
            for target in ("auto", "llama")}
    [results] = run_on_ranks(1, helpers.export_many, jobs)
    for target, result in results.items():
        model = transformers.AutoModelForCausalLM.from_pretrained(
            result["save_dir"], dtype=torch.float32).eval()
        expected = "Phi3ForCausalLM" if target == "auto" else "LlamaForCausalLM"
        assert type(model).__name__ == expected
        assert model.model.rotary_emb.inv_freq.numel() == (4 if target == "auto" else 8)
        with torch.no_grad():
            difference = float((model(tokens).logits.float() - result["logits"]).abs().max())
        print(f"Megatron-LM --rotary-percent 0.5 -> {expected}: export check "
              f"{result['diff']:.2e}, HF logits {difference:.2e}")
        assert result["diff"] < 1e-4 and difference < 1e-4
