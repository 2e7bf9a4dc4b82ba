"""`training.flops` against Megatron-LM's own `num_floating_point_operations`.

    python -m pytest -q tests/training/test_flops.py

The reference is the function in `megatron/training/training.py` of the Megatron-LM tag that
pairs with the installed megatron-core (0.16.x: core_v0.16.1, 0.19.x: core_v0.19.0), unpacked
from `../shared/megatron-lm/megatron-lm-<tag>.tar.gz` (or `$MEGATRON_LM_ARCHIVES/`) into
`~/.cache/megatron-hope/megatron-lm/` (override: `$MEGATRON_HOPE_CACHE`). The comparison tests
skip, saying why, where the archive is absent. It runs in a subprocess, so Megatron-LM's
`megatron.training` never mixes with this test session's modules. `-s` prints how the reference
was loaded; `MEGATRON_HOPE_FLOPS_REFERENCE=ast` skips the import and uses the source fallback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from megatron_hope.megatron.model import ModelArchitecture, build_model, build_transformer_config
from megatron_hope.rope.config import PositionEncodingConfig
from megatron_hope.training.flops import (
    FORMULAS,
    mfu,
    num_floating_point_operations,
    num_parameters,
    peak_bf16_tflops,
    tflops_per_gpu,
)
from tests import megatron_lm_archive

FORMULA_OF_TAG = {"core_v0.16.1": "v0.16", "core_v0.19.0": "v0.19"}

# Runs in a fresh interpreter with the unpacked Megatron-LM folder first on sys.path. Importing
# `megatron.training.training` pulls in six, nltk, triton and much of megatron-core; where that
# fails (a package missing, or a megatron-core newer than the tag), the function's own source is
# cut out of training.py with `ast` and executed: still Megatron-LM's code, just not its imports.
# Its two helpers come from the same places: `is_linear_attention_variant` from the installed
# megatron-core, `is_hybrid_model` (core_v0.19.0 only) from training/utils/common_utils.py.
DRIVER = r"""
import argparse, ast, json, os, sys
from pathlib import Path

folder = Path(sys.argv[1])
sys.path.insert(0, str(folder))
try:
    if os.environ.get("MEGATRON_HOPE_FLOPS_REFERENCE") == "ast":
        raise ImportError("MEGATRON_HOPE_FLOPS_REFERENCE=ast")
    from megatron.training.training import num_floating_point_operations
    method = "import"
except Exception as error:  # noqa: BLE001 - any import failure means: use the source instead
    method = f"ast (import failed: {type(error).__name__}: {error})"

    def function_source(path, name):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name == name:
                return ast.get_source_segment(path.read_text(), node)
        raise LookupError(f"{name} not found in {path}")

    namespace = {}
    from megatron.core.models.gpt.experimental_attention_variant_module_specs import (
        is_linear_attention_variant,
    )
    namespace["is_linear_attention_variant"] = is_linear_attention_variant
    common_utils = folder / "megatron/training/utils/common_utils.py"
    if common_utils.is_file():
        exec(function_source(common_utils, "is_hybrid_model"), namespace)
    training = folder / "megatron/training/training.py"
    exec(function_source(training, "num_floating_point_operations"), namespace)
    num_floating_point_operations = namespace["num_floating_point_operations"]

results = []
for case in json.loads(sys.argv[2]):
    args = argparse.Namespace(**case["args"])
    results.append(num_floating_point_operations(args, case["batch_size"]))
print(json.dumps({"method": method, "flops": results}))
"""


def unpacked_megatron_lm() -> tuple[str, Path]:
    """(tag, unpacked folder) for the installed megatron-core, or skip saying what is missing."""
    folder = megatron_lm_archive.unpack_or_skip()
    return megatron_lm_archive.archive_tag(), folder


def architecture(**shape) -> ModelArchitecture:
    head_dim = shape.get("kv_channels") or shape["hidden_size"] // shape["num_attention_heads"]
    return ModelArchitecture(
        position_encoding=PositionEncodingConfig("rope", kv_channels=head_dim), **shape
    )


def megatron_lm_args(arch: ModelArchitecture, padded_vocab_size: int) -> dict:
    """The args Megatron-LM's function reads, as Megatron-LM's parser leaves them for a dense
    GPT (`kv_channels` and `ffn_hidden_size` already resolved by `validate_args`)."""
    return {
        "num_layers": arch.num_layers,
        "hidden_size": arch.hidden_size,
        "num_attention_heads": arch.num_attention_heads,
        "group_query_attention": arch.num_query_groups is not None,
        "num_query_groups": arch.num_query_groups or 1,
        "kv_channels": arch.head_dim,
        "ffn_hidden_size": arch.ffn_size,
        "swiglu": arch.swiglu,
        "seq_length": arch.seq_length,
        "padded_vocab_size": padded_vocab_size,
        "untie_embeddings_and_output_weights": arch.untie_embeddings_and_output_weights,
        # Off for a dense GPT: MoE, MTP, MLA, linear attention, output gate, hybrid layers.
        "num_experts": None,
        "moe_layer_freq": 1,
        "moe_router_topk": 2,
        "moe_ffn_hidden_size": None,
        "moe_shared_expert_intermediate_size": None,
        "moe_latent_size": None,
        "mtp_num_layers": None,
        "multi_latent_attention": False,
        "experimental_attention_variant": None,
        "attention_output_gate": False,
        "is_hybrid_model": False,  # core_v0.16.1
        "hybrid_override_pattern": None,  # core_v0.16.1
        "hybrid_layer_pattern": None,  # core_v0.19.0
    }


# (shape, global batch size, padded vocabulary)
CASES = {
    "mha-layernorm": (dict(num_layers=2, hidden_size=64, num_attention_heads=4, seq_length=128,
                           vocab_size=4096), 3, 4096),
    "gqa-swiglu": (dict(num_layers=4, hidden_size=256, num_attention_heads=8,
                        num_query_groups=2, seq_length=512, swiglu=True, vocab_size=50257),
                   8, 50304),
    "kv-channels-not-hidden-over-heads": (dict(num_layers=3, hidden_size=192,
                                               num_attention_heads=4, kv_channels=64,
                                               ffn_hidden_size=500, seq_length=256,
                                               vocab_size=1000), 5, 1024),
    "untied": (dict(num_layers=2, hidden_size=128, num_attention_heads=2, seq_length=64,
                    untie_embeddings_and_output_weights=True, vocab_size=4096), 16, 4096),
    "bench-1b-hope-shape": (dict(num_layers=20, hidden_size=2048, num_attention_heads=16,
                                 seq_length=4096, swiglu=True, normalization="RMSNorm",
                                 add_bias_linear=False, vocab_size=4096), 1, 4096),
    "llama3-8b-shape": (dict(num_layers=32, hidden_size=4096, num_attention_heads=32,
                             num_query_groups=8, ffn_hidden_size=14336, seq_length=8192,
                             swiglu=True, vocab_size=128256), 128, 128256),
}


@pytest.fixture(scope="module")
def megatron_lm_flops():
    """{case name: FLOPs from Megatron-LM's own function}, plus the tag and how it was loaded."""
    tag, folder = unpacked_megatron_lm()
    cases = [
        {"args": megatron_lm_args(architecture(**shape), vocab), "batch_size": batch}
        for shape, batch, vocab in CASES.values()
    ]
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, str(folder), json.dumps(cases)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert done.returncode == 0, done.stderr[-4000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"Megatron-LM {tag}: num_floating_point_operations loaded by {answer['method']}")
    return tag, dict(zip(CASES, answer["flops"], strict=True))


@pytest.mark.parametrize("name", list(CASES))
def test_matches_megatron_lm_bit_for_bit(name, megatron_lm_flops):
    tag, reference = megatron_lm_flops
    shape, batch, vocab = CASES[name]
    arch = architecture(**shape)
    ours = num_floating_point_operations(arch, batch, vocab, formula=FORMULA_OF_TAG[tag])
    assert ours == reference[name]
    # The other tag's formula gives the same count for unpacked, full-length samples.
    for formula in FORMULAS:
        assert num_floating_point_operations(arch, batch, vocab, formula=formula) == (
            pytest.approx(reference[name], rel=1e-12)
        )


def test_small_case_by_hand():
    """6 FLOPs per weight per token (2 per FMA, x3 for forward, dgrad and wgrad) for every
    matmul weight, plus causal attention: QK^T and AV each 2*s^2*q per layer forward, halved by
    the mask, x3 for the backward."""
    hidden, heads, groups, layers, seq, ffn, vocab, batch = 64, 4, 2, 2, 128, 160, 512, 3
    arch = architecture(num_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                        num_query_groups=groups, ffn_hidden_size=ffn, swiglu=True,
                        seq_length=seq, vocab_size=vocab)
    head_dim = hidden // heads
    q, kv = head_dim * heads, head_dim * groups
    matmul_weights = layers * (hidden * (q + 2 * kv) + q * hidden + 3 * hidden * ffn) + (
        hidden * vocab
    )
    tokens = batch * seq
    attention = layers * 3 * (2 * 2 * seq * seq * q) // 2 * batch
    assert num_floating_point_operations(arch, batch, vocab) == 6 * matmul_weights * tokens + (
        attention
    )
    # Packed batch (core_v0.19.0): three sub-sequences of 100, 20, 8 in one 128-token row.
    packed = num_floating_point_operations(arch, 1, vocab, seqlen_squared_sum=100**2 + 20**2 + 8**2,
                                           total_real_tokens=128)
    assert packed == 6 * matmul_weights * 128 + layers * 6 * q * (100**2 + 20**2 + 8**2)


def test_rejects_bad_arguments():
    arch = architecture(**CASES["mha-layernorm"][0])
    with pytest.raises(ValueError, match=r"formula 'v0\.17'"):
        num_floating_point_operations(arch, 1, formula="v0.17")
    with pytest.raises(ValueError, match=r"only in formula='v0\.19'"):
        num_floating_point_operations(arch, 1, formula="v0.16", seqlen_squared_sum=5)
    with pytest.raises(ValueError, match="batch_size"):
        num_floating_point_operations(arch, 0)


@pytest.mark.parametrize("name", ["mha-layernorm", "gqa-swiglu", "untied",
                                  "kv-channels-not-hidden-over-heads"])
def test_parameter_count_matches_the_built_model(name, single_rank_megatron):
    shape, _, vocab = CASES[name]
    shape = {**shape, "seq_length": 64}  # the count does not depend on it; building is cheaper
    arch = architecture(**shape)
    model = build_model(arch, build_transformer_config(arch), vocab_size=vocab)
    assert num_parameters(arch, vocab) == sum(p.numel() for p in model.parameters())




def test_peaks_and_mfu():
    assert peak_bf16_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert peak_bf16_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_bf16_tflops("NVIDIA H200") == 989.0
    assert peak_bf16_tflops("NVIDIA GH200 480GB") == 989.0
    assert peak_bf16_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert peak_bf16_tflops("NVIDIA B200") == 2250.0
    assert peak_bf16_tflops("NVIDIA L40S") == 362.0
    assert peak_bf16_tflops("NVIDIA GB200") is None  # not taken for a B200
    assert peak_bf16_tflops("Tesla T4") is None
    achieved = tflops_per_gpu(989e12 * 2 * 0.5, seconds_per_iteration=1.0, world_size=2)
    assert achieved == pytest.approx(494.5)
    assert mfu(achieved, 989.0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="peak_tflops"):
        mfu(1.0, 0.0)
