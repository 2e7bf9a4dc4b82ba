"""The same evaluation on a Megatron checkpoint and on its HF export gives the same numbers.

Needs the Megatron -> HF exporter (`megatron_hope.convert`); skipped with the reason when it is
not importable. Uses the session's tiny trained checkpoint (conftest.py).
"""

from __future__ import annotations

import json

import pytest

from tests.distributed import run_on_ranks

pytestmark = pytest.mark.distributed


def _export_and_evaluate(rank, trained, out):
    try:
        from megatron_hope.convert.export import ExportOptions, export_checkpoint
    except ImportError as err:
        pytest.skip(f"megatron_hope.convert is not importable ({err})")
    from megatron_hope.eval import cli

    export_checkpoint(ExportOptions(load_dir=trained["load"], save_dir=f"{out}/hf",
                                    target="llama", dtype="float32", progress=False))
    common = ["--samples", "3", "--no-progress"]
    codes = []
    for source, flag in (("megatron", "--load"), ("hf", "--hf-model")):
        where = trained["load"] if source == "megatron" else f"{out}/hf"
        for argv in (["copy", "--lengths", "40,100"],
                     ["ppl-vs-length", "--data", trained["data"]["prefix"], "--lengths", "32,96"],
                     ["attention", "--lengths", "48"]):
            codes.append(cli.main([argv[0], flag, where, *common, "--output-dir",
                                   f"{out}/{source}", *argv[1:]]))
    return codes


def test_megatron_and_hf_export_agree(trained, tmp_path):
    [codes] = run_on_ranks(1, _export_and_evaluate, trained, str(tmp_path))
    assert codes == [0] * 6

    def result(source, task):
        return json.loads((tmp_path / source / f"{task}.json").read_text())

    assert result("hf", "copy")["model"]["position_encoding"] == "hope"
    assert result("hf", "copy")["model"]["train_length"] == result("megatron", "copy")["model"][
        "train_length"]
    assert result("hf", "copy")["result"]["scores"] == result("megatron", "copy")["result"][
        "scores"]
    assert result("hf", "ppl_vs_length")["result"]["ppl"] == pytest.approx(
        result("megatron", "ppl_vs_length")["result"]["ppl"], rel=1e-4)
    hf, mc = result("hf", "attention")["result"], result("megatron", "attention")["result"]
    assert hf["bands"] == mc["bands"]
    assert hf["results"][0]["logits"] == pytest.approx(mc["results"][0]["logits"], abs=1e-4)
    assert hf["results"][0]["vaf"] == pytest.approx(mc["results"][0]["vaf"], abs=1e-2)
