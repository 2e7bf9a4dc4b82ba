"""Read a `hope-pretrain` checkpoint one tensor (one layer) at a time.

megatron-core stores every layer's tensors under one key with the layers stacked on axis 0
(`decoder.layers.self_attention.linear_qkv.weight` is `[num_layers, (h + 2g) d, hidden]`),
whatever TP/PP layout wrote them. Asking `dist_checkpointing.load` for a `[1, ...]` slice at
layer i makes torch DCP read only the stored chunks that overlap it, so a layer costs its own
bytes and nothing else: the export never holds the model in memory.

    reader = CheckpointReader.open("runs/hope/checkpoints")
    qkv = reader.read("decoder.layers.{i}.self_attention.linear_qkv.weight", layer=3)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from megatron_hope.convert.weight_map import CHECKPOINT_KEYS, Rule
from megatron_hope.megatron.model import ModelArchitecture
from megatron_hope.training import checkpoint_files, checkpointing


class ConversionError(ValueError):
    """Input that cannot be converted; the message says what is wrong and how to fix it."""


def expected_shapes(arch: ModelArchitecture, padded_vocab: int) -> dict[str, tuple[int, ...]]:
    """Per-layer shapes of every model tensor (local spec names), from the saved settings."""
    hidden, d = arch.hidden_size, arch.head_dim
    h, g = arch.num_attention_heads, arch.query_groups
    qkv_rows = (h + 2 * g) * d
    fc1_rows = arch.ffn_size * (2 if arch.swiglu else 1)
    shapes = {
        "embedding.word_embeddings.weight": (padded_vocab, hidden),
        "decoder.layers.{i}.input_layernorm.weight": (hidden,),
        "decoder.layers.{i}.self_attention.linear_qkv.weight": (qkv_rows, hidden),
        "decoder.layers.{i}.self_attention.linear_proj.weight": (hidden, h * d),
        "decoder.layers.{i}.pre_mlp_layernorm.weight": (hidden,),
        "decoder.layers.{i}.mlp.linear_fc1.weight": (fc1_rows, hidden),
        "decoder.layers.{i}.mlp.linear_fc2.weight": (hidden, arch.ffn_size),
        "decoder.final_layernorm.weight": (hidden,),
    }
    if arch.normalization == "LayerNorm":
        shapes.update({
            "decoder.layers.{i}.input_layernorm.bias": (hidden,),
            "decoder.layers.{i}.pre_mlp_layernorm.bias": (hidden,),
            "decoder.final_layernorm.bias": (hidden,),
        })
    if arch.add_bias_linear:
        shapes.update({
            "decoder.layers.{i}.self_attention.linear_qkv.bias": (qkv_rows,),
            "decoder.layers.{i}.self_attention.linear_proj.bias": (hidden,),
            "decoder.layers.{i}.mlp.linear_fc1.bias": (fc1_rows,),
            "decoder.layers.{i}.mlp.linear_fc2.bias": (hidden,),
        })
    if arch.untie_embeddings_and_output_weights:
        shapes["output_layer.weight"] = (padded_vocab, hidden)
    return shapes


def rules_for(arch: ModelArchitecture, rules: tuple[Rule, ...]) -> list[Rule]:
    """The rules whose Megatron tensor exists in a model of `arch`."""
    present = expected_shapes(arch, 1)
    return [rule for rule in rules if rule.megatron in present]


@dataclass
class CheckpointReader:
    """A checkpoint's settings plus layer-wise access to its model tensors."""

    load_dir: Path
    iteration: int
    directory: Path
    metadata: dict[str, Any]
    arch: ModelArchitecture
    padded_vocab_size: int
    stored_shapes: dict[str, tuple[int, ...]]
    dtype: torch.dtype

    @classmethod
    def open(cls, load_dir: str | Path) -> CheckpointReader:
        """Check everything that can be checked without reading weights (clear errors)."""
        from megatron.core import dist_checkpointing

        from megatron_hope.training.model_loading import arch_from_metadata

        load_dir = Path(load_dir)
        if not load_dir.is_dir():
            raise ConversionError(f"--load-dir {load_dir}: no such directory")
        try:
            iteration = checkpointing.read_tracker(load_dir)
        except ValueError as error:
            raise ConversionError(str(error).replace("--load", "--load-dir")) from None
        directory = checkpointing.checkpoint_dir(load_dir, iteration)
        if not directory.is_dir():
            raise ConversionError(
                f"--load-dir {load_dir}: {checkpointing.TRACKER_FILENAME} names iteration "
                f"{iteration} but {directory.name}/ does not exist")
        try:
            metadata = checkpointing.read_run_metadata(load_dir, iteration)
        except ValueError as error:
            raise ConversionError(str(error)) from None
        missing = missing_shard_files(directory)
        if missing:
            raise ConversionError(
                f"{directory}: shard file(s) {', '.join(missing)} named in the checkpoint's "
                "metadata are missing; copy the whole iteration directory")
        problem = checkpoint_files.dcp_problem(directory)  # a truncated shard, before any read
        if problem is not None:
            raise ConversionError(f"{problem}; copy the whole iteration directory again")
        try:
            arch = arch_from_metadata(metadata, transformer_impl="local", fp8_format=None,
                                      apply_rope_fusion=False)
        except (KeyError, TypeError, ValueError) as error:
            raise ConversionError(
                f"{directory}/hope_run.json: unusable settings ({error})") from None
        try:
            tensors = dist_checkpointing.load_tensors_metadata(str(directory))
        except Exception as error:  # megatron-core raises several types for unreadable metadata
            raise ConversionError(
                f"{directory}: not a readable dist_checkpointing checkpoint ({error})") from None
        stored = {key: tuple(value.global_shape) for key, value in tensors.items()}
        padded = int(metadata.get("padded_vocab_size") or 0)
        reader = cls(load_dir, iteration, directory, metadata, arch, padded, stored,
                     tensors["embedding.word_embeddings.weight"].dtype
                     if "embedding.word_embeddings.weight" in tensors else torch.float32)
        reader.check_shapes()
        return reader

    def check_shapes(self) -> None:
        """Every tensor the saved settings imply exists with the implied shape."""
        layers = self.arch.num_layers
        for name, shape in expected_shapes(self.arch, self.padded_vocab_size).items():
            key = CHECKPOINT_KEYS[name]
            want = (layers, *shape) if "{i}" in name else shape
            have = self.stored_shapes.get(key)
            metadata = self.directory / checkpointing.RUN_METADATA_FILENAME
            if have is None:
                raise ConversionError(
                    f"{metadata} describes a model with {name!r} (checkpoint key {key!r}) but "
                    "the checkpoint has no such tensor; the settings do not match the weights")
            if have != want:
                raise ConversionError(
                    f"{self.directory}: {key} has shape {list(have)} but {metadata} "
                    f"(num_layers={layers}, hidden_size={self.arch.hidden_size}, "
                    f"num_attention_heads={self.arch.num_attention_heads}, "
                    f"num_query_groups={self.arch.query_groups}, kv_channels={self.arch.head_dim}, "
                    f"ffn_hidden_size={self.arch.ffn_size}, padded_vocab_size="
                    f"{self.padded_vocab_size}) implies {list(want)}; the settings do not match "
                    "the weights")

    def read(self, name: str, layer: int | None = None) -> torch.Tensor:
        """One model tensor (local spec name template), for `layer` if it is per layer."""
        from megatron.core import dist_checkpointing
        from megatron.core.dist_checkpointing import ShardedTensor

        key = CHECKPOINT_KEYS[name]
        shape = self.stored_shapes[key]
        if "{i}" in name:
            buffer = torch.empty((1, *shape[1:]), dtype=self.dtype)
            request = ShardedTensor.from_rank_offsets(key, buffer, (0, layer, shape[0]),
                                                      replica_id=0)
        else:
            buffer = torch.empty(shape, dtype=self.dtype)
            request = ShardedTensor.from_rank_offsets(key, buffer, replica_id=0)
        # torch's CheckpointException derives from BaseException, not Exception.
        from torch.distributed.checkpoint.api import CheckpointException

        try:
            loaded = dist_checkpointing.load({"t": request}, str(self.directory),
                                             validate_access_integrity=False)
        except (Exception, CheckpointException) as error:
            raise ConversionError(f"{self.directory}: reading {key} failed ({error})") from error
        tensor = loaded["t"]
        return tensor[0] if "{i}" in name else tensor


def missing_shard_files(directory: Path) -> list[str]:
    """Files the DCP metadata refers to that are not on disk (e.g. a partially copied run)."""
    from torch.distributed.checkpoint import FileSystemReader

    try:
        metadata = FileSystemReader(str(directory)).read_metadata()
    except Exception as error:
        raise ConversionError(
            f"{directory}: cannot read the dist_checkpointing metadata ({error}); is the "
            "iteration directory complete?") from None
    storage = metadata.storage_data or {}
    names = sorted({info.relative_path for info in storage.values()})
    return [name for name in names if not (directory / name).is_file()]
