"""Inputs the robustness tests share: real sample data, bad files, and a scratch working
directory for everything a fuzzed command line creates."""

from __future__ import annotations

import os

import pytest

from tests.robustness.flag_fuzz import Paths


@pytest.fixture(scope="session")
def sample_data(tmp_path_factory):
    """A tokenizer and a `.bin/.idx` prefix with enough documents for the default --split."""
    from megatron_hope.data.sample_data import prepare_sample_data

    return prepare_sample_data(tmp_path_factory.mktemp("sample"), vocab_size=600,
                               max_bytes=600_000)


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """The tiny trained checkpoint hope-eval's tests use (2 iterations, built once)."""
    from tests.eval.tiny_checkpoint import build

    return build(tmp_path_factory)


@pytest.fixture(scope="module")
def fuzz_paths(tmp_path_factory, sample_data) -> Paths:
    """What a path flag may get, in a fresh directory per test module."""
    root = tmp_path_factory.mktemp("fuzz")
    (root / "empty_dir").mkdir()
    (root / "junk.txt").write_text("junk\n")
    (root / "in.jsonl").write_text('{"text": "hello world"}\n{"text": "more words here"}\n')
    return Paths(
        valid={"tokenizer": str(sample_data.tokenizer_path),
               "data_prefix": str(sample_data.data_prefix), "jsonl": str(root / "in.jsonl")},
        missing=str(root / "missing" / "nothing"),
        directory=str(root / "empty_dir"),
        file=str(root / "junk.txt"),
    )


@pytest.fixture
def scratch_cwd(tmp_path):
    """Relative paths on a fuzzed command line land here, not in the checkout."""
    previous = os.getcwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(previous)
