"""`training.memory` against Megatron-LM's own `theoretical_memory_usage.py`.

    python -m pytest -q tests/training/test_memory.py

The reference is `megatron/training/theoretical_memory_usage.py` of the Megatron-LM tag that
pairs with the installed megatron-core (see tests/megatron_lm_archive.py; skipped, saying why,
where the archive is absent). Its functions are cut out of the file with `ast` and executed
in a namespace of their own: the module's only imports are `math` and two helpers from
`megatron.training.utils` (a print and a hybrid-model test), which would pull in all of
Megatron-LM's training package.
"""

from __future__ import annotations

import argparse
import ast
import math

import pytest

from megatron_hope.megatron.model import ModelArchitecture
from megatron_hope.rope.config import PositionEncodingConfig
from megatron_hope.training.arguments import parse_config
from megatron_hope.training.memory import theoretical_memory
from tests import megatron_lm_archive

REPOSITORY = megatron_lm_archive.REPOSITORY

FORMULA_OF_TAG = {"core_v0.16.1": "v0.16", "core_v0.19.0": "v0.19"}


def architecture(**shape) -> ModelArchitecture:
    head_dim = shape.get("kv_channels") or shape["hidden_size"] // shape["num_attention_heads"]
    return ModelArchitecture(
        position_encoding=PositionEncodingConfig("rope", kv_channels=head_dim), **shape
    )


@pytest.fixture(scope="module")
def megatron_lm_report():
    """(tag, Megatron-LM's `report_theoretical_memory`)."""
    folder = megatron_lm_archive.unpack_or_skip()
    tag = megatron_lm_archive.archive_tag()
    path = folder / "megatron/training/theoretical_memory_usage.py"
    source = path.read_text()
    namespace = {
        "math": math,
        "NUM_BYTES_IN_MEGABYTE": 1024 * 1024,
        "print": lambda *args, **kwargs: None,
        "print_rank_0": lambda *args, **kwargs: None,
        "is_hybrid_model": lambda args: False,
    }
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef):
            exec(ast.get_source_segment(source, node), namespace)
    return tag, namespace["report_theoretical_memory"]


def megatron_lm_args(arch, vocab, tp, pp, vpp, dp, mbs, dist_opt, sp, recompute):
    """The args Megatron-LM's estimate reads, as its `validate_args` leaves them for a dense
    GPT (expert TP defaults to TP; sequence parallelism is switched off at TP = 1)."""
    return argparse.Namespace(
        num_layers=arch.num_layers, hidden_size=arch.hidden_size,
        num_attention_heads=arch.num_attention_heads, kv_channels=arch.head_dim,
        group_query_attention=arch.num_query_groups is not None,
        num_query_groups=arch.num_query_groups, ffn_hidden_size=arch.ffn_size,
        swiglu=arch.swiglu, normalization=arch.normalization,
        untie_embeddings_and_output_weights=arch.untie_embeddings_and_output_weights,
        add_bias_linear=arch.add_bias_linear, seq_length=arch.seq_length,
        padded_vocab_size=vocab, tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=pp, virtual_pipeline_model_parallel_size=vpp,
        data_parallel_size=dp, world_size=tp * pp * dp, micro_batch_size=mbs,
        use_distributed_optimizer=dist_opt, sequence_parallel=sp and tp > 1,
        recompute_granularity=recompute,
        num_experts=None, moe_layer_freq=1, moe_ffn_hidden_size=None, moe_router_topk=2,
        moe_shared_expert_intermediate_size=None, moe_latent_size=None, mtp_num_layers=None,
        multi_latent_attention=False, expert_tensor_parallel_size=tp,
        expert_model_parallel_size=1, is_hybrid_model=False,
    )


LLAMA_3B = dict(num_layers=34, hidden_size=2048, num_attention_heads=16, ffn_hidden_size=8704,
                seq_length=8192, swiglu=True, normalization="RMSNorm", add_bias_linear=False,
                untie_embeddings_and_output_weights=True, vocab_size=32000)
# (shape, padded vocab, tp, pp, vpp, dp, micro-batch, micro-batches, dist opt, sp, recompute)
CASES = {
    "small-layernorm": (dict(num_layers=2, hidden_size=64, num_attention_heads=4, seq_length=128,
                             vocab_size=4096), 4096, 1, 1, None, 1, 3, 1, False, False, None),
    "gqa-tp2-distopt": (dict(num_layers=4, hidden_size=256, num_attention_heads=8,
                             num_query_groups=2, seq_length=512, swiglu=True, vocab_size=50257),
                        50432, 2, 1, None, 4, 2, 8, True, False, None),
    "3b-tp2-sp-selective": (LLAMA_3B, 32000, 2, 1, None, 4, 2, 64, True, True, "selective"),
    "3b-pp2-few-microbatches": (LLAMA_3B, 32000, 2, 2, None, 2, 1, 1, True, False, "full"),
    "kv-channels-pp4-vpp2": (dict(num_layers=8, hidden_size=192, num_attention_heads=4,
                                  kv_channels=64, ffn_hidden_size=500, seq_length=256,
                                  vocab_size=1000, untie_embeddings_and_output_weights=True),
                             1024, 1, 4, 2, 2, 4, 8, False, True, "selective"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_matches_megatron_lm(name, megatron_lm_report):
    tag, report = megatron_lm_report
    shape, vocab, tp, pp, vpp, dp, mbs, microbatches, dist_opt, sp, recompute = CASES[name]
    arch = architecture(**shape)
    reference = report(megatron_lm_args(arch, vocab, tp, pp, vpp, dp, mbs, dist_opt, sp,
                                        recompute), num_microbatches=microbatches)
    ours = theoretical_memory(
        arch, padded_vocab_size=vocab, tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=pp, virtual_pipeline_model_parallel_size=vpp,
        data_parallel_size=dp, micro_batch_size=mbs, num_microbatches=microbatches,
        use_distributed_optimizer=dist_opt, sequence_parallel=sp,
        recompute_granularity=recompute, formula=FORMULA_OF_TAG[tag],
    )
    # Same arithmetic in the same order: equal, not merely close.
    assert (ours.weight_and_optimizer_mb, ours.activation_mb, ours.total_mb) == reference


def test_the_3b_example_fits_80_gb():
    """examples/3b's flags (one node: TP 2 x DP 4; Llama's 32,000-token vocabulary)."""
    example = (REPOSITORY / "examples/3b/pretrain_torchrun.sh").read_text()
    flags = ["--sequence-parallel", "--recompute-granularity selective",
             "--use-distributed-optimizer", "--overlap-grad-reduce", "--overlap-param-gather"]
    for needed in flags:
        assert needed in example, needed
    config = parse_config([
        "--num-layers", "34", "--hidden-size", "2048", "--ffn-hidden-size", "8704",
        "--num-attention-heads", "16", "--seq-length", "8192", "--swiglu",
        "--normalization", "RMSNorm", "--disable-bias-linear",
        "--untie-embeddings-and-output-weights", "--tensor-model-parallel-size", "2",
        "--micro-batch-size", "2", "--global-batch-size", "512", "--position-embedding-type",
        "hope", "--use-distributed-optimizer", "--recompute-granularity", "selective",
    ])
    from megatron_hope.training.memory import estimate_for

    for world_size in (8, 256):
        # --sequence-parallel needs TE, absent here: the estimate takes it as an override.
        estimate = estimate_for(config, world_size, 32000, sequence_parallel=True)
        print(f"3B example, {world_size} GPUs: {estimate.line()}")
        assert estimate.total_mb < 80 * 1000**3 / 1024**2, estimate.line()
