"""`hope-eval` end to end on a tiny hope-pretrain checkpoint (2 iterations on the sample corpus):
every subcommand, on-the-fly PI against megatron-core's own interpolation, and the bad inputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.distributed import run_on_ranks
from tests.eval.tiny_checkpoint import TRAIN_LENGTH

pytestmark = pytest.mark.distributed

def _every_subcommand(rank, trained, out):
    from megatron_hope.eval import cli

    common = ["--load", trained["load"], "--samples", "2", "--no-progress"]
    runs = [
        ("plain", ["ppl-vs-length", "--data", trained["data"]["prefix"], "--lengths", "32,96"]),
        ("plain", ["copy", "--lengths", "40,100"]),
        ("plain", ["fewshot", "--lengths", "64,128"]),
        ("plain", ["needle", "--lengths", "200", "--depths", "0.5", "--samples", "1"]),
        ("plain", ["passkey", "--lengths", "64,128", "--depths", "0,1"]),
        ("plain", ["attention", "--lengths", "32,96"]),
        ("plain", ["vaf-over-training", "--iterations", "all", "--lengths", "32"]),
        ("yarn", ["copy", "--lengths", "40,100", "--rope-scaling", "yarn:2"]),
    ]
    codes = []
    for where, argv in runs:
        codes.append(cli.main([argv[0], *common, "--output-dir", f"{out}/{where}", *argv[1:]]))
    codes.append(cli.main(["attention", *common, "--output-dir", f"{out}/bad",
                           "--lengths", "513"]))
    return codes, _scaling_parity(rank, trained["load"])


def _scaling_parity(rank, load):
    import torch

    from megatron_hope.eval.scorers import MegatronScorer
    from megatron_hope.rope.scaling import RopeScaling
    from megatron_hope.training.model_loading import load_model_from_checkpoint

    tokens = torch.randint(1, 500, (2, 150))
    interpolated = load_model_from_checkpoint(load, seq_len_interpolation_factor=2.0)
    expected = interpolated.logits(tokens).cpu()
    ours = MegatronScorer.load(load, RopeScaling("linear", 2.0))
    plain = MegatronScorer.load(load)
    captured, layers = plain.capture_qk(tokens[:, :40])
    yarn = MegatronScorer.load(load, RopeScaling("yarn", 2.0))
    _, yarn_layers = yarn.capture_qk(tokens[:, :40])
    return {
        "max_diff": float((ours.logits(tokens).cpu() - expected).abs().max()),
        "capture_diff": float((captured - plain.logits(tokens[:, :40])).abs().max()),
        "shape": list(layers[0].query.shape), "layers": len(layers),
        "scales": (layers[0].scale, yarn_layers[0].scale),
        "inv_freq": plain.inv_freq.tolist(), "rotated": int((plain.inv_freq != 0).sum()),
    }


def test_every_subcommand_writes_results_and_refuses_overlong_inputs(trained, tmp_path):
    [(codes, parity)] = run_on_ranks(1, _every_subcommand, trained, str(tmp_path))
    assert codes == [0] * 8 + [2]
    plain = tmp_path / "plain"
    for name in ("ppl_vs_length", "copy", "fewshot", "needle", "passkey", "attention",
                 "vaf_over_training"):
        payload = json.loads((plain / f"{name}.json").read_text())
        assert payload["model"]["position_encoding"] == "hope"
        assert payload["model"]["train_length"] == TRAIN_LENGTH
    for png in ("ppl_vs_length", "copy", "fewshot", "needle", "passkey", "attention_32",
                "attention_96",
                "attention_vaf"):
        assert (plain / f"{png}.png").stat().st_size > 0, png
    attention = json.loads((plain / "attention.json").read_text())["result"]
    # d = 16, b = 1e4, L = 64: pairs 0-2 rotate (θ ≥ 2π/64), 3-7 are low (θ ≤ π/64), as
    # `hope-rope --kv-channels 16 --hope-train-length 64` reports.
    assert attention["bands"] == ["high"] * 3 + ["independent"] * 5  # zeroed by HoPE
    assert attention["band_length"] == TRAIN_LENGTH
    assert len(attention["results"][0]["layer_components"]["0"]) == 8
    assert attention["theta"][3:] == [0.0] * 5
    assert len(attention["results"][0]["vaf"]) == 8
    copy = json.loads((plain / "copy.json").read_text())["result"]
    assert all(0.0 <= score <= 100.0 for score in copy["scores"])
    yarn = json.loads((tmp_path / "yarn" / "copy.json").read_text())["model"]
    assert yarn["label"] == "hope+YaRN F=2" and yarn["max_length"] == 2 * 8 * TRAIN_LENGTH
    from megatron_hope.eval import cli

    assert cli.main(["report", str(tmp_path / "plain"), str(tmp_path / "yarn"),
                     "--output-dir", str(tmp_path / "report")]) == 0
    text = (tmp_path / "report" / "report.md").read_text()
    assert "| hope |" in text and "| hope+YaRN F=2 |" in text and "## Table 3" in text
    assert "## VAF over training" in text and "| hope | 2 |" in text
    assert "## Table 2" not in text and "synthetic task (not a paper table)" in text
    assert "Avg." not in text.split("(Figure 5)")[1].split("\n## ")[0]  # the paper has none
    # On-the-fly PI equals megatron-core's own seq_len_interpolation_factor; capturing q/k
    # changes nothing; YaRN's temperature reaches the softmax scale.
    assert parity["max_diff"] < 1e-4
    assert parity["capture_diff"] == 0.0
    assert parity["shape"] == [2, 4, 40, 16] and parity["layers"] == 2
    plain_scale, yarn_scale = parity["scales"]
    assert plain_scale == pytest.approx(16**-0.5)
    assert yarn_scale == pytest.approx(plain_scale * (0.1 * math.log(2) + 1) ** 2)
    assert parity["rotated"] == 3




def test_bad_paths_are_named(tmp_path, capsys):
    from megatron_hope.eval import cli

    missing = tmp_path / "no-such-checkpoint"
    assert cli.main(["copy", "--load", str(missing), "--output-dir", str(tmp_path)]) == 2
    assert f"--load {missing}: no such checkpoint directory" in capsys.readouterr().err
    assert cli.main(["ppl-vs-length", "--load", str(missing), "--data", str(tmp_path / "x"),
                     "--output-dir", str(tmp_path)]) == 2
    assert f"--data {tmp_path / 'x'}: no such file" in capsys.readouterr().err
    odd = tmp_path / "tasks.xml"
    odd.write_text("<x/>")
    assert cli.main(["fewshot", "--load", str(missing), "--task-file", str(odd),
                     "--output-dir", str(tmp_path)]) == 2
    assert "tasks.xml: unknown format '.xml'" in capsys.readouterr().err
    assert cli.main(["copy", "--load", str(missing), "--rope-scaling", "ntk:2",
                     "--output-dir", str(tmp_path)]) == 2
    assert "--rope-scaling 'ntk:2': unsupported" in capsys.readouterr().err
    assert Path(tmp_path).is_dir()
