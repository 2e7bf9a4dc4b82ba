"""The product on a CUDA GPU: `hope-pretrain`, Transformer Engine, FP8, HybridModel, export.

    python -m pytest -m gpu tests/gpu -q          # on a GPU machine (benchmarks/gpu_acceptance.sh)

Without CUDA every test here skips; the Transformer Engine tier also skips where TE is not
importable (the NGC image has it; the lent H200 of ../shared/FACTS.md does not).

Each training runs in its own interpreter (`tests.gpu.pretrain_to_json`), all from one initial
checkpoint written at iteration 0, so runs differ only in where and how they compute.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from megatron_hope.megatron.model import transformer_engine_available

# benchmarks/gpu_acceptance.sh --dry-run sets this on a CPU machine: the "GPU" runs then take the
# CPU shim, which proves the tests' own plumbing before a GPU is spent on them.
DRY_RUN = not torch.cuda.is_available() and os.environ.get("MEGATRON_HOPE_GPU_DRY_RUN") == "1"
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not (torch.cuda.is_available() or DRY_RUN), reason="needs a CUDA GPU"),
]
needs_te = pytest.mark.skipif(not transformer_engine_available(),
                              reason="needs Transformer Engine (the GPU image)")

ROOT = Path(__file__).resolve().parents[2]
ITERS = 5
# fp32, same weights, same batches: CPU BLAS and cuBLAS round differently (~1e-7 relative per
# op) and Adam's normalised update can amplify that on near-zero gradients, but over 5 steps it
# stays far below 5e-4; a real fault (host/device mix-up, lost mask, wrong frequencies) moves
# the loss by 1e-2 or more.
FP32_RTOL = 5e-4
# bf16 has 8 mantissa bits (relative step 2^-8 = 4e-3): fused and unfused RoPE round in
# different places, so their losses agree to about that, per step.
BF16_RTOL = 2e-2
# FP8 (e4m3/e5m2) next to bf16: scaled 3-bit mantissas; 10% keeps a broken recipe (NaN,
# unscaled overflow, loss ~ log V) well apart from a working one.
FP8_RTOL = 0.10


def tiny_flags(data: dict) -> list[str]:
    return [
        "--num-layers", "2", "--hidden-size", "64", "--num-attention-heads", "4",
        # Llama-shaped (SwiGLU, RMSNorm, no biases), so the HF export can express it.
        "--swiglu", "--normalization", "RMSNorm", "--disable-bias-linear",
        "--seq-length", "64", "--micro-batch-size", "2", "--global-batch-size", "4",
        "--lr", "3e-3", "--min-lr", "3e-4", "--lr-warmup-iters", "1", "--eval-iters", "0",
        "--split", "90,10,0", "--log-interval", "1", "--no-progress", "--num-workers", "1",
        "--data-path", data["prefix"], "--tokenizer-model", data["tokenizer"],
    ]


def pretrain(tmp: Path, name: str, flags: list[str], on_gpu: bool = True) -> dict:
    out = tmp / f"{name}.json"
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=path)
    if not on_gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""  # the CPU shim takes over in that interpreter
    done = subprocess.run(
        [sys.executable, "-m", "tests.gpu.pretrain_to_json", str(out), "--", *flags],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, f"{name} failed:\n{done.stderr[-4000:]}"
    result = json.loads(out.read_text())
    losses = result["train_losses"]
    result["losses"] = [losses[str(i)] for i in range(1, len(losses) + 1)]
    return result


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from megatron_hope.data.sample_data import prepare_sample_data

    sample = prepare_sample_data(tmp_path_factory.mktemp("gpu-data"), vocab_size=600,
                                 max_bytes=400_000)
    return {"prefix": str(sample.data_prefix), "tokenizer": str(sample.tokenizer_path)}


@pytest.fixture(scope="module")
def initial(data, tmp_path_factory) -> list[str]:
    """Flags that start a run from one shared iteration-0 checkpoint (written on the CPU)."""
    directory = tmp_path_factory.mktemp("gpu-init")
    pretrain(directory, "init", [*tiny_flags(data), "--train-iters", "0",
                                 "--save", str(directory / "ckpt")], on_gpu=False)
    return [*tiny_flags(data), "--load", str(directory / "ckpt"), "--no-load-optim",
            "--no-load-rng", "--train-iters", str(ITERS)]


@pytest.fixture(scope="module")
def cpu_fp32(initial, tmp_path_factory) -> dict:
    return pretrain(tmp_path_factory.mktemp("cpu"), "cpu", initial, on_gpu=False)


@pytest.fixture(scope="module")
def gpu_fp32(initial, tmp_path_factory) -> dict:
    directory = tmp_path_factory.mktemp("gpu-fp32")
    return pretrain(directory, "gpu", [*initial, "--save", str(directory / "ckpt")])


def assert_trains(losses: list[float]) -> None:
    assert len(losses) == ITERS and all(math.isfinite(x) for x in losses), losses
    assert losses[-1] < losses[0], f"loss does not fall: {losses}"


def test_local_spec_fp32_on_cuda_matches_the_cpu_losses(cpu_fp32, gpu_fp32):
    assert cpu_fp32["device"] == "cpu" and (DRY_RUN or gpu_fp32["device"] != "cpu")
    assert_trains(gpu_fp32["losses"])
    assert gpu_fp32["losses"] == pytest.approx(cpu_fp32["losses"], rel=FP32_RTOL)


def test_bf16_trains_on_cuda(initial, tmp_path):
    assert_trains(pretrain(tmp_path, "bf16", [*initial, "--bf16"])["losses"])


def test_export_verifies_on_cuda(gpu_fp32, tmp_path):
    from megatron_hope.convert.cli import main

    load_dir = str(Path(gpu_fp32["checkpoint"]).parent)
    assert main(["--load-dir", load_dir, "--save-dir", str(tmp_path / "hf"), "--target", "phi3",
                 "--no-progress"]) == 0
    assert (tmp_path / "hf" / "config.json").is_file()


@needs_te
def test_te_spec_bf16_and_fused_rope_give_the_unfused_losses(initial, tmp_path):
    te = [*initial, "--transformer-impl", "transformer_engine", "--bf16"]
    unfused = pretrain(tmp_path, "te", te)["losses"]
    fused = pretrain(tmp_path, "te-fused", [*te, "--apply-rope-fusion"])["losses"]
    assert_trains(unfused)
    assert fused == pytest.approx(unfused, rel=BF16_RTOL)


@needs_te
@pytest.mark.parametrize("recipe", ["delayed", "tensorwise"])
def test_fp8_hybrid_trains_close_to_bf16(initial, tmp_path, recipe):
    te = [*initial, "--transformer-impl", "transformer_engine", "--bf16"]
    bf16 = pretrain(tmp_path, "bf16", te)["losses"]
    try:
        fp8 = pretrain(tmp_path, f"fp8-{recipe}",
                       [*te, "--fp8-format", "hybrid", "--fp8-recipe", recipe])["losses"]
    except AssertionError as error:
        if "not supported" in str(error) or "requires" in str(error):
            pytest.skip(f"FP8 recipe {recipe} unavailable on this GPU/TE: {error}")
        raise
    assert all(math.isfinite(x) for x in fp8), fp8
    assert fp8 == pytest.approx(bf16, rel=FP8_RTOL)


@needs_te
def test_fp8_param_gather_trains_close_to_bf16(initial, tmp_path):
    """FP8 weights gathered by the distributed optimizer (one rank: the gather is local)."""
    te = [*initial, "--transformer-impl", "transformer_engine", "--bf16",
          "--use-distributed-optimizer"]
    bf16 = pretrain(tmp_path, "bf16-distopt", te)["losses"]
    fp8 = pretrain(tmp_path, "fp8-param-gather",
                   [*te, "--fp8-format", "hybrid", "--fp8-param-gather"])["losses"]
    assert all(math.isfinite(x) for x in fp8), fp8
    assert fp8 == pytest.approx(bf16, rel=FP8_RTOL)


needs_two_gpus = pytest.mark.skipif(
    not DRY_RUN and torch.cuda.device_count() < 2,
    reason="sequence and context parallelism split work over 2 GPUs; this machine has fewer")


def torchrun_pretrain(tmp: Path, name: str, flags: list[str]) -> dict:
    """`pretrain` on 2 GPUs: torchrun around the same JSON-writing entry."""
    out = tmp / f"{name}.json"
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=path)
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m",
         "tests.gpu.pretrain_to_json", str(out), "--", *flags],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{name} failed:\n{done.stderr[-4000:]}"
    losses = json.loads(out.read_text())["train_losses"]
    return {"losses": [losses[str(i)] for i in range(1, len(losses) + 1)]}


@needs_te
@needs_two_gpus
@pytest.mark.parametrize("layout", [
    ["--tensor-model-parallel-size", "2", "--sequence-parallel"],
    ["--context-parallel-size", "2", "--cp-comm-type", "p2p"],
], ids=["tp2-sequence-parallel", "cp2"])
def test_two_gpu_layouts_give_the_single_gpu_losses(initial, tmp_path, layout):
    te = [*initial, "--transformer-impl", "transformer_engine", "--bf16"]
    single = pretrain(tmp_path, "te-single", te)["losses"]
    split = torchrun_pretrain(tmp_path, "te-" + layout[0].strip("-"), [*te, *layout])["losses"]
    assert split == pytest.approx(single, rel=BF16_RTOL)


@needs_te
def test_hope_hybrid_model_runs_forward_and_backward(single_rank_megatron):
    from megatron.core.models.hybrid.hybrid_layer_specs import hybrid_stack_spec
    from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed
    from megatron.core.transformer import TransformerConfig

    from megatron_hope.megatron.hybrid import hope_hybrid_model_class, hybrid_model_available
    from megatron_hope.rope.config import PositionEncodingConfig

    if not hybrid_model_available():
        pytest.skip("needs megatron-core >= 0.19")
    model_parallel_cuda_manual_seed(1)
    encoding = PositionEncodingConfig("hope", 64, 10000.0, 128)
    config = TransformerConfig(num_layers=4, hidden_size=256, num_attention_heads=4,
                               bf16=True, params_dtype=torch.bfloat16)
    model = hope_hybrid_model_class()(config, hybrid_stack_spec, 1024, 128, encoding,
                                      hybrid_layer_pattern="*-*-").cuda()
    assert model.rotary_pos_emb.rotated_pairs == encoding.rotated_pairs
    tokens = torch.randint(0, 1024, (2, 128), device="cuda")
    positions = torch.arange(128, device="cuda").expand(2, 128)
    loss = model(tokens, positions, None, labels=tokens).float().mean()
    loss.backward()
    grads = [p.grad if p.grad is not None else getattr(p, "main_grad", None)
             for p in model.parameters()]
    assert torch.isfinite(loss) and any(g is not None and g.abs().sum() > 0 for g in grads)
