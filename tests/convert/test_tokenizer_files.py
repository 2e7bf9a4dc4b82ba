"""An export's tokenizer files load offline and agree with the data: eos = EOD, bos, pad.

PYTHONPATH=. python -m pytest tests/convert/test_tokenizer_files.py -q
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

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


def transformers4_python() -> str | None:
    """A Python with transformers 4.x (HOPE_TRANSFORMERS4_PYTHON, or a venv made by
    `python -m venv ~/.cache/megatron-hope/tf457 && .../pip install "transformers==4.57.*"
    sentencepiece protobuf`), or None."""
    default = Path.home() / ".cache" / "megatron-hope" / "tf457" / "bin" / "python"
    found = os.environ.get("HOPE_TRANSFORMERS4_PYTHON") or (str(default) if default.is_file()
                                                            else None)
    return found


_ENCODE = """
import json, sys
from transformers import AutoTokenizer, __version__
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1], local_files_only=True)
print(json.dumps({"version": __version__, "eos": tokenizer.eos_token_id,
                  "default": tokenizer.encode(sys.argv[2]),
                  "bare": tokenizer.encode(sys.argv[2], add_special_tokens=False)}))
"""


@pytest.mark.parametrize("kind", ["llama3", "llama3-bos", "mistral", "llama2-sentencepiece",
                                  "gpt2"])
def test_export_tokenizer_reads_the_same_in_transformers_4_and_5(kinds, kind, tmp_path):
    """Chat-free, no 5.x-only fields; 4.57 and 5.x encode alike, with and without specials."""
    from transformers import AutoTokenizer

    tokenizer = specs(kinds)[kind].build()
    write_tokenizer_files(tmp_path, tokenizer, max_length=512)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert "chat_template" not in config and config["tokenizer_class"] != "TokenizersBackend"
    assert not (tmp_path / "chat_template.jinja").exists()
    five = AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    default = five.encode(TEXT)
    if kind == "llama2-sentencepiece":  # the data carried no BOS: neither does the export
        assert default == tokenizer.tokenize(TEXT)
    python = transformers4_python()
    if python is None:
        pytest.skip("no transformers 4.x Python (HOPE_TRANSFORMERS4_PYTHON)")
    done = subprocess.run([python, "-c", _ENCODE, str(tmp_path), TEXT], capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    four = json.loads(done.stdout.strip().splitlines()[-1])
    assert four["version"].startswith("4.")
    assert (four["eos"], four["default"], four["bare"]) == (
        five.eos_token_id, default, five.encode(TEXT, add_special_tokens=False))


def test_null_tokenizer_exports_no_tokenizer_files(tmp_path):
    tokenizer = TokenizerArgs("NullTokenizer", tokenizer_vocab_size=50).build()
    write_tokenizer_files(tmp_path, tokenizer, max_length=512)
    assert not any(tmp_path.iterdir())
    assert special_token_ids(tokenizer)["eos_token_id"] == tokenizer.eod
