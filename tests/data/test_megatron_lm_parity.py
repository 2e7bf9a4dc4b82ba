"""hope-preprocess writes the bytes Megatron-LM's own tools/preprocess_data.py writes.

For each tokenizer kind people bring (Llama-2 SentencePiece, Llama-3 and Mistral HF directories,
GPT-2 vocab/merges, NullTokenizer), both tools run on the same corpus with the same flags and
`--append-eod`; their `.bin` and `.idx` must be byte-identical. Megatron-LM is the tag paired
with the installed megatron-core (tests/data/megatron_lm.py), run offline in a subprocess.

    PYTHONPATH=. python -m pytest tests/data/test_megatron_lm_parity.py -q -m megatron_lm

Deliberate differences, kept out of the corpus: hope-preprocess skips empty and all-whitespace
documents (counted as `empty_document`; Megatron-LM writes them), and encodes an added token's
text inside a document (`</s>` written in a web page) as text, where Megatron-LM's
HuggingFaceTokenizer turns it into the special id.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from megatron_hope.data.cli import main as hope_preprocess
from megatron_hope.data.tokenizer_args import megatron_includes_special_tokens
from tests.data import megatron_lm
from tests.data.tokenizer_kinds import make_tokenizer_kinds

pytestmark = pytest.mark.megatron_lm

CORPUS = [
    "Hello world. naïve ünïcödé: 中文, 日本語, русский, العربية, emoji 🦊🧪, combining é",
    "first paragraph\n\nsecond paragraph after an empty line\n\n\n\nand one after three\n",
    "  leading spaces, trailing spaces  \n\ttabs\tand  double  spaces\r\nwindows line end",
    "def rotate(q, k):\n    return q @ k.T  # code\n\n\nclass Empty:\n    pass\n",
    "The quick brown fox jumps over the lazy dog. " * 400,  # long: ~18k characters
    "x",
    "numbers 1234567890 3.14159 1e-10 and punctuation !?.,;:'\"()[]{}<>",
    "\u00a0non-breaking\u2009thin\u200bzero-width spaces and é vs e\u0301",
] * 3


def kinds_and_flags(kinds) -> dict[str, list[str]]:
    """Tokenizer flags, identical for both tools, per kind."""
    llama3 = ["--tokenizer-type", "HuggingFaceTokenizer", "--tokenizer-model",
              str(kinds.llama3_directory)]
    # The special-tokens flag that is not the default at this tag (each tag has one spelling).
    other = ("--tokenizer-hf-no-include-special-tokens" if megatron_includes_special_tokens()
             else "--tokenizer-hf-include-special-tokens")
    return {
        "llama2-sentencepiece": ["--tokenizer-type", "Llama2Tokenizer", "--tokenizer-model",
                                 str(kinds.sentencepiece_model)],
        "sentencepiece": ["--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model",
                          str(kinds.sentencepiece_model)],
        "llama3-hf": llama3,
        f"llama3-hf{other.removeprefix('--tokenizer-hf')}": [*llama3, other],
        "mistral-hf": ["--tokenizer-type", "HuggingFaceTokenizer", "--tokenizer-model",
                       str(kinds.mistral_directory)],
        "gpt2-bpe": ["--tokenizer-type", "GPT2BPETokenizer", "--vocab-file",
                     str(kinds.gpt2_vocab), "--merge-file", str(kinds.gpt2_merges)],
        "null": ["--tokenizer-type", "NullTokenizer", "--vocab-size", "1000"],
    }


def gpt2_stand_in(directory: Path, kinds) -> None:
    """Megatron-LM's GPT2BPETokenizer loads `AutoTokenizer.from_pretrained("gpt2", vocab_file=,
    merges_file=)`: offline, a folder named gpt2 in the working directory is what it finds.
    It holds the same vocab.json and merges.txt the flags name."""
    gpt2 = directory / "gpt2"
    gpt2.mkdir(parents=True, exist_ok=True)
    (gpt2 / "vocab.json").write_bytes(kinds.gpt2_vocab.read_bytes())
    (gpt2 / "merges.txt").write_bytes(kinds.gpt2_merges.read_bytes())
    (gpt2 / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    special = "<|endoftext|>"
    config = {"tokenizer_class": "GPT2Tokenizer", "bos_token": special, "eos_token": special,
              "unk_token": special, "add_bos_token": False, "model_max_length": 1024}
    (gpt2 / "tokenizer_config.json").write_text(json.dumps(config))


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """{kind: (megatron_prefix, hope_prefix)} after running both tools on every kind."""
    tool = megatron_lm.unpack_tool_or_skip()
    root = tmp_path_factory.mktemp("parity")
    kinds = make_tokenizer_kinds(root / "tokenizers")
    gpt2_stand_in(root, kinds)
    text_corpus = root / "corpus.jsonl"
    text_corpus.write_text(
        "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in CORPUS),
        encoding="utf-8",
    )
    id_corpus = root / "ids.jsonl"
    id_corpus.write_text("".join(
        json.dumps({"text": " ".join(str((7 * i + j) % 999) for j in range(1 + i % 50))}) + "\n"
        for i in range(60)
    ))
    flags = kinds_and_flags(kinds)
    runs, pairs = [], {}
    for kind, tokenizer_flags in flags.items():
        corpus = id_corpus if kind == "null" else text_corpus
        common = ["--input", str(corpus), "--append-eod", *tokenizer_flags]
        megatron_prefix, hope_prefix = root / "megatron" / kind, root / "hope" / kind
        megatron_prefix.parent.mkdir(exist_ok=True)
        runs.append([*common, "--output-prefix", str(megatron_prefix), "--workers", "1"])
        pairs[kind] = (megatron_prefix, hope_prefix, common)
    started = time.perf_counter()
    megatron_lm.run_preprocess_data(tool, runs, cwd=root)
    megatron_seconds = time.perf_counter() - started
    started = time.perf_counter()
    for _, hope_prefix, common in pairs.values():
        argv = [*common, "--output-prefix", str(hope_prefix), "--no-progress", "--no-subsets"]
        assert hope_preprocess(argv) == 0
    print(f"\n{megatron_lm.archive_tag()}: Megatron-LM {megatron_seconds:.1f} s for "
          f"{len(runs)} runs, hope-preprocess {time.perf_counter() - started:.1f} s")
    return {kind: (m, h) for kind, (m, h, _) in pairs.items()}


KINDS = ["llama2-sentencepiece", "sentencepiece", "llama3-hf", "llama3-hf-other", "mistral-hf",
         "gpt2-bpe", "null"]


@pytest.mark.parametrize("kind", KINDS)
def test_bin_and_idx_are_byte_identical(outputs, kind):
    if kind == "llama3-hf-other":
        kind = next(k for k in outputs if k.startswith("llama3-hf-"))
    megatron_prefix, hope_prefix = outputs[kind]
    for suffix in (".bin", ".idx"):
        megatron_file = Path(f"{megatron_prefix}_text_document{suffix}")
        hope_file = Path(f"{hope_prefix}_text_document{suffix}")
        expected, got = megatron_file.read_bytes(), hope_file.read_bytes()
        assert len(expected) > 0
        assert got == expected, f"{kind}: {hope_file} differs from Megatron-LM's {megatron_file}"
    print(f"{megatron_lm.archive_tag()} {kind}: .bin/.idx byte-identical "
          f"({len(expected)} idx bytes)")


def test_llama3_documents_start_with_bos_where_megatron_lm_adds_it(outputs):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    dataset = IndexedDataset(f"{outputs['llama3-hf'][1]}_text_document")
    first = dataset[0].tolist()
    assert first[-1] == 1  # <|end_of_text|>, appended by --append-eod
    assert (first[0] == 0) == megatron_includes_special_tokens()  # <|begin_of_text|>
