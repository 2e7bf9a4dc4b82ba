"""megatron-core trains on CPU/gloo under strict CPU execution: real GPTModel, DDP, optimizer.

    PYTHONPATH=. python -m pytest tests/megatron/test_cpu.py -q

Every test runs in its own rank processes (`tests.distributed.run_on_ranks`), so the shim never
touches the pytest process. The code is written as for a GPU (model and batches on
`torch.cuda.current_device()`); strict mode would fail it otherwise. Layouts share one fixed
global batch of 4 sequences, so the loss of a step (mean over micro-batches and data-parallel
ranks) is comparable across layouts.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from tests.distributed import run_on_ranks

VOCAB = 128
SEQ = 32
GLOBAL_BATCH = 4
SEED = 1234


def _global_batch() -> dict[str, torch.Tensor]:
    """A fixed batch: tokens/labels/loss_mask `[GLOBAL_BATCH, SEQ]`, causal mask `[1, 1, s, s]`."""
    generator = torch.Generator().manual_seed(0)
    text = torch.randint(0, VOCAB, (GLOBAL_BATCH, SEQ + 1), generator=generator)
    loss_mask = torch.ones(GLOBAL_BATCH, SEQ)
    # The same count of masked tokens in every row keeps per-micro-batch means comparable.
    loss_mask[:, :2] = 0.0
    return {
        "tokens": text[:, :-1].contiguous(),
        "labels": text[:, 1:].contiguous(),
        "loss_mask": loss_mask,
        "position_ids": torch.arange(SEQ).expand(GLOBAL_BATCH, SEQ).contiguous(),
        # True = masked out (megatron's convention).
        "attention_mask": torch.triu(torch.ones(SEQ, SEQ, dtype=torch.bool), 1)[None, None],
    }


def _train(
    rank: int,
    tp: int = 1,
    pp: int = 1,
    steps: int = 5,
    num_microbatches: int = 1,
    use_distributed_optimizer: bool = False,
    overlap_grad_reduce: bool = False,
    attention_dropout: float = 0.0,
    **config_overrides,
) -> dict:
    """Train a tiny GPT for `steps` steps on the fixed batch; return per-step losses, grad norms.

    Dropout is off by default: the data-parallel RNG is the same on every DP rank, so dropout masks
    (unlike the gradients) would differ from a single process holding the whole batch.
    """
    from megatron.core import parallel_state, tensor_parallel
    from megatron.core.distributed import (
        DistributedDataParallel,
        DistributedDataParallelConfig,
        finalize_model_grads,
    )
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.pipeline_parallel import get_forward_backward_func
    from megatron.core.transformer import TransformerConfig

    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp
    )
    tensor_parallel.model_parallel_cuda_manual_seed(SEED)
    dp_size = parallel_state.get_data_parallel_world_size()
    dp_rank = parallel_state.get_data_parallel_rank()

    config = TransformerConfig(
        **{
            "num_layers": 2,
            "hidden_size": 64,
            "num_attention_heads": 4,
            "use_cpu_initialization": True,
            "tensor_model_parallel_size": tp,
            "pipeline_model_parallel_size": pp,
            "pipeline_dtype": torch.float32,
            "hidden_dropout": 0.0,
            # Drawn under get_cuda_rng_tracker().fork() (patch 5 of megatron_hope.megatron.cpu).
            "attention_dropout": attention_dropout,
            **config_overrides,
        }
    )
    model = GPTModel(
        config=config,
        transformer_layer_spec=get_gpt_layer_local_spec(),
        vocab_size=VOCAB,
        max_sequence_length=SEQ,
        pre_process=parallel_state.is_pipeline_first_stage(),
        post_process=parallel_state.is_pipeline_last_stage(),
        position_embedding_type="rope",
    )
    model.cuda(torch.cuda.current_device())
    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=True,
        overlap_grad_reduce=overlap_grad_reduce,
        use_distributed_optimizer=use_distributed_optimizer,
    )
    model = DistributedDataParallel(config=config, ddp_config=ddp_config, module=model)
    optimizer = get_megatron_optimizer(
        OptimizerConfig(
            optimizer="adam",
            lr=1e-3,
            clip_grad=1.0,
            weight_decay=0.0,
            bf16=config.bf16,
            params_dtype=config.params_dtype,
            use_distributed_optimizer=use_distributed_optimizer,
        ),
        [model],
    )
    # What megatron's training loop wires up: the DP grad all-reduce / reduce-scatter happens in
    # finalize_model_grads (or during backward when overlapping), never implicitly.
    config.finalize_model_grads_func = finalize_model_grads
    config.grad_scale_func = optimizer.scale_loss
    config.no_sync_func = model.no_sync
    if overlap_grad_reduce:
        config.grad_sync_func = model.start_grad_sync

    micro_batch_size = GLOBAL_BATCH // dp_size // num_microbatches
    batch = {key: value.cuda(non_blocking=True) for key, value in _global_batch().items()}
    local = {
        key: value if key == "attention_mask" else value.chunk(dp_size)[dp_rank]
        for key, value in batch.items()
    }
    micro_batches = [
        {
            key: value if key == "attention_mask" else value.chunk(num_microbatches)[index]
            for key, value in local.items()
        }
        for index in range(num_microbatches)
    ]

    def forward_step(data_iterator, model):
        micro = next(data_iterator)
        output = model(
            micro["tokens"],
            micro["position_ids"],
            micro["attention_mask"],
            labels=micro["labels"],
        )

        def loss_func(output_tensor):
            mask = micro["loss_mask"]
            loss = (output_tensor.float() * mask).sum() / mask.sum()
            return loss, {"lm loss": loss.detach()}

        return output, loss_func

    forward_backward = get_forward_backward_func()
    losses, grad_norms = [], []
    for _ in range(steps):
        model.zero_grad_buffer()
        optimizer.zero_grad()
        loss_dicts = forward_backward(
            forward_step_func=forward_step,
            data_iterator=iter(micro_batches),
            model=[model],
            num_microbatches=num_microbatches,
            seq_length=SEQ,
            micro_batch_size=micro_batch_size,
            forward_only=False,
        )
        update_successful, grad_norm, _ = optimizer.step()
        assert update_successful
        grad_norms.append(float(grad_norm))
        if parallel_state.is_pipeline_last_stage():
            loss = torch.stack([d["lm loss"] for d in loss_dicts]).mean()
            torch.distributed.all_reduce(loss, group=parallel_state.get_data_parallel_group())
            losses.append(float(loss) / dp_size)
    parallel_state.destroy_model_parallel()
    return {"losses": losses, "grad_norms": grad_norms}


def _single_process(rank: int) -> dict:
    """The reference run (no dropout) and runs with dropout, without and with recompute."""
    import logging

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("megatron.core.tensor_parallel.random").addHandler(handler)
    reference = _train(rank, steps=5)
    dropout = _train(rank, steps=5, attention_dropout=0.1, hidden_dropout=0.1)
    # Activation recompute replays the forward under the saved CPU/"CUDA"/tracker RNG states.
    recompute = _train(
        rank,
        steps=5,
        attention_dropout=0.1,
        hidden_dropout=0.1,
        recompute_granularity="full",
        recompute_method="uniform",
        recompute_num_layers=1,
    )
    return {
        **reference,
        "dropout": dropout,
        "recompute": recompute,
        "rng_warnings": [record.getMessage() for record in records],
    }


def _assert_trains(result: dict, steps: int) -> None:
    losses, grad_norms = result["losses"], result["grad_norms"]
    assert len(losses) == steps and all(math.isfinite(x) for x in losses), losses
    assert all(math.isfinite(x) and x > 0 for x in grad_norms), grad_norms
    assert all(b < a for a, b in itertools.pairwise(losses)), f"loss does not decrease: {losses}"


@pytest.fixture(scope="module")
def single_process() -> dict:
    return run_on_ranks(1, _single_process)[0]


def test_single_process_trains(single_process):
    _assert_trains(single_process, steps=5)
    assert single_process["losses"][0] == pytest.approx(math.log(VOCAB), rel=0.05)


def test_single_process_trains_with_forked_dropout_rng(single_process):
    with_dropout = single_process["dropout"]
    _assert_trains(with_dropout, steps=5)
    # Same weights and data: only the dropout masks drawn from the forked RNG differ.
    assert with_dropout["losses"][0] != single_process["losses"][0]
    assert single_process["rng_warnings"] == []


def test_activation_recompute_replays_the_same_dropout(single_process):
    assert single_process["recompute"] == single_process["dropout"]


def test_data_parallel_distributed_optimizer_matches_single_process(single_process):
    # tp, pp, steps, micro-batches, distributed optimizer, overlap_grad_reduce
    rank0, rank1 = run_on_ranks(2, _train, 1, 1, 3, 1, True, True)
    _assert_trains(rank0, steps=3)
    assert rank0 == rank1
    assert rank0["losses"] == pytest.approx(single_process["losses"][:3], rel=1e-5)
    assert rank0["grad_norms"] == pytest.approx(single_process["grad_norms"][:3], rel=1e-5)


def test_tensor_parallel_trains():
    rank0, rank1 = run_on_ranks(2, _train, 2, 1, 3)  # tp, pp, steps
    _assert_trains(rank0, steps=3)
    assert rank0 == rank1


def test_pipeline_parallel_trains():
    first, last = run_on_ranks(2, _train, 1, 2, 3, 2)  # tp, pp, steps, microbatches
    assert first["losses"] == []  # only the last stage sees losses
    _assert_trains(last, steps=3)
    assert first["grad_norms"] == last["grad_norms"]


def _enable_twice(rank: int) -> tuple:
    from megatron_hope.megatron import cpu

    # run_on_ranks already enabled it in this process: a second call changes nothing.
    patched = torch.cuda.current_device
    again = cpu.enable_cpu_execution(strict=True)
    mode_depth = torch._C._len_torch_function_stack()
    return again, cpu.cpu_execution_enabled(), patched is torch.cuda.current_device, mode_depth


def test_enable_is_idempotent_on_cpu():
    if torch.cuda.is_available():
        pytest.skip("CPU half: CUDA is available here")
    assert run_on_ranks(1, _enable_twice) == [(True, True, True, 1)]


def test_enable_is_a_no_op_with_cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA: enable_cpu_execution() must then return False and patch nothing")
    from megatron_hope.megatron import cpu

    current_device = torch.cuda.current_device
    assert cpu.enable_cpu_execution() is False
    assert cpu.cpu_execution_enabled() is False
    assert torch.cuda.current_device is current_device


def _interop(rank: int) -> dict:
    """What the device mode rewrites, and what it must leave alone, on one rank."""
    import threading

    import numpy as np
    import torch.distributed as dist
    from torch.utils.data import DataLoader, TensorDataset

    def memory(tensor):  # where the bytes are (strict mode answers `.device` as a GPU would)
        return tensor.untyped_storage().device.type

    rewritten = {
        "factory": memory(torch.zeros(2, device="cuda")),
        "factory_ordinal": memory(torch.empty(2, device=0)),
        "to": memory(torch.ones(2).to("cuda", torch.float64)),
        "to_device": memory(torch.ones(2).to(device=torch.device("cuda", 0))),
        "cuda": memory(torch.ones(2).cuda()),
        "type": torch.ones(2, device="cuda").type(),
        "type_half": torch.ones(2, dtype=torch.bfloat16).cuda().type(),
        "current_device": str(torch.cuda.current_device()),
        # megatron's `torch.tensor(..., pin_memory=True).cuda(non_blocking=True)` (CP slicing)
        "pinned_factory": memory(torch.tensor([1, 2], pin_memory=True).cuda(non_blocking=True)),
    }
    untouched = {
        "type_convert": torch.ones(2).type(torch.float64).dtype == torch.float64,
        "numpy": torch.from_numpy(np.arange(3.0)).numpy().tolist() == [0.0, 1.0, 2.0],
        "dataloader": [
            batch.tolist()
            for (batch,) in DataLoader(TensorDataset(torch.arange(4)), batch_size=2, num_workers=1)
        ]
        == [[0, 1], [2, 3]],
    }
    value = torch.tensor([float(rank + 1)], device=torch.cuda.current_device())
    dist.all_reduce(value)
    gathered = [torch.zeros(1, device="cuda") for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, value)
    untouched["gloo"] = value.item() == 3.0 and [g.item() for g in gathered] == [3.0, 3.0]

    # The mode is per thread: a new thread sees plain torch until it enables it too.
    seen = {}

    def other_thread():
        from megatron_hope.megatron.cpu import enable_cpu_execution

        seen["before"] = torch.ones(1).type()
        enable_cpu_execution()
        seen["after"] = torch.ones(1).type()

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    return {"rewritten": rewritten, "untouched": untouched, "thread": seen}


def test_device_mode_rewrites_cuda_and_leaves_the_rest_alone():
    if torch.cuda.is_available():
        pytest.skip("the device mode is only entered without CUDA")
    for result in run_on_ranks(2, _interop):
        assert result["rewritten"] == {
            "factory": "cpu",
            "factory_ordinal": "cpu",
            "to": "cpu",
            "to_device": "cpu",
            "cuda": "cpu",
            "type": "torch.cuda.FloatTensor",
            "type_half": "torch.cuda.BFloat16Tensor",
            "current_device": "0",
            "pinned_factory": "cpu",
        }
        assert result["untouched"] == {
            "type_convert": True,
            "numpy": True,
            "dataloader": True,
            "gloo": True,
        }
        assert result["thread"] == {
            "before": "torch.FloatTensor",
            "after": "torch.cuda.FloatTensor",
        }
