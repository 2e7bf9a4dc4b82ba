"""Megatron checkpoint (any TP/PP/DP layout) -> HuggingFace directory, one layer at a time.

    from megatron_hope.convert.export import ExportOptions, export_checkpoint
    result = export_checkpoint(ExportOptions("runs/hope/checkpoints", "runs/hope/hf"))

Writes `config.json`, `generation_config.json`, `model-0000k-of-0000n.safetensors` + index,
`tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json`, the `README.md` model card
and `megatron_hope.json` (the source's position-encoding settings, for the way back) into
`.<name>.incomplete-<pid>/` beside the output, verifies it there, and renames it to the output
only when everything passed: a failed export leaves nothing under the output path.

Memory: tensors are read from the checkpoint one layer at a time and appended to safetensors files
whose headers are planned up front, so the peak beyond the Python/torch baseline is about one
layer's weights (plus the embedding, read once). Verification then loads both models.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from megatron_hope.convert import weight_map
from megatron_hope.convert.engines import choose_target, describe_reach
from megatron_hope.convert.hf_config import (
    RopeScaling,
    build_hf_config,
    check_hf_frequencies,
)
from megatron_hope.convert.mcore_checkpoint import (
    CheckpointReader,
    ConversionError,
    rules_for,
)
from megatron_hope.convert.model_card import check_eval_results, model_card
from megatron_hope.convert.safetensors_stream import Entry, StreamingSafetensorsWriter, parse_size
from megatron_hope.convert.staging import staged_directory
from megatron_hope.convert.tokenizer_files import special_token_ids, write_tokenizer_files
from megatron_hope.flag_checks import check_range
from megatron_hope.rope.layout import qk_row_order

logger = logging.getLogger(__name__)

PROVENANCE_FILE_NAME = "megatron_hope.json"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ExportOptions:
    """`hope-convert` settings for the Megatron -> HF direction (flag names in comments)."""

    load_dir: str
    """--load-dir: the `--save` directory of hope-pretrain (with its tracker file)."""
    save_dir: str
    """--save-dir: the HF directory to create."""
    target: str = "auto"
    """--target {auto, llama, phi3}; auto: the exact target that reaches the most serving engines
    (`megatron_hope.convert.engines`)."""
    rope_scaling: str | None = None
    """--rope-scaling linear:F | yarn:F[:ORIGINAL_LENGTH]"""
    dtype: str = "auto"
    """--dtype {auto, float32, bfloat16, float16}; auto keeps the checkpoint's."""
    max_shard_size: str = "5GB"
    """--max-shard-size"""
    verify: bool = True
    """False with --no-verify."""
    tolerance: float | None = None
    """--tolerance: max |logit difference|; default 1e-4 for float32 exports, 0.1 otherwise."""
    keep_vocab_padding: bool = False
    """--keep-vocab-padding: keep Megatron's padded embedding rows (default: tokenizer's vocab)."""
    tokenizer_model: str | None = None
    """--tokenizer-model: the run's tokenizer.json if it moved since training."""
    overwrite: bool = False
    """--overwrite: replace an existing --save-dir."""
    progress: bool = True
    eval_results: tuple[str, ...] = ()
    """--eval-results: hope-eval result files (*.json) summarised in the model card."""
    model_name: str | None = None
    """--model-name: the model card's name (default: the --save-dir name)."""

    def __post_init__(self) -> None:
        """Every flag checked before any checkpoint is opened; ConversionError names it."""
        if self.target != "auto" and self.target not in weight_map.TARGETS:
            raise ConversionError(f"--target {self.target!r} is not supported; choose one of "
                                  f"auto, {', '.join(weight_map.TARGETS)}")
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise ConversionError(f"--dtype {self.dtype!r} is not one of auto, "
                                  f"{', '.join(DTYPES)}")
        try:
            RopeScaling.parse(self.rope_scaling)
            parse_size(self.max_shard_size)
            if self.tolerance is not None:
                check_range("tolerance", self.tolerance, 0.0)
        except ValueError as error:
            raise ConversionError(str(error)) from None
        if self.model_name is not None and not self.model_name.strip():
            raise ConversionError("--model-name is empty; give the model card a name, or leave "
                                  "the flag out to use the --save-dir name")

    @property
    def scaling(self) -> RopeScaling | None:
        return RopeScaling.parse(self.rope_scaling)


@dataclass
class ExportResult:
    save_dir: Path
    config: dict[str, Any]
    target: str
    reach: str
    """One line: why this target (auto) and which engines run it exactly."""
    max_abs_diff: float | None
    seconds: float
    bytes_written: int


def ensure_single_process() -> None:
    """dist_checkpointing needs a process group: a 1-rank gloo group unless one exists."""
    import torch.distributed as dist
    from megatron.core import parallel_state

    from megatron_hope.training.distributed import initialize_distributed

    if not dist.is_initialized() or not parallel_state.model_parallel_is_initialized():
        initialize_distributed()


def _tokenizer(reader: CheckpointReader, override: str | None):
    from megatron_hope.data.tokenizer_args import saved_tokenizer_args

    spec = saved_tokenizer_args(reader.metadata)
    if spec is None:
        raise ConversionError(f"{reader.directory}/hope_run.json names no tokenizer; pass "
                              "--tokenizer-model <the run's tokenizer>")
    if override is not None:
        spec = dataclasses.replace(spec, tokenizer_model=override)
    try:
        tokenizer = spec.build()
    except ValueError as error:
        raise ConversionError(
            f"tokenizer {spec.tokenizer_model or spec.vocab_file}: {error}; pass "
            "--tokenizer-model if it moved") from None
    if tokenizer.vocab_size != reader.arch.vocab_size:
        raise ConversionError(
            f"tokenizer {tokenizer!r} has {tokenizer.vocab_size} tokens but the checkpoint was "
            f"trained with {reader.arch.vocab_size}; pass the run's --tokenizer-model")
    return tokenizer


def _check_output(save_dir: Path, overwrite: bool) -> None:
    if save_dir.exists() and not save_dir.is_dir():
        raise ConversionError(f"--save-dir {save_dir} exists and is not a directory")
    if save_dir.is_dir() and any(save_dir.iterdir()) and not overwrite:
        raise ConversionError(f"--save-dir {save_dir} exists and is not empty; pass --overwrite "
                              "or choose another directory")


def plan_entries(reader: CheckpointReader, rules, geo, target, dtype) -> list[Entry]:
    """Every HF tensor in write order, with shapes from the transforms applied to meta tensors."""
    from megatron_hope.convert.mcore_checkpoint import expected_shapes

    shapes = expected_shapes(reader.arch, reader.padded_vocab_size)
    entries = []

    def add(rule, layer):
        meta = torch.empty(shapes[rule.megatron], device="meta")
        for template, tensor in zip(rule.hf, weight_map.to_hf(rule, meta, geo, target),
                                    strict=True):
            entries.append(Entry(weight_map.expand(template, layer), tuple(tensor.shape), dtype))

    for rule in (r for r in rules if not r.per_layer and r.megatron.startswith("embedding")):
        add(rule, None)
    for layer in range(reader.arch.num_layers):
        for rule in (r for r in rules if r.per_layer):
            add(rule, layer)
    for rule in (r for r in rules if not r.per_layer and not r.megatron.startswith("embedding")):
        add(rule, None)
    return entries


def export_checkpoint(options: ExportOptions) -> ExportResult:
    """Convert, write under a temporary name, verify, rename. Raises ConversionError."""
    start = time.perf_counter()
    scaling = options.scaling
    max_shard_bytes = parse_size(options.max_shard_size)
    save_dir = Path(options.save_dir)
    _check_output(save_dir, options.overwrite)  # before the (slow) reads, as every flag
    try:
        check_eval_results(list(options.eval_results))
    except ValueError as error:
        raise ConversionError(str(error)) from None
    ensure_single_process()
    reader = CheckpointReader.open(options.load_dir)
    arch = reader.arch
    tokenizer = _tokenizer(reader, options.tokenizer_model)
    dtype = reader.dtype if options.dtype == "auto" else DTYPES[options.dtype]
    hf_vocab = reader.padded_vocab_size if options.keep_vocab_padding else arch.vocab_size
    special = special_token_ids(tokenizer)
    target, reach = options.target, None
    if target == "auto":
        target, reach = choose_target(arch, scaling)
    options = dataclasses.replace(options, target=target)
    config, rotary = build_hf_config(arch, options.target, hf_vocab, special["eos_token_id"],
                                     special["pad_token_id"], dtype, scaling,
                                     bos_token_id=special["bos_token_id"])
    check_hf_frequencies(config, rotary)
    reach = reach or f"--target {target}: {describe_reach(target, config)}"

    rules = rules_for(arch, weight_map.RULES[options.target])
    encoding = arch.position_encoding
    geo = weight_map.Geometry(
        arch.num_attention_heads, arch.query_groups, arch.head_dim, hf_vocab,
        reader.padded_vocab_size,
        qk_row_order=qk_row_order(arch.head_dim, encoding.rotated_pairs, encoding.rotary_block,
                                  hf_block=options.target == "phi3"))
    entries = plan_entries(reader, rules, geo, options.target, dtype)

    with staged_directory(save_dir) as staging:
        writer = StreamingSafetensorsWriter(staging, entries, max_shard_bytes,
                                            metadata={"source": "megatron-hope"})
        try:
            _write_weights(reader, rules, geo, options, writer)
            index = writer.close()
        finally:
            writer.abort()
        (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        generation = {**special, "_from_model_config": True}
        (staging / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
        write_tokenizer_files(staging, tokenizer, config["max_position_embeddings"])
        provenance = {
            "format": "megatron-hope-export/1",
            "source": str(Path(options.load_dir).resolve()),
            "iteration": reader.iteration,
            "target": options.target,
            "rope_scaling": options.rope_scaling,
            "position_encoding": encoding.to_dict(),
            "inv_freq": encoding.inv_freq().tolist(),
            "rotated_pairs": encoding.rotated_pairs,
            "arch": reader.metadata["arch"],
            "padded_vocab_size": reader.padded_vocab_size,
        }
        (staging / PROVENANCE_FILE_NAME).write_text(json.dumps(provenance, indent=2) + "\n")
        try:
            card = model_card(options.model_name or save_dir.name, config, provenance,
                              reader.metadata, list(options.eval_results),
                              describe_reach(target, config))
        except ValueError as error:
            raise ConversionError(str(error)) from None
        (staging / "README.md").write_text(card, encoding="utf-8")

        diff = None
        if options.verify:
            diff = _verify(options, reader, staging, dtype, scaling, tokenizer)
    return ExportResult(save_dir, config, target, reach, diff, time.perf_counter() - start,
                        int(index["metadata"]["total_size"]))


def _write_weights(reader, rules, geo, options, writer) -> None:
    from tqdm import tqdm

    def emit(rule, layer):
        tensor = reader.read(rule.megatron, layer)
        for template, out in zip(rule.hf, weight_map.to_hf(rule, tensor, geo, options.target),
                                 strict=True):
            writer.write(weight_map.expand(template, layer), out)

    for rule in (r for r in rules if not r.per_layer and r.megatron.startswith("embedding")):
        emit(rule, None)
    layers = tqdm(range(reader.arch.num_layers), desc=f"export to {options.target}",
                  unit="layer", disable=not options.progress)
    for layer in layers:
        for rule in (r for r in rules if r.per_layer):
            emit(rule, layer)
    for rule in (r for r in rules if not r.per_layer and not r.megatron.startswith("embedding")):
        emit(rule, None)


def _verify(options, reader, staging, dtype, scaling, tokenizer) -> float | None:
    from megatron_hope.convert.verify import compare_logits, verification_tokens

    if scaling is not None and scaling.kind == "yarn":
        logger.warning("verify: Megatron has no YaRN at inference; the exported frequencies were "
                       "checked against ours, the logits are not compared")
        print("verify: yarn export, frequencies checked (no Megatron YaRN to compare logits)")
        return None
    tokens = verification_tokens(tokenizer, min(reader.arch.seq_length, 128))
    factor = scaling.factor if scaling is not None else None
    diff = compare_logits(options.load_dir, staging, tokens, seq_len_interpolation_factor=factor)
    tolerance = options.tolerance
    if tolerance is None:
        tolerance = 1e-4 if dtype == torch.float32 and reader.dtype == torch.float32 else 0.1
    print(f"verify: max abs logit difference HF vs Megatron over {tokens.shape[1]} tokens: "
          f"{diff:.3e} (tolerance {tolerance:g})")
    if not diff <= tolerance:
        raise ConversionError(
            f"verification failed: HF logits differ from Megatron's by {diff:.3e} > tolerance "
            f"{tolerance:g}; the export was removed (use --no-verify to keep an unverified one)")
    return diff
