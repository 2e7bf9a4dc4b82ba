"""Training data: megatron-core's GPTDataset over Megatron `.bin/.idx` blends, and the sampler.

Samples are drawn like Megatron-LM's `MegatronPretrainingSampler`: a step consumes the next
`global_batch_size` sample indices; micro-batch k of data-parallel rank r holds indices
`consumed + k*mbs*dp + r*mbs ... + mbs`. The same global batch therefore reaches the same
samples at every data-parallel size, and resuming at `consumed_samples` continues exactly.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
from megatron.core.datasets.blended_megatron_dataset_config import parse_and_normalize_split
from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
from megatron.core.datasets.indexed_dataset import IndexedDataset
from megatron.core.datasets.utils import get_blend_from_list

BATCH_KEYS = ("tokens", "labels", "loss_mask", "position_ids")
SPLIT_NAMES = ("train", "validation", "test")


def parse_data_path(data_path: Sequence[str]) -> tuple[list[str], list[float] | None]:
    """Megatron's `--data-path` blend: prefixes alone, or `weight prefix` pairs."""
    try:
        prefixes, weights = get_blend_from_list(list(data_path))
    except (ValueError, AssertionError) as error:
        raise ValueError(
            f"--data-path {' '.join(data_path)!r} is not a Megatron blend: give PREFIX or "
            f"'W1 PREFIX1 W2 PREFIX2 ...' ({error})"
        ) from error
    return list(prefixes), (list(weights) if weights is not None else None)


@dataclass(frozen=True)
class DatasetSizes:
    """Samples each split must provide (0 = split unused)."""

    train: int
    validation: int
    test: int

    def as_list(self) -> list[int | None]:
        # megatron-core loops forever building a split of requested size whose share of the
        # documents is empty; None skips the split instead.
        return [size or None for size in (self.train, self.validation, self.test)]


def check_split_has_documents(prefixes: Sequence[str], split: str, sizes: DatasetSizes) -> None:
    """Fail fast where megatron-core would hang: a used split that gets no document."""
    fractions = parse_and_normalize_split(split)
    wanted = (sizes.train, sizes.validation, sizes.test)
    for prefix in prefixes:
        num_documents = len(IndexedDataset(prefix).document_indices) - 1
        start = 0
        for name, fraction, samples in zip(SPLIT_NAMES, fractions, wanted, strict=True):
            stop = start + round(fraction * num_documents)
            if samples and stop <= start:
                raise ValueError(
                    f"--split {split} gives the {name} split no document of {prefix} "
                    f"({num_documents} documents); raise its share or set --eval-iters 0"
                )
            start = stop


def build_gpt_datasets(
    data_path: Sequence[str],
    split: str,
    sizes: DatasetSizes,
    seq_length: int,
    tokenizer,
    seed: int,
    cache_path: str | None = None,
) -> list[GPTDataset | None]:
    """Train, validation and test datasets (None where a split is unused)."""
    prefixes, weights = parse_data_path(data_path)
    check_split_has_documents(prefixes, split, sizes)
    config = GPTDatasetConfig(
        random_seed=seed,
        sequence_length=seq_length,
        blend=(prefixes, weights),
        split=split,
        path_to_cache=cache_path,
        tokenizer=tokenizer,
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
        create_attention_mask=False,
    )
    return BlendedMegatronDatasetBuilder(
        GPTDataset, sizes.as_list(), lambda: True, config
    ).build()


def collate(samples: Sequence[dict]) -> dict[str, torch.Tensor]:
    """Stack GPTDataset samples into `[b, s]` tensors."""
    return {
        key: torch.stack([torch.as_tensor(np.asarray(sample[key])) for sample in samples])
        for key in BATCH_KEYS
    }


def micro_batches(
    dataset,
    consumed_samples: int,
    micro_batch_size: int,
    data_parallel_rank: int,
    data_parallel_size: int,
) -> Iterator[dict[str, torch.Tensor]]:
    """Endless micro-batches for one data-parallel rank, starting at `consumed_samples`."""
    step = micro_batch_size * data_parallel_size
    start = consumed_samples
    while True:
        first = start + data_parallel_rank * micro_batch_size
        indices = [index % len(dataset) for index in range(first, first + micro_batch_size)]
        yield collate([dataset[index] for index in indices])
        start += step
