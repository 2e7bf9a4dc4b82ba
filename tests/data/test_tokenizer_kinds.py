"""The tokenizers people bring: their EOD, BOS and errors, and the flags shared by every CLI.

PYTHONPATH=. python -m pytest tests/data/test_tokenizer_kinds.py -q
"""

from __future__ import annotations

import importlib.util
import json

import pytest

from megatron_hope.data.backends import GigatokenEncoder, select_encoder
from megatron_hope.data.tokenizer_args import (
    TokenizerArgs,
    build_tokenizer,
    megatron_includes_special_tokens,
)
from tests.data.tokenizer_kinds import make_tokenizer_kinds

TEXTS = ["Hello world, naïve 中文 🦊", "two\n\nparagraphs", "x"]


@pytest.fixture(scope="module")
def kinds(tmp_path_factory):
    return make_tokenizer_kinds(tmp_path_factory.mktemp("kinds"))


def test_llama3_directory_takes_its_own_eos_and_bos(kinds):
    plain = build_tokenizer("HuggingFaceTokenizer", kinds.llama3_directory,
                            include_special_tokens=False)
    assert (plain.eod, plain.bos) == (1, 0)  # <|end_of_text|>, <|begin_of_text|>
    assert plain.special_prefix == () and 0 not in plain.tokenize(TEXTS[0])
    with_bos = build_tokenizer("HuggingFaceTokenizer", kinds.llama3_directory,
                               include_special_tokens=True)
    assert with_bos.special_prefix == (0,)
    assert with_bos.encode_batch(TEXTS) == [[0, *ids] for ids in plain.encode_batch(TEXTS)]
    # gigatoken encodes the bare text; the BOS is put before it, and the result is exact.
    encoder = select_encoder(with_bos, TEXTS)
    assert encoder.encode_batch(TEXTS) == with_bos.encode_batch(TEXTS)
    if importlib.util.find_spec("gigatoken") is not None:
        assert isinstance(encoder, GigatokenEncoder)
    default = build_tokenizer("HuggingFaceTokenizer", kinds.llama3_directory)
    assert default.include_special_tokens == megatron_includes_special_tokens()


def test_mistral_directory_ends_documents_with_its_eos(kinds):
    tokenizer = build_tokenizer("HuggingFaceTokenizer", kinds.mistral_directory)
    assert (tokenizer.eod, tokenizer.bos) == (2, 1)  # </s>, <s>
    assert tokenizer.vocab_size == 400
    assert tokenizer.detokenize(tokenizer.backend.encode(TEXTS[0], add_special_tokens=False).ids
                                ).strip() == TEXTS[0]


def test_sentencepiece_types_add_no_bos_and_end_with_eos(kinds):
    for tokenizer_type in ("SentencePieceTokenizer", "Llama2Tokenizer"):
        tokenizer = build_tokenizer(tokenizer_type, kinds.sentencepiece_model)
        assert (tokenizer.eod, tokenizer.bos, tokenizer.vocab_size) == (2, 1, 400)
        assert 1 not in tokenizer.tokenize(TEXTS[0])


def test_gpt2_vocab_and_merges(kinds):
    tokenizer = build_tokenizer("GPT2BPETokenizer", None, kinds.gpt2_vocab, kinds.gpt2_merges)
    assert tokenizer.eod == json.loads(kinds.gpt2_vocab.read_text())["<|endoftext|>"]
    assert tokenizer.bos is None


def test_null_tokenizer_follows_the_installed_megatron_core():
    from megatron.core.tokenizers.text.libraries.null_tokenizer import NullTokenizer

    tokenizer = build_tokenizer("NullTokenizer", None, vocab_size=100)
    reference = NullTokenizer(100)
    assert (tokenizer.vocab_size, tokenizer.eod) == (reference.vocab_size, reference.eod)
    assert tokenizer.tokenize("5 6 7") == [5, 6, 7]
    with pytest.raises(ValueError, match="--vocab-size"):
        build_tokenizer("NullTokenizer", None)
    with pytest.raises(ValueError, match="space-separated integer ids"):
        tokenizer.tokenize("not ids")


def directory_without_eos(kinds, directory):
    """The Llama-3 tokenizer.json with a tokenizer_config.json that names no eos_token."""
    directory.mkdir()
    source = kinds.llama3_directory / "tokenizer.json"
    (directory / "tokenizer.json").write_bytes(source.read_bytes())
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>"}
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return directory


def test_eod_token_overrides_and_is_required_where_there_is_no_eos(kinds, tmp_path):
    no_eos = directory_without_eos(kinds, tmp_path / "no_eos")
    with pytest.raises(ValueError, match=r"no_eos.*no end-of-document.*--eod-token TOKEN"):
        build_tokenizer("HuggingFaceTokenizer", no_eos)
    tokenizer = build_tokenizer("HuggingFaceTokenizer", no_eos, eod_token="<|end_of_text|>")
    assert tokenizer.eod == 1
    with pytest.raises(ValueError, match=r"--eod-token '<\|nope\|>'"):
        build_tokenizer("HuggingFaceTokenizer", kinds.llama3_directory, eod_token="<|nope|>")
    assert build_tokenizer("Llama2Tokenizer", kinds.sentencepiece_model, eod_token="<s>").eod == 1
    with pytest.raises(ValueError, match=r"--eod-token '<\|nope\|>'"):
        build_tokenizer("Llama2Tokenizer", kinds.sentencepiece_model, eod_token="<|nope|>")


def test_hope_preprocess_exits_2_naming_the_missing_eos(kinds, tmp_path, capsys):
    from megatron_hope.data.cli import main

    no_eos = directory_without_eos(kinds, tmp_path / "tok")
    (tmp_path / "in.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(SystemExit) as exit_status:
        main(["--input", str(tmp_path / "in.jsonl"), "--output-prefix", str(tmp_path / "o"),
              "--tokenizer-model", str(no_eos), "--append-eod"])
    assert exit_status.value.code == 2
    assert "--eod-token" in capsys.readouterr().err


def test_every_cli_takes_the_same_tokenizer_flags(kinds):
    from megatron_hope.data.cli import preprocess_parser
    from megatron_hope.eval.cli import build_parser as eval_parser
    from megatron_hope.training.arguments import build_parser as pretrain_parser

    flags = ["--tokenizer-type", "GPT2BPETokenizer", "--vocab-file", str(kinds.gpt2_vocab),
             "--merge-file", str(kinds.gpt2_merges), "--eod-token", "<|endoftext|>",
             "--tokenizer-hf-include-special-tokens"]
    parsed = [
        preprocess_parser().parse_args(["--input", "x", "--output-prefix", "y", *flags]),
        pretrain_parser().parse_args(flags),
        eval_parser().parse_args(["copy", "--load", "x", "--output-dir", "y", *flags]),
    ]
    specs = {TokenizerArgs.of(args) for args in parsed}
    assert len(specs) == 1
    spec = specs.pop()
    assert spec.tokenizer_hf_include_special_tokens is True
    assert spec.build().eod == json.loads(kinds.gpt2_vocab.read_text())["<|endoftext|>"]
    null = pretrain_parser().parse_args(["--tokenizer-type", "NullTokenizer", "--vocab-size", "9"])
    assert TokenizerArgs.of(null).tokenizer_vocab_size == 9
