"""One interface for every evaluation: tokens -> logits, plus per-layer q/k capture.

    scorer = load_scorer(load="runs/hope/checkpoints")      # hope-pretrain checkpoint, any TP/PP
    scorer = load_scorer(hf_model="exports/hope-hf")         # HuggingFace directory (offline)
    logits = scorer.logits(tokens)                           # [b, s] int64 -> [b, s, vocab] float32
    logits, layers = scorer.capture_qk(tokens)               # layers[i] = QK(q [b, h, s, d], ...)

`q` and `k` are captured after the rotary embedding, right where the attention computes
`scale * q·k` (megatron-core: a pre-hook on each layer's `core_attention`; HF: a registered
attention function that records its inputs and calls sdpa). Keys of grouped-query attention are
repeated to one per query head. Pairs follow the non-interleaved layout of both libraries: pair i
couples dimensions (i, i + d/2).

Length rule (`check_length`): rotary models accept any length, so what "can be asked" is a
choice. Without `--rope-scaling`, an input may be at most `max_extrapolation` (default 8, the
paper's furthest PPL point: 4096 for L = 512) times the training length L; with
`--rope-scaling KIND:F`, F times that. L is the checkpoint's `--seq-length` (Megatron) or the HF
config's `original_max_position_embeddings` / `max_position_embeddings` (override with
`train_length`). A longer request is refused with a message naming the length, the limit and the
fix, before any model time is spent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from megatron_hope.data.tokenizer_args import saved_tokenizer_args
from megatron_hope.eval.text_tokenizer import (
    TextTokenizer,
    text_tokenizer,
    tokenizer_from_hf,
)
from megatron_hope.rope.layout import rotary_block_permutation
from megatron_hope.rope.scaling import RopeScaling, parse_rope_scaling, scaled_inv_freq

DEFAULT_MAX_EXTRAPOLATION = 8.0


@dataclass
class QK:
    """One layer's attention inputs after the rotary embedding."""

    query: torch.Tensor
    """`[b, h, s, d]` float32"""
    key: torch.Tensor
    """`[b, h, s, d]` float32 (GQA keys repeated per query head)"""
    scale: float
    """The pre-softmax logits are `scale * query @ key^T` (1/sqrt(d), times YaRN's factor^2)."""


@dataclass
class Scorer:
    """Base class: a causal LM seen as tokens -> logits. Subclasses implement `_forward`."""

    name: str
    """Row label in reports: the position encoding, plus +PI / +YaRN."""
    source: str
    """megatron or hf"""
    train_length: int
    vocab_size: int
    tokenizer: TextTokenizer | None = None
    position_encoding: str = "unknown"
    inv_freq: torch.Tensor | None = None
    """Per-pair frequencies in use `[d/2]` (after scaling); None without rotary embedding."""
    trained_inv_freq: torch.Tensor | None = None
    """Per-pair frequencies the model was trained with `[d/2]` (0: position independent)."""
    scaling: RopeScaling | None = None
    max_extrapolation: float = DEFAULT_MAX_EXTRAPOLATION
    info: dict[str, Any] = field(default_factory=dict)
    hard_max_length: int | None = None
    """A length the model cannot exceed at all (learned absolute positions), if any."""

    # -- to implement --------------------------------------------------------------------------
    def _forward(self, tokens: torch.Tensor, capture: list[QK] | None) -> torch.Tensor:
        raise NotImplementedError

    # -- shared --------------------------------------------------------------------------------
    @property
    def max_length(self) -> int:
        """The longest input this scorer accepts (see the module docstring)."""
        factor = self.scaling.factor if self.scaling is not None else 1.0
        limit = math.floor(self.train_length * self.max_extrapolation * factor)
        return min(limit, self.hard_max_length) if self.hard_max_length else limit

    def check_length(self, length: int, what: str = "input length") -> None:
        if self.hard_max_length and length > self.hard_max_length:
            raise ValueError(f"{what} {length} is beyond the {self.hard_max_length} positions "
                             "this model has (learned absolute position embeddings); lower "
                             "--lengths/--counts")
        if length > self.max_length:
            scaled = f" with --rope-scaling {self.scaling}" if self.scaling else " without scaling"
            raise ValueError(
                f"{what} {length} is beyond what this model can be asked{scaled}: the limit is "
                f"{self.max_length} = {self.max_extrapolation:g} x training length "
                f"{self.train_length}"
                + (f" x {self.scaling.factor:g}" if self.scaling else "")
                + "; lower --lengths/--counts, add --rope-scaling linear:F or yarn:F, or raise "
                "--max-extrapolation"
            )

    def require_tokenizer(self, task: str) -> TextTokenizer:
        if self.tokenizer is None:
            raise ValueError(f"{task} needs a tokenizer and this model has none that can be "
                             "found; pass --tokenizer PATH/tokenizer.json")
        return self.tokenizer

    @torch.no_grad()
    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """`[b, s]` int64 -> `[b, s, vocab]` float32 (vocabulary padding dropped)."""
        return self._forward(tokens, None)[..., : self.vocab_size].float()

    @torch.no_grad()
    def capture_qk(self, tokens: torch.Tensor) -> tuple[torch.Tensor, list[QK]]:
        """Logits and every layer's post-rotary q and k for `tokens` `[b, s]`."""
        capture: list[QK] = []
        logits = self._forward(tokens, capture)[..., : self.vocab_size].float()
        return logits, capture

    @torch.no_grad()
    def greedy(self, tokens: torch.Tensor, steps: int) -> torch.Tensor:
        """Greedy continuation `[b, steps]` of `tokens` `[b, s]` (no cache: re-runs the prefix)."""
        out = tokens
        for _ in range(steps):
            next_ids = self.logits(out)[:, -1].argmax(-1, keepdim=True)
            out = torch.cat([out, next_ids], dim=1)
        return out[:, tokens.shape[1]:]

    def describe(self) -> dict[str, Any]:
        return {"label": self.name, "source": self.source, "train_length": self.train_length,
                "position_encoding": self.position_encoding,
                "rope_scaling": str(self.scaling) if self.scaling else None,
                "max_length": self.max_length, **self.info}


def _label(position_encoding: str, scaling: RopeScaling | None) -> str:
    return position_encoding + (scaling.label if scaling else "")


def _as_bhsd(tensor: torch.Tensor, heads: int) -> torch.Tensor:
    """megatron `[s, b, n, d]` -> `[b, heads, s, d]` float32, repeating GQA groups."""
    out = tensor.permute(1, 2, 0, 3).float()
    if out.shape[1] != heads:
        out = out.repeat_interleave(heads // out.shape[1], dim=1)
    return out


class MegatronScorer(Scorer):
    """A `hope-pretrain` checkpoint loaded through `load_model_from_checkpoint` (TP=PP=1)."""

    @classmethod
    def load(cls, load_dir: str | Path, scaling: RopeScaling | None = None,
             tokenizer_path=None, label: str | None = None,
             max_extrapolation: float = DEFAULT_MAX_EXTRAPOLATION,
             iteration: int | None = None) -> MegatronScorer:
        from megatron_hope.training.model_loading import load_model_from_checkpoint

        load_dir = Path(load_dir)
        if not load_dir.exists():
            raise ValueError(f"--load {load_dir}: no such checkpoint directory")
        loaded = load_model_from_checkpoint(load_dir, iteration=iteration)
        arch = loaded.arch
        encoding = arch.position_encoding
        train_length = arch.seq_length
        inv_freq = None
        model = loaded.model
        if encoding.uses_rotary:
            inv_freq, attention_factor = scaled_inv_freq(
                encoding.inv_freq(), scaling, train_length, encoding.kv_channels,
                encoding.rotary_base)
            rotary = model.rotary_pos_emb
            rotary.inv_freq = inv_freq.to(device=rotary.inv_freq.device,
                                          dtype=rotary.inv_freq.dtype)
            # RotaryEmbedding.forward is an lru_cache over (module, length): drop stale entries.
            cache_clear = getattr(type(rotary).forward, "cache_clear", None)
            if cache_clear is not None:
                cache_clear()
            if attention_factor != 1.0:
                # YaRN multiplies cos and sin by the factor: q·k scales by its square, for every
                # pair (HF's attention_scaling does the same, zero-frequency pairs included).
                for layer in model.decoder.layers:
                    layer.self_attention.core_attention.softmax_scale *= attention_factor**2
        elif scaling is not None:
            raise ValueError(f"--rope-scaling {scaling}: this checkpoint has no rotary embedding "
                             f"(--position-embedding-type {encoding.position_embedding_type})")
        tokenizer = None
        if tokenizer_path is not None:
            tokenizer = text_tokenizer(tokenizer_path)
        else:
            saved = saved_tokenizer_args(loaded.metadata)
            if saved is not None and saved.files_exist():
                tokenizer = text_tokenizer(saved)
        scorer = cls(
            name=label or _label(encoding.position_embedding_type, scaling), source="megatron",
            train_length=train_length, vocab_size=loaded.vocab_size, tokenizer=tokenizer,
            position_encoding=encoding.position_embedding_type, inv_freq=inv_freq,
            scaling=scaling, max_extrapolation=max_extrapolation,
            info={"checkpoint": str(load_dir), "iteration": loaded.iteration,
                  "kv_channels": encoding.kv_channels, "rotary_base": encoding.rotary_base,
                  "hope_train_length": encoding.hope_train_length or train_length},
            trained_inv_freq=encoding.inv_freq() if encoding.uses_rotary else None,
        )
        scorer.loaded = loaded
        scorer.heads = arch.num_attention_heads
        return scorer

    def _forward(self, tokens: torch.Tensor, capture: list[QK] | None) -> torch.Tensor:
        model = self.loaded.model
        device = torch.cuda.current_device()
        tokens = tokens.cuda(device, non_blocking=True)
        handles = []
        if capture is not None:
            for layer in model.decoder.layers:
                core = layer.self_attention.core_attention

                def hook(module, args, kwargs, core=core):
                    query = kwargs["query"] if "query" in kwargs else args[0]
                    key = kwargs["key"] if "key" in kwargs else args[1]
                    capture.append(QK(_as_bhsd(query, self.heads).cpu(),
                                      _as_bhsd(key, self.heads).cpu(), float(core.softmax_scale)))

                handles.append(core.register_forward_pre_hook(hook, with_kwargs=True))
        try:
            positions = torch.arange(tokens.shape[1], device=device).expand_as(tokens)
            return model(tokens, positions, None).float().cpu()
        finally:
            for handle in handles:
                handle.remove()


class _Capture(list):
    """The list of `QK` an HF forward fills, with the dim order that canonicalises it."""

    dim_order: torch.Tensor | None = None


_HF_CAPTURE: _Capture | None = None
_HF_CAPTURE_NAME = "hope_eval_capture"


def _hf_capture_attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """Records q/k `[b, h, s, d]` then computes attention with sdpa (registered by name)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if _HF_CAPTURE is not None:
        heads = query.shape[1]
        repeated = key.repeat_interleave(heads // key.shape[1], dim=1) if key.shape[1] != heads \
            else key
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        order = getattr(_HF_CAPTURE, "dim_order", None)
        query_out, key_out = query.float().cpu(), repeated.float().cpu()
        if order is not None:
            query_out, key_out = query_out[..., order], key_out[..., order]
        _HF_CAPTURE.append(QK(query_out, key_out, float(scale)))
    return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling,
                                  **kwargs)


def _read_provenance(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "megatron_hope.json"
    if not path.is_file():
        return {}
    import json

    return json.loads(path.read_text(encoding="utf-8"))


def _hf_rotary_modules(model) -> list[torch.nn.Module]:
    return [m for m in model.modules() if isinstance(getattr(m, "inv_freq", None), torch.Tensor)]


def _hf_rope_theta(config) -> float | None:
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict) and params.get("rope_theta"):
        return float(params["rope_theta"])
    theta = getattr(config, "rope_theta", None)
    return float(theta) if theta else None


def _hf_train_length(config) -> int:
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None)
    if isinstance(params, dict) and params.get("original_max_position_embeddings"):
        return int(params["original_max_position_embeddings"])
    for name in ("max_position_embeddings", "n_positions"):
        if getattr(config, name, None):
            return int(getattr(config, name))
    raise ValueError("the HF config has no max_position_embeddings; pass --train-length")


class HFScorer(Scorer):
    """A local HuggingFace causal LM (`AutoModelForCausalLM`, no remote code, no download)."""

    @classmethod
    def load(cls, model_dir: str | Path, scaling: RopeScaling | None = None,
             tokenizer_path=None, label: str | None = None,
             max_extrapolation: float = DEFAULT_MAX_EXTRAPOLATION,
             train_length: int | None = None) -> HFScorer:
        from transformers import AttentionInterface, AutoModelForCausalLM, AutoTokenizer

        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise ValueError(f"--hf-model {model_dir}: no config.json there (not an HF model "
                             "directory)")
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), local_files_only=True,
                                                     dtype=torch.float32)
        model.eval()
        model.cuda(torch.cuda.current_device())  # the host under megatron_hope's CPU shim
        AttentionInterface.register(_HF_CAPTURE_NAME, _hf_capture_attention)
        config = model.config
        # An export by megatron_hope.convert says what it was trained as (megatron_hope.json).
        provenance = _read_provenance(model_dir)
        saved_encoding = provenance.get("position_encoding", {})
        length = (train_length or provenance.get("arch", {}).get("seq_length")
                  or _hf_train_length(config))
        head_dim = getattr(config, "head_dim", None) or (
            config.hidden_size // config.num_attention_heads)
        base = saved_encoding.get("rotary_base") or _hf_rope_theta(config)
        rotaries = _hf_rotary_modules(model)
        inv_freq = trained = None
        if rotaries:
            block = rotaries[0].original_inv_freq if hasattr(rotaries[0], "original_inv_freq") \
                else rotaries[0].inv_freq
            if provenance.get("rope_scaling") and scaling is not None:
                raise ValueError(f"--rope-scaling {scaling}: {model_dir} was exported with "
                                 f"--rope-scaling {provenance['rope_scaling']} already")
            # A partial-rotary block (Phi3) holds b^(-2i/d) for its first a pairs: its own
            # rope_theta is b^(2a/d), so the YaRN ramp is computed with the full head's d and b.
            rotary_base = saved_encoding.get("rotary_base") or (
                base ** (head_dim / (2 * len(block))) if base else None)
            scaled, attention_factor = scaled_inv_freq(block, scaling, length, head_dim,
                                                       rotary_base)
            for rotary in rotaries:
                rotary.inv_freq = scaled.to(rotary.inv_freq.device)
                rotary.attention_scaling = getattr(rotary, "attention_scaling", 1.0) * \
                    attention_factor
            base = rotary_base
            inv_freq = torch.cat([scaled, torch.zeros(head_dim // 2 - len(scaled))])
            trained = torch.cat([block.float().cpu(), torch.zeros(head_dim // 2 - len(block))])
        elif scaling is not None:
            raise ValueError(f"--rope-scaling {scaling}: {model_dir} has no rotary embedding")
        tokenizer = None
        if tokenizer_path is not None:
            tokenizer = text_tokenizer(tokenizer_path)
        elif any((model_dir / name).exists() for name in ("tokenizer.json", "tokenizer_config.json",
                                                           "tokenizer.model")):
            tokenizer = tokenizer_from_hf(AutoTokenizer.from_pretrained(str(model_dir),
                                                                        local_files_only=True))
        encoding = saved_encoding.get("position_embedding_type")
        if encoding is None:
            encoding = config.model_type if inv_freq is None else (
                "hope" if bool((inv_freq == 0).any()) else "rope")
        baked = None
        if provenance.get("rope_scaling"):  # as hope-convert took it: "yarn:F[:ORIGINAL_LENGTH]"
            baked = parse_rope_scaling(str(provenance["rope_scaling"]))
        scorer = cls(
            name=label or _label(str(encoding), scaling or baked), source="hf",
            train_length=int(length), vocab_size=config.vocab_size, tokenizer=tokenizer,
            position_encoding=str(encoding), inv_freq=inv_freq, scaling=scaling or baked,
            max_extrapolation=max_extrapolation,
            info={"hf_model": str(model_dir), "model_type": config.model_type,
                  "kv_channels": head_dim if inv_freq is not None else None,
                  "rotary_base": base,
                  "hope_train_length": saved_encoding.get("hope_train_length") or int(length)},
            trained_inv_freq=trained,
        )
        # Phi3's partial rotary turns a contiguous block of 2a dims paired (i, i + a); the
        # analysis wants megatron's layout, pair i = dims (i, i + d/2): undo the exporter's
        # permutation of q/k (first halves of the a pairs, second halves, then the rest).
        rotated = len(rotaries[0].inv_freq) if rotaries else head_dim // 2
        if not rotaries:  # e.g. GPT-2's learned positions: nothing exists beyond them
            scorer.hard_max_length = getattr(config, "n_positions", None) or getattr(
                config, "max_position_embeddings", None)
        scorer.dim_order = None if rotated == head_dim // 2 else torch.argsort(
            rotary_block_permutation(head_dim, rotated))
        scorer.model = model
        return scorer

    def _forward(self, tokens: torch.Tensor, capture: list[QK] | None) -> torch.Tensor:
        global _HF_CAPTURE
        device = torch.cuda.current_device()
        config = self.model.config
        previous = config._attn_implementation
        sink = None
        if capture is not None:
            self.model.set_attn_implementation(_HF_CAPTURE_NAME)
            sink = _HF_CAPTURE = _Capture()
            sink.dim_order = self.dim_order
        try:
            return self.model(input_ids=tokens.to(device)).logits.float().cpu()
        finally:
            _HF_CAPTURE = None
            if sink is not None:
                capture.extend(sink)
            if capture is not None:
                self.model.set_attn_implementation(previous)


def load_scorer(load: str | None = None, hf_model: str | None = None,
                scaling: RopeScaling | None = None, tokenizer=None,
                label: str | None = None, max_extrapolation: float = DEFAULT_MAX_EXTRAPOLATION,
                train_length: int | None = None, iteration: int | None = None) -> Scorer:
    """Exactly one of `load` (hope-pretrain checkpoint) and `hf_model` (HF directory).

    `tokenizer` (`TokenizerArgs` or a path) overrides the checkpoint's or directory's own.
    """
    if (load is None) == (hf_model is None):
        raise ValueError("give exactly one of --load CHECKPOINT_DIR and --hf-model HF_DIR")
    if load is not None:
        return MegatronScorer.load(load, scaling, tokenizer, label, max_extrapolation, iteration)
    return HFScorer.load(hf_model, scaling, tokenizer, label, max_extrapolation, train_length)
