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
