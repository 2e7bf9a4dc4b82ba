"""hope-pretrain with the tokenizers people bring: the 3B example's flags on a Llama directory.

PYTHONPATH=. python -m pytest tests/training/test_tokenizers.py -q
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy
import pytest

from megatron_hope.training.arguments import parse_config
from megatron_hope.training.cli import check_tokenizer_and_data
from tests.data.tokenizer_kinds import make_tokenizer_kinds

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "3b" / "pretrain_torchrun.sh"


def example_tokenizer_flags(tokenizer_model: Path) -> list[str]:
    """The 3B example's tokenizer flags, with its TOKENIZER_MODEL set."""
    line = next(line for line in EXAMPLE.read_text().splitlines() if "--tokenizer-type" in line)
    flags = line.split("#")[0].split()
    return [str(tokenizer_model) if "TOKENIZER_MODEL" in flag else flag for flag in flags]


@pytest.mark.parametrize("kind", ["mistral_directory", "llama3_directory"])
def test_the_3b_example_trains_on_a_llama_directory(tmp_path, kind):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    from megatron_hope.data.cli import main as hope_preprocess

    directory = getattr(make_tokenizer_kinds(tmp_path / "tok"), kind)
    flags = example_tokenizer_flags(directory)
    assert re.search(r"--tokenizer-type HuggingFaceTokenizer --tokenizer-model \S+",
                     " ".join(flags))
    (tmp_path / "in.jsonl").write_text('{"text": "a document"}\n{"text": "another one"}\n')
    prefix = tmp_path / "data"
    assert hope_preprocess(["--input", str(tmp_path / "in.jsonl"), "--output-prefix",
                            str(prefix), "--append-eod", "--no-progress", *flags]) == 0
    config = parse_config(["--data-path", f"{prefix}_text_document", *flags])
    tokenizer = check_tokenizer_and_data(config)
    eos = "</s>" if kind == "mistral_directory" else "<|end_of_text|>"
    assert tokenizer.eod == tokenizer.backend.token_to_id(eos)
    documents = IndexedDataset(f"{prefix}_text_document")
    assert [int(documents[i][-1]) for i in range(len(documents))] == [tokenizer.eod] * 2
    assert numpy.all(documents[0] < tokenizer.vocab_size)
