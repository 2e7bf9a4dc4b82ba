"""The checkpoint Megatron-LM's own loop saved (`megatron_lm_run`: HoPE, SwiGLU, RMSNorm, no
linear biases) becomes, through `hope-convert`, a HuggingFace model whose logits are the
Megatron model's, on both export targets."""

from __future__ import annotations

import pytest
import torch

from tests.convert import helpers
from tests.distributed import run_on_ranks
from tests.integrations import megatron_lm_runs as runs

transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.megatron_lm

TOLERANCE = 1e-4
"""fp32, as tests/convert (measured: ~2e-7)."""
TARGETS = ("phi3", "llama")


@pytest.fixture(scope="module")
def exports(megatron_lm_run, golden_data, tmp_path_factory):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    # Real data: the first document's first tokens (the NullTokenizer run has no text), copied
    # while the memory map is open.
    dataset = IndexedDataset(golden_data["prefix"])
    tokens = torch.tensor(dataset[0][: runs.SEQ_LENGTH].astype("int64"))[None]
    del dataset
    root = tmp_path_factory.mktemp("megatron_lm_hf")
    jobs = {target: {"load_dir": str(megatron_lm_run["save"]), "target": target,
                     "save_dir": str(root / target), "tokens": tokens} for target in TARGETS}
    [results] = run_on_ranks(1, helpers.export_many, jobs)
    return results


@pytest.mark.parametrize("target", TARGETS)
def test_megatron_lm_checkpoint_exports_with_its_logits(exports, target):
    result = exports[target]
    assert result["diff"] is not None and result["diff"] < TOLERANCE  # the export's own check
    model = transformers.AutoModelForCausalLM.from_pretrained(
        result["save_dir"], dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(result["tokens"]).logits.float()
    reference = result["logits"]
    assert logits.shape == reference.shape
    difference = float((logits - reference).abs().max())
    print(f"{target}: export check {result['diff']:.2e}, HF vs Megatron logits {difference:.2e}")
    assert difference < TOLERANCE
    assert type(model).__name__ == {"phi3": "Phi3ForCausalLM",
                                    "llama": "LlamaForCausalLM"}[target]
