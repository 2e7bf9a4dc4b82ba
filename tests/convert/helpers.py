"""Tiny checkpoints for the conversion tests, trained in forked gloo ranks (see tests/distributed)."""

from __future__ import annotations

SEQ_LENGTH = 64


def tiny_config(data, kind="hope", untie=True, query_groups=2, rope_fraction=None, **changes):
    """A 2-layer Llama-style model (SwiGLU, RMSNorm, no biases), 2 iterations."""
    from megatron_hope.megatron.model import ModelArchitecture
    from megatron_hope.rope.config import PositionEncodingConfig
    from megatron_hope.training.config import PretrainConfig

    encoding = PositionEncodingConfig(
        kind, 16, 10000.0, SEQ_LENGTH if kind == "hope" else None, rope_fraction)
    arch = ModelArchitecture(
        num_layers=2, hidden_size=64, num_attention_heads=4, seq_length=SEQ_LENGTH,
        vocab_size=data["vocab_size"], num_query_groups=query_groups, position_encoding=encoding,
        swiglu=True, normalization="RMSNorm", add_bias_linear=False,
        untie_embeddings_and_output_weights=untie,
    )
    base = dict(
        arch=arch, micro_batch_size=2, global_batch_size=4, train_iters=2, lr=3e-3,
        min_lr=3e-4, lr_warmup_iters=1, eval_interval=100, eval_iters=0,
        log_interval=1, data_path=(data["prefix"],), tokenizer_model=data["tokenizer"],
        split="90,10,0", progress=False,
    )
    base.update(changes)
    return PretrainConfig(**base)


def pretrain(rank, data, save, model_changes, run_changes):
    from megatron_hope.training.cli import run

    _, result = run(tiny_config(data, save=save, **model_changes, **run_changes))
    return result.last_checkpoint


def prepare_data(directory):
    from megatron_hope.data.sample_data import prepare_sample_data
    from megatron_hope.data.tokenizer import build_tokenizer

    sample = prepare_sample_data(directory, vocab_size=600, max_bytes=400_000)
    vocab = build_tokenizer("HuggingFaceTokenizer", str(sample.tokenizer_path)).vocab_size
    return {"prefix": str(sample.data_prefix), "tokenizer": str(sample.tokenizer_path),
            "vocab_size": vocab}
