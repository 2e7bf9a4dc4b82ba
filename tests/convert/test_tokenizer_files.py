"""An export's tokenizer files load offline and agree with the data: eos = EOD, bos, pad.

PYTHONPATH=. python -m pytest tests/convert/test_tokenizer_files.py -q
"""

from __future__ import annotations

import pytest

from megatron_hope.convert.tokenizer_files import special_token_ids, write_tokenizer_files
from megatron_hope.data.tokenizer_args import TokenizerArgs, megatron_includes_special_tokens
from tests.data.tokenizer_kinds import make_tokenizer_kinds

TEXT = "Hello world, naïve 中文 🦊\n\ntwo paragraphs"


@pytest.fixture(scope="module")
def kinds(tmp_path_factory):
    return make_tokenizer_kinds(tmp_path_factory.mktemp("kinds"))


def specs(kinds) -> dict[str, TokenizerArgs]:
    hf = "HuggingFaceTokenizer"
    return {
        "llama3": TokenizerArgs(hf, str(kinds.llama3_directory),
                                tokenizer_hf_include_special_tokens=False),
        "llama3-bos": TokenizerArgs(hf, str(kinds.llama3_directory),
                                    tokenizer_hf_include_special_tokens=True),
        "mistral": TokenizerArgs(hf, str(kinds.mistral_directory)),
        "llama2-sentencepiece": TokenizerArgs("Llama2Tokenizer", str(kinds.sentencepiece_model)),
        "gpt2": TokenizerArgs("GPT2BPETokenizer", vocab_file=str(kinds.gpt2_vocab),
                              merge_file=str(kinds.gpt2_merges)),
    }


@pytest.mark.parametrize("kind", ["llama3", "llama3-bos", "mistral", "llama2-sentencepiece",
                                  "gpt2"])
def test_export_tokenizer_loads_offline_with_the_runs_special_tokens(kinds, kind, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = specs(kinds)[kind].build()
    write_tokenizer_files(tmp_path, tokenizer, max_length=512)
    hf = AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    ids = special_token_ids(tokenizer)
    assert hf.eos_token_id == ids["eos_token_id"] == tokenizer.eod
    # bos only where the data carried one: Mistral's <s> where Megatron-LM includes specials.
    with_bos = {"llama3-bos": 0, "mistral": 1 if megatron_includes_special_tokens() else None}
    assert ids["bos_token_id"] == with_bos.get(kind)
    bare = hf.encode(TEXT, add_special_tokens=False)
    expected = tokenizer.tokenize(TEXT)[len(tokenizer.special_prefix):]
    assert bare == expected
    assert len(hf) == tokenizer.vocab_size


def test_null_tokenizer_exports_no_tokenizer_files(tmp_path):
    tokenizer = TokenizerArgs("NullTokenizer", tokenizer_vocab_size=50).build()
    write_tokenizer_files(tmp_path, tokenizer, max_length=512)
    assert not any(tmp_path.iterdir())
    assert special_token_ids(tokenizer)["eos_token_id"] == tokenizer.eod
