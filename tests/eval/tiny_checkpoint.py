"""A tiny hope-pretrain checkpoint (2 iterations on a small sample corpus) shared by the tests."""

from __future__ import annotations

TRAIN_LENGTH = 64


def train(rank, data, save):
    """Runs in a fresh rank (run_on_ranks), where megatron's global state stays."""
    import dataclasses

    from megatron_hope.training.cli import run
    from tests.training.test_parallel_parity import tiny_config

    config = tiny_config(data, train_iters=2, eval_interval=2, save=save)
    # Llama-shaped (RMSNorm, SwiGLU, no biases, GQA) like the paper's models, so that the HF
    # exporter can express it; HoPE at d = 16, L = 64.
    arch = dataclasses.replace(config.arch, normalization="RMSNorm", swiglu=True,
                               add_bias_linear=False, num_query_groups=2)
    run(config.replace(arch=arch))
    return save


def build(tmp_path_factory) -> dict:
    from megatron_hope.data.sample_data import prepare_sample_data
    from megatron_hope.data.tokenizer import build_tokenizer
    from tests.distributed import run_on_ranks

    sample = prepare_sample_data(tmp_path_factory.mktemp("data"), vocab_size=600,
                                 max_bytes=100_000)
    vocab = build_tokenizer("HuggingFaceTokenizer", str(sample.tokenizer_path)).vocab_size
    data = {"prefix": str(sample.data_prefix), "tokenizer": str(sample.tokenizer_path),
            "vocab_size": vocab}
    save = str(tmp_path_factory.mktemp("ckpt"))
    run_on_ranks(1, train, data, save)
    return {"data": data, "load": save}
