"""Packed documents (--reset-position-ids --reset-attention-mask --eod-mask-loss): each token's
loss in a packed sample equals its loss when its document segment runs through the model alone.

The reference runs each segment of the sample (up to and including its EOD) by itself, with
positions 0, 1, ... and plain causal attention; nothing of the packing machinery is involved.
The packed side is hope-pretrain's own path: GPTDataset samples through `build_gpt_datasets`,
`collate` and `get_batch`, then the model with the batch's mask and positions.
"""

from __future__ import annotations

import pytest

from tests.distributed import run_on_ranks

pytestmark = pytest.mark.distributed

SEQ = 64


def _packed_and_alone(rank, data):
    import torch

    from megatron_hope.data.tokenizer import build_tokenizer
    from megatron_hope.megatron.model import (
        ModelArchitecture,
        build_model,
        build_transformer_config,
    )
    from megatron_hope.rope.config import PositionEncodingConfig
    from megatron_hope.training.data import (
        DatasetSizes,
        DocumentPacking,
        build_gpt_datasets,
        collate,
        get_batch,
    )
    from megatron_hope.training.distributed import initialize_distributed, set_random_seed

    initialize_distributed()
    set_random_seed(1234)
    tokenizer = build_tokenizer("HuggingFaceTokenizer", data["tokenizer"])
    [train, _, _] = build_gpt_datasets(
        [data["prefix"]], "100,0,0", DatasetSizes(train=64, validation=0, test=0), SEQ,
        tokenizer, seed=1234, packing=DocumentPacking(True, True, True))
    # Samples with at least two EOD tokens inside: three segments, two of them whole documents.
    samples = [train[i] for i in range(len(train))]
    samples = [s for s in samples
               if int((torch.as_tensor(s["tokens"]) == tokenizer.eod).sum()) >= 2]
    assert samples, "no sample holds two documents: use shorter documents"
    batch = get_batch(iter([collate(samples[:2])]))

    arch = ModelArchitecture(num_layers=2, hidden_size=64, num_attention_heads=4,
                             vocab_size=tokenizer.vocab_size, seq_length=SEQ,
                             position_encoding=PositionEncodingConfig("hope", 16, 10000.0, SEQ))
    torch.manual_seed(0)
    model = build_model(arch, build_transformer_config(arch), vocab_size=640)
    model.cuda(torch.cuda.current_device()).eval()
    with torch.no_grad():
        packed = model(batch["tokens"], batch["position_ids"], batch["attention_mask"],
                       labels=batch["labels"]).cpu()
        compared, max_diff, masked_eod = 0, 0.0, 0
        tokens, labels = batch["tokens"].cpu(), batch["labels"].cpu()
        loss_mask = batch["loss_mask"].cpu()
        for row in range(tokens.shape[0]):
            ends = (tokens[row] == tokenizer.eod).nonzero().flatten().tolist()
            masked_eod += int((loss_mask[row][tokens[row] == tokenizer.eod] == 0).all())
            start = 0
            for end in [*ends, SEQ - 1]:
                if end < start:
                    continue
                device = torch.cuda.current_device()
                segment = tokens[row, start:end + 1][None].cuda(device)
                alone = model(segment, torch.arange(end + 1 - start, device=device)[None], None,
                              labels=labels[row, start:end + 1][None].cuda(device)).cpu()[0]
                keep = loss_mask[row, start:end + 1] > 0
                diff = (alone[keep] - packed[row, start:end + 1][keep]).abs()
                max_diff = max(max_diff, float(diff.max()) if diff.numel() else 0.0)
                compared += int(keep.sum())
                start = end + 1
    return {"compared": compared, "max_diff": max_diff, "rows": tokens.shape[0],
            "masked_eod_rows": masked_eod,
            "positions_reset": bool((batch["position_ids"].cpu() == 0).sum() > tokens.shape[0])}


def test_each_packed_token_sees_only_its_document(tmp_path):
    from tests.synthetic_corpus import prepare_golden_data

    data = prepare_golden_data(tmp_path, num_documents=400, max_words=24)
    [result] = run_on_ranks(1, _packed_and_alone, data)
    assert result["positions_reset"]
    assert result["masked_eod_rows"] == result["rows"]  # --eod-mask-loss: EOD inputs carry none
    assert result["compared"] > 60
    assert result["max_diff"] < 1e-5, result
