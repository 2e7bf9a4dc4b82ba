"""Strict CPU execution fails where a GPU run would, and the product's GPU path passes it.

The four ways `hope-pretrain` would have stopped at its first GPU step (host batches, a host loss
mask, a host tensor in a collective, a model never moved to the device) each raise
`HostDeviceMixError` here; the product's own batch, loss and collective code does not.
The scoping of the shim (nothing patched outside the context, `current_device()` an int, library
calls refuse to run without it) is checked in a fresh interpreter, the one place the test
session's own strict context cannot reach.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
import torch.distributed as dist

from megatron_hope.megatron.cpu import HostDeviceMixError, placement

pytestmark = pytest.mark.skipif(
    torch.cuda.is_available(), reason="strict CPU execution only exists without CUDA"
)


def _tiny_model(move_to_device: bool):
    from megatron_hope.megatron.model import (
        ModelArchitecture,
        build_model,
        build_transformer_config,
    )
    from megatron_hope.rope.config import PositionEncodingConfig

    arch = ModelArchitecture(
        num_layers=1, hidden_size=32, num_attention_heads=2, seq_length=16, vocab_size=64,
        position_encoding=PositionEncodingConfig("hope", kv_channels=16, hope_train_length=16),
    )
    from megatron.core import tensor_parallel

    tensor_parallel.model_parallel_cuda_manual_seed(1234)
    model = build_model(arch, build_transformer_config(arch))
    if move_to_device:
        model.cuda(torch.cuda.current_device())
    return model


def _host_batch() -> dict[str, torch.Tensor]:
    from megatron_hope.training.data import collate

    sample = {
        "tokens": torch.arange(16) % 64, "labels": (torch.arange(16) + 1) % 64,
        "loss_mask": torch.ones(16), "position_ids": torch.arange(16),
    }
    return collate([sample, sample])


def test_the_product_moves_batches_and_model_to_the_device(single_rank_megatron):
    from megatron_hope.training.data import get_batch
    from megatron_hope.training.steps import forward_step

    batch = get_batch(iter([_host_batch()]))
    assert {key: placement(value) for key, value in batch.items()} == dict.fromkeys(batch, "cuda")
    model = _tiny_model(move_to_device=True)
    assert {placement(parameter) for parameter in model.parameters()} == {"cuda"}
    output, loss = forward_step(iter([_host_batch()]), model)
    value, _ = loss(output)
    assert placement(value) == "cuda" and torch.isfinite(value)


def test_a_host_batch_fails_as_on_a_gpu(single_rank_megatron):
    model = _tiny_model(move_to_device=True)
    batch = _host_batch()
    with pytest.raises(HostDeviceMixError, match="embedding: host tensor"):
        model(batch["tokens"], batch["position_ids"], None, labels=batch["labels"])


def test_a_model_left_on_the_host_fails_as_on_a_gpu(single_rank_megatron):
    from megatron_hope.training.data import get_batch

    model = _tiny_model(move_to_device=False)
    batch = get_batch(iter([_host_batch()]))
    with pytest.raises(HostDeviceMixError, match="Expected all tensors to be on the same device"):
        model(batch["tokens"], batch["position_ids"], None, labels=batch["labels"])


def test_a_host_loss_mask_fails_as_on_a_gpu(single_rank_megatron):
    from megatron_hope.training.steps import loss_func

    per_token_loss = torch.ones(2, 16, device=torch.cuda.current_device())
    with pytest.raises(HostDeviceMixError, match="host tensor \\(32,\\)"):
        loss_func(torch.ones(2, 16), per_token_loss)
    loss, _ = loss_func(torch.ones(2, 16).cuda(non_blocking=True), per_token_loss)
    assert loss.item() == 1.0


def test_a_host_tensor_in_a_collective_fails_as_on_nccl(single_rank_megatron):
    with pytest.raises(HostDeviceMixError, match="all_reduce of a host tensor"):
        dist.all_reduce(torch.tensor([1.0]))
    on_device = torch.tensor([1.0], device=torch.cuda.current_device())
    dist.all_reduce(on_device)
    assert on_device.item() == 1.0


def test_what_a_data_loader_yields_is_host_memory(single_rank_megatron):
    from torch.utils.data import DataLoader

    (batch,) = list(DataLoader([torch.ones(3)], batch_size=1))
    assert placement(batch) == "host"
    assert placement(batch.cuda(non_blocking=True)) == "cuda"


def test_cuda_tensors_behave_as_on_a_gpu(single_rank_megatron):
    on_device = torch.zeros(3, device="cuda")
    assert on_device.device == torch.device("cuda", 0)  # `device=x.device` lands beside x
    assert placement(torch.ones(3, device=on_device.device)) == "cuda"
    assert on_device.type() == "torch.cuda.FloatTensor"
    assert torch.zeros(3).type() == "torch.FloatTensor"
    assert placement(on_device + torch.tensor(2.0)) == "cuda"  # 0-dim host scalars are fine
    assert on_device.cpu().numpy().tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(HostDeviceMixError, match="numpy"):
        on_device.numpy()


_SCOPING = textwrap.dedent("""
    import torch
    original = torch.cuda.current_device
    from megatron_hope.megatron.cpu import cpu_execution, cpu_execution_enabled
    from megatron_hope.training.distributed import initialize_distributed
    assert torch.cuda.current_device is original and not cpu_execution_enabled()
    try:
        initialize_distributed()
    except RuntimeError as error:
        print("library:", error)
    with cpu_execution(strict=True) as enabled:
        device = torch.cuda.current_device()
        print("inside:", enabled, type(device).__name__, device, torch.ones(1).cuda().type())
        with cpu_execution():
            print("nested:", torch.ones(1).type())
        print("after nested:", torch.ones(1).type())
    print("outside:", torch.cuda.current_device is original, cpu_execution_enabled(),
          torch.ones(1).type(), torch._C._len_torch_function_stack())
""")


def test_the_shim_is_scoped_to_its_context(tmp_path):
    out = subprocess.run([sys.executable, "-c", _SCOPING], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(": ", 1) for line in out.stdout.splitlines())
    assert "with megatron_hope.megatron.cpu.cpu_execution()" in lines["library"]
    assert lines["inside"] == "True int 0 torch.cuda.FloatTensor"
    assert lines["nested"] == "torch.cuda.FloatTensor"  # non-strict: every tensor is "on CUDA"
    assert lines["after nested"] == "torch.FloatTensor"  # strict again: a host tensor
    assert lines["outside"] == "True False torch.FloatTensor 0"
