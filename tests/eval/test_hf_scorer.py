"""HFScorer on a tiny random Llama saved locally (no hub): capture, on-the-fly PI against HF's own
linear RoPE, and every subcommand through `hope-eval --hf-model`."""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from megatron_hope.eval import cli  # noqa: E402
from megatron_hope.eval.attention import pair_components  # noqa: E402
from megatron_hope.eval.hf_scorer import HFScorer  # noqa: E402
from megatron_hope.rope.scaling import RopeScaling  # noqa: E402

TRAIN_LENGTH = 64
TEXT = ("Review:the film was good and bright\nAnswer:1\nThe grass is green. The sky is blue. "
        "The pass key is 12345. Remember it. What is the pass key? This is a meaningless "
        "sentence, used only to fill the prompt length. Question: Sentence: Premise: ") * 4


def _config(**rope):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                       max_position_embeddings=TRAIN_LENGTH,
                       rope_parameters={"rope_type": "default", "rope_theta": 10000.0, **rope})


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

    directory = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    LlamaForCausalLM(_config()).save_pretrained(directory)
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.train_from_iterator([TEXT], trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    from tokenizers import decoders

    backend.decoder = decoders.ByteLevel()
    PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>",
                            unk_token="<unk>").save_pretrained(directory)
    return directory


def test_capture_matches_logits_and_keeps_outputs(hf_dir):
    scorer = HFScorer.load(hf_dir)
    assert scorer.train_length == TRAIN_LENGTH and scorer.position_encoding == "rope"
    assert scorer.tokenizer is not None and scorer.tokenizer.eod_id is not None
    tokens = torch.randint(2, 300, (2, 20))
    plain = scorer.logits(tokens)
    captured, layers = scorer.capture_qk(tokens)
    torch.testing.assert_close(captured, plain)
    assert len(layers) == 2
    assert layers[0].query.shape == layers[0].key.shape == (2, 4, 20, 8)  # GQA keys repeated
    parts = pair_components(layers[0].query[:, :, -1], layers[0].key, layers[0].scale)
    torch.testing.assert_close(parts.sum(2), layers[0].scale * torch.einsum(
        "bhd,bhsd->bhs", layers[0].query[:, :, -1], layers[0].key))


@pytest.mark.parametrize("kind", ["linear", "yarn"])
def test_on_the_fly_scaling_matches_hf_own_rope_types(hf_dir, tmp_path, kind):
    from transformers import LlamaForCausalLM

    reference = LlamaForCausalLM.from_pretrained(hf_dir)
    reference.config.rope_parameters = {"rope_type": kind, "factor": 2.0, "rope_theta": 10000.0}
    if kind == "yarn":
        reference.config.rope_parameters["original_max_position_embeddings"] = TRAIN_LENGTH
    reference.save_pretrained(tmp_path)
    reference = LlamaForCausalLM.from_pretrained(tmp_path).eval()
    ours = HFScorer.load(hf_dir, scaling=RopeScaling(kind, 2.0))
    tokens = torch.randint(2, 300, (1, 96))
    with torch.no_grad():
        expected = reference(input_ids=tokens).logits
    torch.testing.assert_close(ours.logits(tokens), expected, rtol=1e-5, atol=1e-5)


def test_every_subcommand_on_an_hf_model(hf_dir, tmp_path, capsys):
    data = tmp_path / "heldout.jsonl"
    data.write_text("".join(json.dumps({"text": TEXT}) + "\n" for _ in range(3)))
    common = ["--hf-model", str(hf_dir), "--samples", "2", "--no-progress"]
    out = tmp_path / "hf"
    runs = [
        ["ppl-vs-length", "--data", str(data), "--lengths", "16,40"],
        ["copy", "--counts", "1,3"],
        ["fewshot", "--lengths", "40,80"],
        ["needle", "--lengths", "300", "--depths", "0.5", "--samples", "1"],
        ["attention", "--lengths", "16,40"],
        ["copy", "--counts", "1,3", "--rope-scaling", "yarn:2", "--label", "rope+YaRN"],
    ]
    for index, argv in enumerate(runs):
        target = out / ("yarn" if index == 5 else "plain")
        assert cli.main([argv[0], *common, "--output-dir", str(target), *argv[1:]]) == 0, argv
    for name in ("ppl_vs_length", "copy", "fewshot", "needle", "attention"):
        assert (out / "plain" / f"{name}.json").is_file(), name
        assert (out / "plain" / f"{name}.csv").is_file() or name == "attention"
    assert (out / "plain" / "needle.png").stat().st_size > 0
    assert (out / "plain" / "attention_40.png").stat().st_size > 0
    attention = json.loads((out / "plain" / "attention.json").read_text())["result"]
    first = attention["results"][0]
    assert len(first["vaf"]) == 4 and attention["bands"][0] == "high"
    summed = torch.tensor(first["components"]).sum(0)
    torch.testing.assert_close(summed, torch.tensor(first["logits"]))
    assert cli.main(["report", str(out), "--output-dir", str(tmp_path / "report")]) == 0
    text = (tmp_path / "report" / "report.md").read_text()
    assert "| rope+YaRN F=2 |" in text and "synthetic task (not a paper table)" in text
    capsys.readouterr()
    # Beyond 8 x 64 tokens without scaling: refused, naming the length and the limit.
    assert cli.main(["attention", *common, "--output-dir", str(tmp_path / "x"),
                     "--lengths", "513"]) == 2
    assert "input length 513 is beyond" in capsys.readouterr().err
    assert cli.main(["copy", "--hf-model", str(tmp_path / "nope"), "--output-dir",
                     str(tmp_path / "x")]) == 2
    assert "no config.json" in capsys.readouterr().err
