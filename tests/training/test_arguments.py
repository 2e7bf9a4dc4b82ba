"""Bad input stops with exit status 2 and a message that names the flag, the value and the fix."""

from __future__ import annotations

import pytest

from megatron_hope.megatron.model import transformer_engine_available
from megatron_hope.training.arguments import parse_config


def rejected(argv, capsys) -> str:
    with pytest.raises(SystemExit) as excinfo:
        parse_config(argv)
    assert excinfo.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--hope-train-length", "4"], ["--hope-train-length (4)", "no rotated pair"]),
        (["--num-attention-heads", "6", "--hidden-size", "384", "--tensor-model-parallel-size",
          "4"], ["--num-attention-heads (6)", "--tensor-model-parallel-size (4)"]),
        (["--data-path", "/nonexistent/corpus_text_document", "--tokenizer-model", "x.json"],
         ["--data-path", "/nonexistent/corpus_text_document.bin", "does not exist"]),
        (["--position-embedding-type", "hopex"], ["--position-embedding-type", "'hopex'",
                                                  "hope, rope"]),
        (["--rope-fraction", "0.5"], ["--rope-fraction (0.5)", "p-rope"]),
        (["--position-embedding-type", "p-rope", "--rope-fraction", "1.5"],
         ["--rope-fraction (1.5)", "(0, 1]"]),
        (["--num-layers", "3", "--pipeline-model-parallel-size", "2"],
         ["--num-layers (3)", "--pipeline-model-parallel-size (2)"]),
        (["--group-query-attention"], ["--num-query-groups"]),
        (["--min-lr", "1", "--lr", "0.1"], ["--min-lr (1.0)"]),
        (["--save-interval", "10"], ["--save-interval", "--save"]),
        (["--apply-rope-fusion"], ["--apply-rope-fusion", "transformer_engine"]),
    ],
)
def test_bad_flags_name_the_flag(argv, expected, capsys):
    message = rejected(argv, capsys)
    for part in expected:
        assert part in message


@pytest.mark.skipif(transformer_engine_available(), reason="Transformer Engine is installed here")
def test_fp8_without_transformer_engine(capsys):
    message = rejected(["--fp8-format", "e4m3"], capsys)
    assert "--fp8-format e4m3 needs Transformer Engine" in message


@pytest.mark.skipif(transformer_engine_available(), reason="Transformer Engine is installed here")
def test_transformer_engine_impl_without_te(capsys):
    message = rejected(["--transformer-impl", "transformer_engine"], capsys)
    assert "--transformer-impl transformer_engine needs Transformer Engine" in message


def test_defaults_are_the_embedded_hope_run():
    config = parse_config([])
    encoding = config.arch.position_encoding
    assert encoding.position_embedding_type == "hope"
    assert encoding.hope_train_length == config.arch.seq_length == 256
    assert encoding.kv_channels == 64
    assert encoding.rotated_pairs == 13  # θ_i ≥ 2π/256 for i ≤ 12
    assert config.data_path is None


def test_hope_train_length_defaults_to_seq_length_and_can_differ():
    assert parse_config(["--seq-length", "512"]).arch.position_encoding.hope_train_length == 512
    config = parse_config(["--seq-length", "512", "--hope-train-length", "1024"])
    assert config.arch.position_encoding.hope_train_length == 1024
    assert config.arch.position_encoding.rotated_pairs == 18


def test_unreadable_tokenizer_is_a_clear_error(tmp_path, capsys):
    from megatron_hope.training.cli import main

    prefix = tmp_path / "corpus_text_document"
    for suffix in (".bin", ".idx"):
        (tmp_path / f"corpus_text_document{suffix}").write_bytes(b"")
    code = main(["--data-path", str(prefix), "--tokenizer-model", str(tmp_path / "missing.json")])
    assert code == 2
    assert "--tokenizer-model" in capsys.readouterr().err


def test_a_tokenizer_without_data_is_refused_not_replaced(tmp_path, capsys):
    """The embedded default trains on its own sample corpus and tokenizer: a named tokenizer
    without --data-path would silently be replaced by it."""
    from megatron_hope.training.cli import main

    tokenizer = tmp_path / "tokenizer.json"
    tokenizer.write_text("{}")
    with pytest.raises(SystemExit) as stopped:  # a usage error, as argparse reports one
        main(["--tokenizer-model", str(tokenizer)])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert f"--tokenizer-model {tokenizer} without --data-path" in error, error
    mock = parse_config(["--mock-data", "--tokenizer-type", "NullTokenizer", "--vocab-size", "64",
                         "--merge-file", str(tokenizer)])
    assert mock.mock_data  # --mock-data names no corpus: nothing is replaced


def test_megatron_flags_reach_the_config():
    config = parse_config([
        "--num-layers", "6", "--hidden-size", "512", "--num-attention-heads", "8",
        "--group-query-attention", "--num-query-groups", "2", "--ffn-hidden-size", "1376",
        "--swiglu", "--normalization", "RMSNorm", "--untie-embeddings-and-output-weights",
        "--disable-bias-linear", "--init-method-std", "0.01", "--seq-length", "512",
        "--max-position-embeddings", "2048", "--position-embedding-type", "p-rope",
        "--rope-fraction", "0.25", "--rotary-base", "500000", "--micro-batch-size", "2",
        "--global-batch-size", "16", "--lr", "3e-4", "--min-lr", "3e-5", "--lr-warmup-iters",
        "7", "--lr-decay-style", "linear", "--weight-decay", "0.1", "--adam-beta2", "0.95",
        "--clip-grad", "0.5", "--tensor-model-parallel-size", "2",
        "--pipeline-model-parallel-size", "3", "--use-distributed-optimizer", "--save", "out",
        "--save-interval", "50", "--exit-interval", "70", "--log-interval", "3",
        "--eval-interval", "9", "--eval-iters", "4", "--seed", "7", "--no-progress",
    ])
    arch = config.arch
    assert (arch.num_layers, arch.hidden_size, arch.num_attention_heads) == (6, 512, 8)
    assert (arch.query_groups, arch.ffn_size, arch.head_dim) == (2, 1376, 64)
    assert arch.swiglu and arch.normalization == "RMSNorm"
    assert arch.untie_embeddings_and_output_weights and not arch.add_bias_linear
    assert arch.init_method_std == 0.01 and arch.max_positions == 2048
    encoding = arch.position_encoding
    assert (encoding.position_embedding_type, encoding.rope_fraction) == ("p-rope", 0.25)
    assert encoding.rotary_base == 500000 and encoding.rotated_pairs == 8
    assert (config.micro_batch_size, config.global_batch_size, config.lr) == (2, 16, 3e-4)
    assert (config.min_lr, config.lr_warmup_iters, config.lr_decay_style) == (3e-5, 7, "linear")
    assert (config.weight_decay, config.adam_beta2, config.clip_grad) == (0.1, 0.95, 0.5)
    assert config.tensor_model_parallel_size == 2 and config.pipeline_model_parallel_size == 3
    assert config.use_distributed_optimizer and config.save == "out"
    assert (config.save_interval, config.exit_interval, config.log_interval) == (50, 70, 3)
    assert (config.eval_interval, config.eval_iters, config.seed) == (9, 4, 7)
    assert not config.progress
