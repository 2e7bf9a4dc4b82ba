"""Megatron -> HF: stock transformers computes what the Megatron model computes.

Tiny checkpoints (2 layers, hidden 64, d = 16, L = 64: HoPE rotates 3 of 8 pairs) at TP=1, TP=2
and PP=2, with GQA and MHA, tied and untied embeddings, exported to both targets.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.convert import helpers
from tests.distributed import run_on_ranks

transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.distributed

TOLERANCE = 1e-4
PLAIN = [(ckpt, target) for ckpt in helpers.CHECKPOINTS for target in ("llama", "phi3")]


@pytest.fixture(scope="module")
def exports(checkpoints, tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    # The export's own verification runs on the first checkpoint and the scaled exports; every
    # export is compared with the Megatron logits independently below.
    jobs = {f"{ckpt}-{target}": {"load_dir": checkpoints[ckpt], "target": target,
                                  "save_dir": str(root / f"{ckpt}-{target}"),
                                  "verify": ckpt == "hope_tp1_gqa_untied"}
            for ckpt, target in PLAIN}
    for target in ("llama", "phi3"):
        jobs[f"linear-{target}"] = {"load_dir": checkpoints["hope_tp1_gqa_untied"],
                                    "save_dir": str(root / f"linear-{target}"), "target": target,
                                    "rope_scaling": "linear:2", "max_shard_size": "100KB"}
    jobs["bf16-llama"] = {"load_dir": checkpoints["hope_tp1_gqa_untied"], "target": "llama",
                          "save_dir": str(root / "bf16-llama"), "dtype": "bfloat16"}
    [results] = run_on_ranks(1, helpers.export_many, jobs)
    return results


def load_hf(path):
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return model.eval()


@pytest.mark.parametrize("ckpt,target", PLAIN, ids=[f"{c}-{t}" for c, t in PLAIN])
def test_hf_logits_equal_megatron_logits(exports, ckpt, target):
    result = exports[f"{ckpt}-{target}"]
    if result["diff"] is not None:
        assert result["diff"] < TOLERANCE  # the export's own verification
    model = load_hf(result["save_dir"])
    with torch.no_grad():
        logits = model(result["tokens"]).logits.float()
    reference = result["logits"]
    assert logits.shape == reference.shape
    assert float((logits - reference).abs().max()) < TOLERANCE
    expected = "LlamaForCausalLM" if target == "llama" else "Phi3ForCausalLM"
    assert type(model).__name__ == expected


@pytest.mark.parametrize("ckpt,target", PLAIN, ids=[f"{c}-{t}" for c, t in PLAIN])
def test_loaded_inv_freq_is_the_papers(exports, checkpoints, ckpt, target):
    from megatron_hope.rope.config import PositionEncodingConfig
    from megatron_hope.training.checkpointing import read_run_metadata

    encoding = PositionEncodingConfig.from_dict(
        read_run_metadata(checkpoints[ckpt])["position_encoding"])
    ours = encoding.inv_freq().double()
    rotated = encoding.rotated_pairs
    model = load_hf(exports[f"{ckpt}-{target}"]["save_dir"])
    inv = model.model.rotary_emb.inv_freq.double()
    if target == "llama":
        assert inv.numel() == ours.numel() and int((inv != 0).sum()) == rotated
        assert torch.allclose(inv, ours, rtol=1e-6, atol=0)
    else:
        assert inv.numel() == rotated
        assert torch.allclose(inv, ours[:rotated], rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", ["hope_tp1_gqa_untied-llama", "hope_tp2_tied-phi3"])
def test_greedy_generate_with_and_without_cache_agree(exports, name):
    model = load_hf(exports[name]["save_dir"])
    prompt = exports[name]["tokens"][:, :16]
    with torch.no_grad():
        cached = model.generate(prompt, max_new_tokens=12, do_sample=False, use_cache=True)
        uncached = model.generate(prompt, max_new_tokens=12, do_sample=False, use_cache=False)
    assert cached.shape[1] > prompt.shape[1]
    assert torch.equal(cached, uncached)


def test_linear_scaling_export_matches_megatron_interpolation(exports):
    for target in ("llama", "phi3"):
        scaled = exports[f"linear-{target}"]
        assert scaled["diff"] < TOLERANCE  # verified against Megatron's seq_len_interpolation
        plain = load_hf(exports[f"hope_tp1_gqa_untied-{target}"]["save_dir"])
        with torch.no_grad():
            unscaled = plain(scaled["tokens"]).logits
            logits = load_hf(scaled["save_dir"])(scaled["tokens"]).logits
        assert float((logits - unscaled).abs().max()) > 1e-3  # the scaling is in effect


def test_directory_is_a_complete_hf_checkpoint(exports, data):
    from safetensors import safe_open
    from tokenizers import Tokenizer

    directory = Path(exports["linear-phi3"]["save_dir"])  # 100KB shards: several files
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 1 and files == sorted(p.name for p in directory.glob("model-*.safetensors"))
    total = 0
    for file in files:
        with safe_open(str(directory / file), "pt") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open is not iterable
                assert index["weight_map"][key] == file
                tensor = handle.get_tensor(key)
                total += tensor.numel() * tensor.element_size()
    assert total == index["metadata"]["total_size"]
    config = json.loads((directory / "config.json").read_text())
    assert config["rope_parameters"]["rope_type"] == "longrope"
    assert config["rope_theta"] == config["rope_parameters"]["rope_theta"]
    assert config["partial_rotary_factor"] == config["rope_parameters"]["partial_rotary_factor"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory))
    text = "def main():\n    return 0\n"
    assert tokenizer(text)["input_ids"] == Tokenizer.from_file(data["tokenizer"]).encode(text).ids
    assert tokenizer.eos_token == "<|endoftext|>" and tokenizer.pad_token == "<|pad|>"
    generation = transformers.GenerationConfig.from_pretrained(str(directory))
    assert generation.eos_token_id == tokenizer.eos_token_id
    assert not list(directory.parent.glob(".*incomplete*"))


def _bad_cases(checkpoints, root: Path):
    good = checkpoints["hope_tp1_gqa_untied"]

    def broken(name, damage):
        import shutil

        copy = root / name
        shutil.copytree(good, copy)
        damage(copy)
        return str(copy)

    def drop_shard(path):
        shard = sorted((path / "iter_0000002").glob("*.distcp"))[0]
        shard.unlink()

    def wrong_hidden(path):
        meta = path / "iter_0000002" / "hope_run.json"
        values = json.loads(meta.read_text())
        values["arch"]["ffn_hidden_size"] = 256
        meta.write_text(json.dumps(values))

    return [
        # (argv, expected message, output path)
        (["--load-dir", broken("no_tracker", lambda p: (p / "latest_checkpointed_iteration.txt")
                                .unlink())], "latest_checkpointed_iteration.txt"),
        (["--load-dir", broken("missing_shard", drop_shard)], "shard file(s) __"),
        (["--load-dir", broken("mismatch", wrong_hidden)], "do not match the weights"),
        (["--load-dir", good, "--target", "gpt2"], "--target 'gpt2' is not supported"),
        (["--load-dir", good, "--rope-scaling", "dynamic:2"], "--rope-scaling 'dynamic:2'"),
        (["--load-dir", good, "--target", "llama", "--rope-scaling", "yarn:4"], "has no YaRN"),
        (["--load-dir", good, "--tolerance", "0"], "verification failed"),
    ]


def test_bad_input_is_a_clear_error_and_leaves_nothing(checkpoints, tmp_path):
    cases = _bad_cases(checkpoints, tmp_path)
    outputs = [tmp_path / f"out{i}" for i in range(len(cases))]
    argvs = [[*argv, "--save-dir", str(out)] for (argv, _), out in zip(cases, outputs, strict=True)]
    [outcomes] = run_on_ranks(1, helpers.cli_many, argvs)
    for (argv, message), out, (code, stderr) in zip(cases, outputs, outcomes, strict=True):
        assert code == 2, (argv, stderr)
        assert "hope-convert: error:" in stderr and message in stderr, (argv, stderr)
        assert not out.exists(), argv
    assert not list(tmp_path.glob(".*incomplete*"))


LM_EVAL_TASK = """task: hope_convert_smoke
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{prompt}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
"""


def test_lm_eval_runs_offline_on_the_export(exports, tmp_path):
    """`lm_eval --model hf` on the export with a local task file (no hub access)."""
    import importlib.util
    import os
    import subprocess
    import sys

    if importlib.util.find_spec("lm_eval") is None:
        pytest.skip("lm_eval is not installed (pip install 'lm_eval[hf]==0.4.13')")
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"prompt": f"def f{i}():\n    return", "choices":
                                        [" 0\n", " None\n"], "answer": i % 2}) + "\n"
                            for i in range(4)))
    task_dir = tmp_path / "tasks"
    task_dir.mkdir()
    (task_dir / "smoke.yaml").write_text(LM_EVAL_TASK.format(data=docs))
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    model = exports["hope_tp1_gqa_untied-llama"]["save_dir"]
    out = subprocess.run(
        [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args",
         f"pretrained={model},max_length=64,dtype=float32", "--include_path", str(task_dir),
         "--tasks", "hope_convert_smoke", "--device", "cpu", "--batch_size", "2",
         "--output_path", str(tmp_path / "results")],
        capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "hope_convert_smoke" in out.stdout and "acc" in out.stdout


def test_bfloat16_export_is_verified_at_its_precision(exports):
    from safetensors import safe_open

    result = exports["bf16-llama"]
    assert result["diff"] is not None and result["diff"] < 0.1
    shard = next(Path(result["save_dir"]).glob("model-*.safetensors"))
    with safe_open(str(shard), "pt") as handle:
        assert handle.get_tensor("model.norm.weight").dtype == torch.bfloat16


def _attention_of_each(rank, sources, out):
    from megatron_hope.eval import cli

    return [cli.main(["attention", flag, where, "--samples", "3", "--lengths", "48",
                      "--no-progress", "--output-dir", f"{out}/{name}"])
            for name, (flag, where) in sources.items()]


def test_rotary_percent_attention_analysis_agrees_across_layouts(exports, checkpoints, tmp_path):
    """Megatron-LM's block RoPE seen three ways: the Megatron checkpoint (upstream's block
    module), its Phi3 export (the same block) and its Llama export (rows moved to full-width
    pairs). `hope-eval attention` puts each into the analysis' full-width pairs: the same bands,
    logits and eq. 5 VAF."""
    sources = {"megatron": ("--load", checkpoints["rotary_percent_tp1"])}
    for target in ("phi3", "llama"):
        sources[target] = ("--hf-model", exports[f"rotary_percent_tp1-{target}"]["save_dir"])
    [codes] = run_on_ranks(1, _attention_of_each, sources, str(tmp_path))
    assert codes == [0, 0, 0]
    results = {name: json.loads((tmp_path / name / "attention.json").read_text())["result"]
               for name in sources}
    reference = results["megatron"]
    assert reference["bands"].count("independent") == 3  # 5 of 8 pairs rotate
    for name in ("phi3", "llama"):
        assert results[name]["bands"] == reference["bands"], name
        first, want = results[name]["results"][0], reference["results"][0]
        assert first["logits"] == pytest.approx(want["logits"], abs=1e-4), name
        assert first["vaf"] == pytest.approx(want["vaf"], abs=1e-2), name
