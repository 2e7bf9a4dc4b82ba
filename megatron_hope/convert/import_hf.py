"""HuggingFace Llama/Phi3 directory -> Megatron checkpoint that `hope-pretrain --load` continues.

    from megatron_hope.convert.import_hf import ImportOptions, import_checkpoint
    import_checkpoint(ImportOptions("runs/hope/hf", "runs/hope/continued"))
    # then: hope-pretrain --load runs/hope/continued --no-load-optim --no-load-rng <model flags>

Our own exports carry `megatron_hope.json`, which restores the exact position-encoding settings
(hope_train_length, rope_fraction) and model flags. A plain Llama RoPE model imports as
`rope`; `position_embedding_type` switches it to HoPE (or p-RoPE) for continued pretraining.

The checkpoint is written by one process with full tensors (iteration 0, no optimizer state);
`dist_checkpointing` reshards it on load, so it loads at any TP/PP layout. The vocabulary is
padded for `--target-tensor-parallel-size` (the padding must divide by TP). Output goes to a
temporary sibling directory renamed when complete.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from megatron_hope.convert import weight_map
from megatron_hope.convert.export import PROVENANCE_FILE_NAME, ensure_single_process
from megatron_hope.convert.mcore_checkpoint import ConversionError, rules_for
from megatron_hope.convert.staging import staged_directory
from megatron_hope.flag_checks import check_range, flag
from megatron_hope.megatron.model import ModelArchitecture, padded_vocab_size
from megatron_hope.rope.config import PositionEncodingConfig
from megatron_hope.rope.frequencies import POSITION_ENCODING_TYPES
from megatron_hope.rope.layout import qk_row_order
from megatron_hope.training.run_metadata import RunMetadata

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImportOptions:
    load_dir: str
    """--load-dir: the HF directory (config.json + safetensors)."""
    save_dir: str
    """--save-dir: the Megatron checkpoint directory to create."""
    target_tensor_parallel_size: int = 1
    """--target-tensor-parallel-size: sets the vocabulary padding and checks divisibility."""
    target_pipeline_parallel_size: int = 1
    """--target-pipeline-parallel-size: checked against the layer count."""
    position_embedding_type: str | None = None
    """--position-embedding-type: switch the encoding (e.g. a RoPE model to hope)."""
    hope_train_length: int | None = None
    """--hope-train-length (default: --seq-length)."""
    rope_fraction: float | None = None
    """--rope-fraction (p-rope)."""
    seq_length: int | None = None
    """--seq-length (default: the export's, else max_position_embeddings)."""
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        """Every flag checked before the HF directory is read; ConversionError names it."""
        for name in ("target_tensor_parallel_size", "target_pipeline_parallel_size"):
            if getattr(self, name) < 1:
                raise ConversionError(f"{flag(name)} must be at least 1, got {getattr(self, name)}")
        for name in ("hope_train_length", "seq_length"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConversionError(f"{flag(name)} must be positive, got {value}")
        kind = self.position_embedding_type
        if kind is not None and kind not in POSITION_ENCODING_TYPES:
            raise ConversionError(f"--position-embedding-type {kind!r} is not one of "
                                  f"{', '.join(POSITION_ENCODING_TYPES)}")
        if self.rope_fraction is not None and kind != "p-rope":
            raise ConversionError(f"--rope-fraction ({self.rope_fraction}) applies only with "
                                  "--position-embedding-type p-rope")
        if self.rope_fraction is not None:
            try:
                check_range("rope_fraction", self.rope_fraction, 0.0, 1.0, low_included=False,
                            high_included=True)
            except ValueError as error:
                raise ConversionError(str(error)) from None
        if self.hope_train_length is not None and kind not in ("hope", "ab1", "ab2", "ab3"):
            raise ConversionError(f"--hope-train-length ({self.hope_train_length}) applies only "
                                  "with --position-embedding-type hope (or ab1-ab3)")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ConversionError(f"{path}: cannot read ({error})") from None


def _weight_files(hf_dir: Path) -> dict[str, Path]:
    """HF tensor name -> safetensors file, from the index or a single model.safetensors."""
    index = hf_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map_ = _read_json(index).get("weight_map", {})
        files = {name: hf_dir / file for name, file in weight_map_.items()}
    elif (hf_dir / "model.safetensors").is_file():
        from safetensors import safe_open

        with safe_open(str(hf_dir / "model.safetensors"), "pt") as handle:
            files = dict.fromkeys(handle.keys(), hf_dir / "model.safetensors")
    else:
        raise ConversionError(f"{hf_dir}: no model.safetensors.index.json or model.safetensors "
                              "(only safetensors checkpoints are supported)")
    missing = sorted({str(path.name) for path in files.values() if not path.is_file()})
    if missing:
        raise ConversionError(f"{hf_dir}: shard file(s) {', '.join(missing)} named in the index "
                              "are missing")
    return files


def _encoding_from_hf(config: dict[str, Any], target: str, head_dim: int,
                      seq_length: int) -> PositionEncodingConfig:
    params = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    rope_type = params.get("rope_type", params.get("type", "default"))
    theta = float(params.get("rope_theta", config.get("rope_theta", 10000.0)))
    fraction = float(params.get("partial_rotary_factor", config.get("partial_rotary_factor", 1.0)))
    if params.get("factor") not in (None, 1, 1.0) or rope_type not in ("default", "proportional"):
        raise ConversionError(
            f"config.json uses rope_type {rope_type} with scaling {params}; importing "
            "inference-time RoPE scaling is not supported (export without --rope-scaling)")
    if target == "llama":
        if rope_type == "default" or fraction >= 1.0:
            return PositionEncodingConfig("rope", head_dim, theta)
        pairs = int(fraction * head_dim // 2)
    else:
        pairs = int(head_dim * fraction) // 2
        if pairs == head_dim // 2:
            return PositionEncodingConfig("rope", head_dim, theta)
        theta = theta ** (head_dim / (2 * pairs))  # undo the Phi3 base b^(2a/d)
    return PositionEncodingConfig("p-rope", head_dim, theta, None, 2 * pairs / head_dim)


def architecture_from_hf(hf_dir: Path, options: ImportOptions
                         ) -> tuple[ModelArchitecture, str, int]:
    """The model to build, the target naming of the weights, and the HF vocabulary rows."""
    config = _read_json(hf_dir / "config.json")
    model_type = config.get("model_type")
    if model_type not in weight_map.TARGETS:
        raise ConversionError(f"{hf_dir}/config.json: model_type {model_type!r} is not supported "
                              f"(supported: {', '.join(weight_map.TARGETS)})")
    if config.get("hidden_act", "silu") != "silu":
        raise ConversionError(f"{hf_dir}/config.json: hidden_act {config['hidden_act']!r}; "
                              "only SwiGLU (silu) MLPs map to --swiglu")
    bias = bool(config.get("attention_bias", False))
    if bias != bool(config.get("mlp_bias", False)):
        raise ConversionError("attention_bias and mlp_bias differ; Megatron has one "
                              "--add-bias-linear for both")
    eps = float(config.get("rms_norm_eps", 1e-5))
    if not math.isclose(eps, 1e-5):
        logger.warning("config.json has rms_norm_eps %g; megatron-core normalises with its "
                       "layernorm_epsilon default 1e-5, so logits will differ slightly", eps)
    heads = int(config["num_attention_heads"])
    hidden = int(config["hidden_size"])
    head_dim = int(config.get("head_dim") or hidden // heads)
    provenance_path = hf_dir / PROVENANCE_FILE_NAME
    provenance = _read_json(provenance_path) if provenance_path.is_file() else None
    seq_length = options.seq_length or (
        provenance["arch"]["seq_length"] if provenance else int(config["max_position_embeddings"]))
    tokenizer_vocab = None
    if provenance is not None:
        encoding = PositionEncodingConfig.from_dict(provenance["position_encoding"])
        tokenizer_vocab = int(provenance["arch"]["vocab_size"])
    else:
        encoding = _encoding_from_hf(config, model_type, head_dim, seq_length)
    if options.position_embedding_type is not None:
        kind = options.position_embedding_type
        encoding = PositionEncodingConfig(
            kind, head_dim, encoding.rotary_base,
            (options.hope_train_length or seq_length) if kind in ("hope", "ab1", "ab2", "ab3")
            else None, options.rope_fraction)
    hf_vocab = int(config["vocab_size"])
    arch = ModelArchitecture(
        num_layers=int(config["num_hidden_layers"]), hidden_size=hidden, num_attention_heads=heads,
        vocab_size=tokenizer_vocab or hf_vocab, seq_length=seq_length,
        ffn_hidden_size=int(config["intermediate_size"]),
        num_query_groups=int(config.get("num_key_value_heads") or heads),
        kv_channels=head_dim, max_position_embeddings=max(seq_length, int(
            config.get("max_position_embeddings") or seq_length)),
        position_encoding=encoding, swiglu=True, normalization="RMSNorm",
        untie_embeddings_and_output_weights=not config.get("tie_word_embeddings", False),
        add_bias_linear=bias, init_method_std=float(config.get("initializer_range", 0.02)),
    )
    tp, pp = options.target_tensor_parallel_size, options.target_pipeline_parallel_size
    if heads % tp or arch.query_groups % tp:
        raise ConversionError(f"--target-tensor-parallel-size {tp} does not divide the heads "
                              f"({heads}) and query groups ({arch.query_groups})")
    if arch.num_layers % pp:
        raise ConversionError(f"--target-pipeline-parallel-size {pp} does not divide the "
                              f"{arch.num_layers} layers")
    return arch, model_type, hf_vocab


def import_checkpoint(options: ImportOptions) -> Path:
    """Write the Megatron checkpoint; returns its directory (the `--load` of hope-pretrain)."""
    from safetensors import safe_open
    from tqdm import tqdm

    from megatron_hope.megatron.model import build_model, build_transformer_config
    from megatron_hope.training import checkpointing
    from megatron_hope.training.distributed import set_random_seed

    hf_dir = Path(options.load_dir)
    if not (hf_dir / "config.json").is_file():
        raise ConversionError(f"--load-dir {hf_dir}: no config.json (is it a HF model directory?)")
    arch, target, hf_vocab = architecture_from_hf(hf_dir, options)
    files = _weight_files(hf_dir)
    padded = padded_vocab_size(arch.vocab_size, options.target_tensor_parallel_size,
                               checkpoint_padded_size=hf_vocab if hf_vocab > arch.vocab_size
                               else None)
    geo = weight_map.Geometry(
        arch.num_attention_heads, arch.query_groups, arch.head_dim, hf_vocab, padded,
        qk_row_order=_hf_row_order(hf_dir, arch, target))
    rules = rules_for(arch, weight_map.RULES[target])
    needed = [weight_map.expand(t, layer) for rule in rules
              for layer in (range(arch.num_layers) if rule.per_layer else [None])
              for t in rule.hf]
    absent = [name for name in needed if name not in files]
    if absent:
        raise ConversionError(f"{hf_dir}: config.json implies tensors the checkpoint lacks: "
                              f"{', '.join(absent[:4])}{' ...' if len(absent) > 4 else ''}")

    save_dir = Path(options.save_dir)
    if save_dir.exists() and any(save_dir.iterdir()) and not options.overwrite:
        raise ConversionError(f"--save-dir {save_dir} exists and is not empty; pass --overwrite")
    ensure_single_process()
    set_random_seed(1234)
    model = build_model(arch, build_transformer_config(arch), vocab_size=padded)
    model.cuda(torch.cuda.current_device())  # as Megatron-LM's get_model; the copies cross over
    params = {weight_map.canonical_name(name): value
              for name, value in model.state_dict(keep_vars=True).items()}
    handles: dict[Path, Any] = {}

    def hf_tensor(name: str) -> torch.Tensor:
        path = files[name]
        if path not in handles:
            handles[path] = safe_open(str(path), "pt")
        return handles[path].get_tensor(name)

    def fill(rule, layer):
        tensors = [hf_tensor(weight_map.expand(t, layer)) for t in rule.hf]
        name = weight_map.expand(rule.megatron, layer)
        param = params[name]
        sources = ", ".join(weight_map.expand(t, layer) for t in rule.hf)
        mismatch = (f"{hf_dir}: {sources} ({', '.join(str(list(t.shape)) for t in tensors)}) "
                    f"do not give {name} of shape {list(param.shape)} that config.json implies; "
                    "the config does not match the weights")
        try:
            value = weight_map.from_hf(rule, tensors, geo, target)
        except RuntimeError:  # reshape of a tensor of the wrong size
            raise ConversionError(mismatch) from None
        if tuple(param.shape) != tuple(value.shape):
            raise ConversionError(mismatch)
        with torch.no_grad():
            param.copy_(value.to(param.dtype))

    for rule in (r for r in rules if not r.per_layer):
        fill(rule, None)
    for layer in tqdm(range(arch.num_layers), desc="import", unit="layer",
                      disable=not options.progress):
        for rule in (r for r in rules if r.per_layer):
            fill(rule, layer)
    handles.clear()

    with staged_directory(save_dir) as staging:
        tokenizer_file = None
        if (hf_dir / "tokenizer.json").is_file():
            tokenizer_file = save_dir / "tokenizer.json"
            shutil.copyfile(hf_dir / "tokenizer.json", staging / "tokenizer.json")
        metadata = RunMetadata.of(
            arch, padded, "HuggingFaceTokenizer",
            str(tokenizer_file.resolve()) if tokenizer_file else None,
            source=str(hf_dir.resolve()))
        checkpointing.save_checkpoint(staging, checkpointing.TrainingState(), [model], None, None,
                                      metadata)
    return save_dir


def _hf_row_order(hf_dir: Path, arch: ModelArchitecture, target: str) -> torch.Tensor | None:
    """The order the HF checkpoint holds each q/k head's rows in, relative to the Megatron model
    it came from: a Phi3 block of HF's `int(d * p)` dims over our full-width pairs, or Llama's
    full-width pairs over a Megatron-LM `--rotary-percent` block (`megatron_hope.json` says
    which). It depends only on the file, whatever encoding the import switches to."""
    config = _read_json(hf_dir / "config.json")
    provenance_path = hf_dir / PROVENANCE_FILE_NAME
    source = (PositionEncodingConfig.from_dict(_read_json(provenance_path)["position_encoding"])
              if provenance_path.is_file() else None)
    model_block = source is not None and source.rotary_block
    if target == "phi3":
        params = config.get("rope_parameters") or {}
        fraction = float(params.get("partial_rotary_factor",
                                    config.get("partial_rotary_factor", 1.0)))
        pairs = int(arch.head_dim * fraction) // 2
    else:
        pairs = source.rotated_pairs if model_block else 0
    return qk_row_order(arch.head_dim, pairs, model_block, hf_block=target == "phi3")
