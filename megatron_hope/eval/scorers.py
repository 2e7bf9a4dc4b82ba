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
)
from megatron_hope.rope.layout import rotary_block_permutation
from megatron_hope.rope.scaling import (
    RopeScaling,
    check_scaling_of_rotary_percent,
    scaled_inv_freq,
)

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
    dim_order: torch.Tensor | None = None
    """`[d]`: how captured q/k dims are reordered into the analysis' full-width pairs
    (i, i + d/2), for models that rotate a leading block (Phi3, `--rotary-percent`)."""

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
        inv_freq = dim_order = None
        model = loaded.model
        if encoding.uses_rotary:
            check_scaling_of_rotary_percent(encoding.rotary_percent, scaling)
            inv_freq, attention_factor = scaled_inv_freq(
                encoding.inv_freq(), scaling, train_length, encoding.kv_channels,
                encoding.rotary_base)
            rotary = model.rotary_pos_emb
            # A --rotary-percent block keeps upstream's module: its frequencies only cover the
            # block, and captured q/k go back to the analysis' full-width pairs.
            kept = rotary.inv_freq.numel()
            if encoding.rotary_block:
                dim_order = torch.argsort(rotary_block_permutation(encoding.kv_channels, kept))
            rotary.inv_freq = inv_freq[:kept].to(device=rotary.inv_freq.device,
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
        scorer.dim_order = dim_order
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
                    query, key = _as_bhsd(query, self.heads).cpu(), _as_bhsd(key, self.heads).cpu()
                    if self.dim_order is not None:
                        query, key = query[..., self.dim_order], key[..., self.dim_order]
                    capture.append(QK(query, key, float(core.softmax_scale)))

                handles.append(core.register_forward_pre_hook(hook, with_kwargs=True))
        try:
            positions = torch.arange(tokens.shape[1], device=device).expand_as(tokens)
            return model(tokens, positions, None).float().cpu()
        finally:
            for handle in handles:
                handle.remove()


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
    from megatron_hope.eval.hf_scorer import HFScorer  # transformers: imported only when asked

    return HFScorer.load(hf_model, scaling, tokenizer, label, max_extrapolation, train_length)
