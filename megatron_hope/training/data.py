"""Training data: megatron-core's GPTDataset over Megatron `.bin/.idx` blends, and its loader.

Samples are drawn like Megatron-LM's `MegatronPretrainingSampler`: a step consumes the next
`global_batch_size` sample indices; micro-batch k of data-parallel rank r holds indices
`consumed + k*mbs*dp + r*mbs ... + mbs`. The same global batch therefore reaches the same
samples at every data-parallel size, and resuming at `consumed_samples` continues exactly.

Batches come from a `torch.utils.data.DataLoader` with worker processes and pinned memory, as
Megatron-LM's `build_pretraining_data_loader` builds it; `get_batch` moves each micro-batch to
`torch.cuda.current_device()` with `non_blocking=True`, as Megatron-LM's `get_batch` does.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from megatron.core import parallel_state
from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
from megatron.core.datasets.blended_megatron_dataset_config import parse_and_normalize_split
from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig, MockGPTDataset
from megatron.core.datasets.indexed_dataset import IndexedDataset
from megatron.core.datasets.utils import get_blend_from_list
from megatron.core.utils import get_batch_on_this_cp_rank

from megatron_hope.training.run_control import survive_exit_signal

BATCH_KEYS = ("tokens", "labels", "loss_mask", "position_ids")
# megatron-core 0.19 added hybrid CP to the slicing function, as a required argument.
_CP_SLICING_ARGUMENTS = (
    {"is_hybrid_cp": False}
    if "is_hybrid_cp" in inspect.signature(get_batch_on_this_cp_rank).parameters else {})
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

    def as_list(self) -> list[int]:
        return [self.train, self.validation, self.test]


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
    packing: DocumentPacking | None = None,
) -> list[GPTDataset | None]:
    """Train, validation and test datasets (None where a split is unused).

    `data_path` None builds megatron-core's MockGPTDataset (random tokens: --mock-data)."""
    packing = packing or DocumentPacking()
    if data_path is None:
        blend, dataset_class = None, MockGPTDataset
    else:
        prefixes, weights = parse_data_path(data_path)
        check_split_has_documents(prefixes, split, sizes)
        blend, dataset_class = (prefixes, weights), GPTDataset
    config = GPTDatasetConfig(
        random_seed=seed,
        sequence_length=seq_length,
        blend=blend,
        split=split,
        path_to_cache=cache_path,
        tokenizer=tokenizer,
        reset_position_ids=packing.reset_position_ids,
        reset_attention_mask=packing.reset_attention_mask,
        eod_mask_loss=packing.eod_mask_loss,
        create_attention_mask=packing.reset_attention_mask,
    )
    # An unused split gets no bookends, so megatron-core builds nothing for it: it would loop
    # forever on a requested split whose share of the documents is empty, and a size of None
    # (its other way to skip) is refused for a weighted blend ("size_is_none =>
    # weights_are_none"), i.e. for every `{prefix}_data_path.txt` that hope-preprocess writes.
    for index, size in enumerate(sizes.as_list()):
        if not size:
            config.split_matrix[index] = None
    return BlendedMegatronDatasetBuilder(
        dataset_class, sizes.as_list(), lambda: True, config
    ).build()


@dataclass(frozen=True)
class DocumentPacking:
    """Megatron-LM's packed-document flags: documents share a sample, separated by EOD."""

    reset_position_ids: bool = False
    """Position ids restart at 0 after each end-of-document token."""
    reset_attention_mask: bool = False
    """Tokens attend only within their document (a `[b, 1, s, s]` mask in the batch)."""
    eod_mask_loss: bool = False
    """End-of-document tokens carry no loss."""


def collate(samples: Sequence[dict]) -> dict[str, torch.Tensor]:
    """Stack GPTDataset samples into `[b, s]` tensors."""
    keys = BATCH_KEYS + (("attention_mask",) if "attention_mask" in samples[0] else ())
    return {
        key: torch.stack([torch.as_tensor(np.asarray(sample[key])) for sample in samples])
        for key in keys
    }


class PretrainingBatchSampler:
    """Index lists of one data-parallel rank's micro-batches, from `consumed_samples` on, endless.

    Indices past the end of the dataset wrap around (evaluation reuses its first batches).
    """

    def __init__(
        self,
        dataset_size: int,
        consumed_samples: int,
        micro_batch_size: int,
        data_parallel_rank: int,
        data_parallel_size: int,
    ) -> None:
        if dataset_size < 1:
            raise ValueError("the dataset is empty: no sample to draw a micro-batch from")
        if not 0 <= data_parallel_rank < data_parallel_size:
            raise ValueError(f"data-parallel rank {data_parallel_rank} is not in "
                             f"[0, {data_parallel_size})")
        self.dataset_size = dataset_size
        self.consumed_samples = consumed_samples
        self.micro_batch_size = micro_batch_size
        self.data_parallel_rank = data_parallel_rank
        self.data_parallel_size = data_parallel_size

    def __iter__(self) -> Iterator[list[int]]:
        start = self.consumed_samples
        step = self.micro_batch_size * self.data_parallel_size
        while True:
            first = start + self.data_parallel_rank * self.micro_batch_size
            stop = first + self.micro_batch_size
            yield [index % self.dataset_size for index in range(first, stop)]
            start += step


def build_data_loader(
    dataset,
    consumed_samples: int,
    micro_batch_size: int,
    data_parallel_rank: int,
    data_parallel_size: int,
    num_workers: int,
    exit_signal: str | None = None,
) -> torch.utils.data.DataLoader:
    """Megatron-LM's pretraining loader: batch sampler, worker processes, pinned host memory.
    With `exit_signal` (the run's `--exit-signal` when its handler is on), the workers outlive
    that signal so that the rank can finish its step and save."""
    sampler = PretrainingBatchSampler(
        len(dataset), consumed_samples, micro_batch_size, data_parallel_rank, data_parallel_size
    )
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        # Pinned pages make the host-to-device copy asynchronous; there is nothing to pin
        # without CUDA (torch then warns and ignores the flag).
        pin_memory=torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
        # Its own generator: every DataLoader iterator draws a worker seed, which from the
        # global generator would shift the dropout masks of a resumed run (whose loader starts
        # after the RNG state is restored) away from those of the uninterrupted run.
        generator=torch.Generator().manual_seed(consumed_samples),
        worker_init_fn=(functools.partial(_ignore_in_worker, exit_signal)
                        if exit_signal and num_workers > 0 else None),
    )


def _ignore_in_worker(exit_signal: str, worker_id: int) -> None:
    survive_exit_signal(exit_signal)


def get_batch(data_iterator: Iterable | Iterator) -> dict[str, torch.Tensor]:
    """The next micro-batch, on `torch.cuda.current_device()` (the copy overlaps compute); with
    context parallelism, this rank's two load-balanced chunks of every sequence (Megatron-LM's
    `get_batch_on_this_cp_rank`: chunks r and 2c-1-r of 2c)."""
    batch = next(data_iterator)
    device = torch.cuda.current_device()
    batch = {key: value.cuda(device, non_blocking=True) for key, value in batch.items()}
    if parallel_state.get_context_parallel_world_size() > 1:
        batch = get_batch_on_this_cp_rank(batch, **_CP_SLICING_ARGUMENTS)
    return batch


INDEX_BYTES_PER_SAMPLE = 24
"""What megatron-core's GPTDataset indexes hold per sample once they need 64-bit entries: a
(document, offset) pair in the sample index and an entry of the shuffle index."""


def check_indexes_fit(sizes: DatasetSizes, host_bytes: int | None = None) -> None:
    """ValueError naming the flags when the sample indexes of `sizes` cannot fit in this host's
    memory: megatron-core would otherwise spend hours (a typo such as --eval-iters 10**30)
    building them before running out of memory."""
    if host_bytes is None:
        import psutil

        host_bytes = psutil.virtual_memory().total
    for name, samples, flags in (("train", sizes.train, "--train-iters"),
                                 ("validation", sizes.validation, "--eval-iters")):
        if samples * INDEX_BYTES_PER_SAMPLE > host_bytes:
            raise ValueError(
                f"{flags} x --global-batch-size asks the {name} split for {samples:.3g} samples, "
                f"whose indexes alone need more than this host's {host_bytes / 2**30:.3g} GiB; "
                f"lower {flags}"
            )


def build_train_and_validation(config, global_batch_size: int, tokenizer):
    """The train and validation datasets of a `PretrainConfig` (rank 0 builds the indexes first)."""
    gbs = global_batch_size
    evaluations = (config.train_iters // config.eval_interval + 1) if config.eval_iters else 0
    sizes = DatasetSizes(
        train=config.train_iters * gbs,
        validation=config.eval_iters * gbs if evaluations else 0,
        test=0,
    )
    check_indexes_fit(sizes)
    packing = DocumentPacking(config.reset_position_ids, config.reset_attention_mask,
                              config.eod_mask_loss)

    def build():
        return build_gpt_datasets(
            None if config.mock_data else config.data_path, config.split, sizes,
            config.arch.seq_length, tokenizer, config.seed, config.data_cache_path,
            packing,
        )

    # Rank 0 builds megatron-core's index caches first; the others then read them.
    datasets = build() if dist.get_rank() == 0 else None
    dist.barrier()
    if dist.get_rank() != 0:
        datasets = build()
    return datasets[0], datasets[1]
