"""HF -> Megatron: our exports come back as identical tensors; a plain Llama RoPE model imports
exactly, switches to HoPE, and continues pretraining at TP=2."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from tests.convert import helpers
from tests.distributed import run_on_ranks

transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.distributed


@pytest.mark.parametrize("ckpt,target,extra", [
    ("hope_tp1_gqa_untied", "llama", ["--keep-vocab-padding"]),
    ("hope_tp2_tied", "phi3", []),
], ids=["llama-untied-padded", "phi3-tied"])
def test_mcore_hf_mcore_returns_identical_tensors(checkpoints, tmp_path, ckpt, target, extra):
    [(original, back)] = run_on_ranks(1, helpers.round_trip, checkpoints[ckpt],
                                      str(tmp_path / "hf"), str(tmp_path / "back"),
                                      ["--target", target, *extra])
    assert back["metadata"]["position_encoding"] == original["metadata"]["position_encoding"]
    assert back["metadata"]["padded_vocab_size"] == original["metadata"]["padded_vocab_size"]
    assert sorted(back["tensors"]) == sorted(original["tensors"])
    vocab = original["metadata"]["arch"]["vocab_size"]
    for name, tensor in original["tensors"].items():
        returned = back["tensors"][name]
        if "--keep-vocab-padding" not in extra and name in ("embedding.word_embeddings.weight",
                                                            "output_layer.weight"):
            assert torch.equal(returned[:vocab], tensor[:vocab]), name
            assert not returned[vocab:].any()  # padding rows HF does not keep come back as 0
        else:
            assert torch.equal(returned, tensor), name


@pytest.fixture(scope="module")
def plain_llama(data, tmp_path_factory):
    """A randomly initialised stock Llama (RoPE) with the sample tokenizer; its MLP is the
    --swiglu default of the tiny config that continues it (Megatron-LM's: 128 at hidden 64)."""
    directory = tmp_path_factory.mktemp("plain_llama")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=data["vocab_size"], hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=helpers.SEQ_LENGTH,
        rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=None, eos_token_id=0,
        pad_token_id=1, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        initializer_range=0.2)
    model = transformers.LlamaForCausalLM(config).eval()
    model.save_pretrained(directory)
    shutil.copyfile(data["tokenizer"], directory / "tokenizer.json")
    return directory, model


def test_plain_llama_rope_imports_exactly(plain_llama, tmp_path):
    directory, model = plain_llama
    tokens = torch.randint(2, 600, (1, helpers.SEQ_LENGTH))
    [back] = run_on_ranks(1, helpers.import_and_read, [
        "--load-dir", str(directory), "--save-dir", str(tmp_path / "mc"),
        "--target-tensor-parallel-size", "2"], str(tmp_path / "mc"), tokens)
    assert back["metadata"]["position_encoding"]["position_embedding_type"] == "rope"
    assert back["metadata"]["padded_vocab_size"] == 768  # padded for TP=2
    with torch.no_grad():
        reference = model(tokens).logits
    assert float((back["logits"] - reference).abs().max()) < 1e-4


def test_rope_llama_switches_to_hope_and_continues_at_tp2(plain_llama, data, tmp_path):
    directory, _ = plain_llama
    [back] = run_on_ranks(1, helpers.import_and_read, [
        "--load-dir", str(directory), "--save-dir", str(tmp_path / "mc"),
        "--position-embedding-type", "hope", "--hope-train-length", "64",
        "--target-tensor-parallel-size", "2"], str(tmp_path / "mc"), None)
    run_meta = back["metadata"]
    assert run_meta["position_encoding"]["position_embedding_type"] == "hope"
    assert run_meta["rotated_pairs"] == 3
    losses = run_on_ranks(2, helpers.continue_pretraining, data, str(tmp_path / "mc"), {},
                          {"tensor_model_parallel_size": 2})
    reported = next(r for r in losses if r)
    assert sorted(reported) == [1, 2] and all(math.isfinite(v) for v in reported.values())


def test_import_errors_name_the_problem(plain_llama, tmp_path):
    directory, _ = plain_llama
    broken = tmp_path / "broken"
    shutil.copytree(directory, broken)
    config = json.loads((broken / "config.json").read_text())
    config["intermediate_size"] = 96
    (broken / "config.json").write_text(json.dumps(config))
    argvs = [
        ["--from-hf", "--load-dir", str(broken), "--save-dir", str(tmp_path / "a")],
        ["--from-hf", "--load-dir", str(directory), "--save-dir", str(tmp_path / "b"),
         "--target-tensor-parallel-size", "3"],
        ["--from-hf", "--load-dir", str(tmp_path), "--save-dir", str(tmp_path / "c")],
    ]
    [outcomes] = run_on_ranks(1, helpers.cli_many, argvs)
    messages = ["does not match the weights", "does not divide the heads", "no config.json"]
    for (code, stderr), message in zip(outcomes, messages, strict=True):
        assert code == 2 and message in stderr, stderr
    for name in "abc":
        assert not (tmp_path / name).exists()
