"""The HuggingFace side of `hope-eval`: an exported (or any Llama/Phi3-family) directory as a
`Scorer`, with q/k captured through a registered attention function (see `scorers`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from megatron_hope.eval.scorers import DEFAULT_MAX_EXTRAPOLATION, QK, Scorer, _label
from megatron_hope.eval.text_tokenizer import (
    text_tokenizer,
    tokenizer_from_hf,
)
from megatron_hope.rope.layout import rotary_block_permutation
from megatron_hope.rope.scaling import (
    RopeScaling,
    check_scaling_of_rotary_percent,
    parse_rope_scaling,
    scaled_inv_freq,
)


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
            check_scaling_of_rotary_percent(saved_encoding.get("rotary_percent", 1.0), scaling)
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
