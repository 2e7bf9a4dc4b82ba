"""Every combination of flags of the six CLIs gives a run or exit status 2 naming a flag.

    python -m pytest -x -q tests/robustness/test_cli_flags.py

Flags and their value kinds come from each CLI's own argparse parser (`flag_fuzz`). "A run"
stops where the real work would start, at a stub that raises `ReachedWork`:

| CLI | stops at (the first step of real work) |
|---|---|
| hope-pretrain | `initialize_parallel_state` (after the config and the tokenizer/data checks) |
| hope-pretrain, deep | `build_train_and_validation` (model, optimizer and schedule built) |
| hope-convert | `ensure_single_process` (before the checkpoint is read) |
| hope-preprocess | `schedule.encode_pending` (inputs planned, tokenizer backend chosen) |
| hope-eval | `load_scorer` (before the model is loaded; `report` runs to the end) |
| hope-rope | nowhere: it only computes the frequency table, so every run goes to the end |
| hope-train-tokenizer | `train_bpe_tokenizer_from_texts` (inputs found, flags checked) |

Hypothesis is derandomized: CI sees the same command lines every run.
"""

from __future__ import annotations

from megatron_hope.rope.frequencies import POSITION_ENCODING_TYPES
from tests.distributed import run_on_ranks
from tests.robustness.flag_fuzz import fuzz_cli, reach_work

VALID_EXAMPLES = {
    # Valid values of string flags, by dest (argparse knows only their type, str).
    "rope_scaling": ["linear:4", "yarn:8:2048", "yarn:2"],
    "split": ["90,10,0", "1/1/1"],
    "lengths": ["64,128"],
    "counts": ["2,3"],
    "depths": ["0,0.5,1"],
    "max_shard_size": ["5GB", "100MB"],
    "iterations": ["all", "1,2"],
    "blend_weights": ["natural", "redpajama", "c4=1"],
    "json_keys": ["text"],
    "position_embedding_type": list(POSITION_ENCODING_TYPES),
}
"""Hints only: a flag missing here is still fuzzed with every other kind of value."""


def test_hope_pretrain_flags(fuzz_paths, scratch_cwd):
    from megatron_hope.training.arguments import build_parser
    from megatron_hope.training.cli import main

    valid = ["--data-path", fuzz_paths.valid["data_prefix"],
             "--tokenizer-model", fuzz_paths.valid["tokenizer"]]
    fuzz_cli(main, build_parser(), fuzz_paths, VALID_EXAMPLES, {None: valid},
             {"megatron_hope.training.loop.initialize_parallel_state": reach_work},
             max_examples=500)


def test_hope_convert_flags(fuzz_paths, scratch_cwd):
    from megatron_hope.convert.cli import build_parser, main

    valid = ["--load-dir", fuzz_paths.missing, "--save-dir", "export"]
    fuzz_cli(main, build_parser(), fuzz_paths, VALID_EXAMPLES, {None: valid},
             {"megatron_hope.convert.export.ensure_single_process": reach_work,
              "megatron_hope.convert.import_hf.ensure_single_process": reach_work},
             max_examples=400)


def test_hope_preprocess_flags(fuzz_paths, scratch_cwd):
    from megatron_hope.data.cli import main, preprocess_parser

    valid = ["--input", fuzz_paths.valid["jsonl"], "--output-prefix", "out/corpus",
             "--tokenizer-model", fuzz_paths.valid["tokenizer"]]
    fuzz_cli(main, preprocess_parser(), fuzz_paths, VALID_EXAMPLES, {None: valid},
             {"megatron_hope.data.preprocess.schedule.encode_pending": reach_work},
             max_examples=300)


def test_hope_eval_flags(fuzz_paths, scratch_cwd):
    from megatron_hope.eval.cli import SUBCOMMANDS, build_parser, main

    model = ["--load", fuzz_paths.missing, "--output-dir", "results"]
    valid = {command: model for command in SUBCOMMANDS}
    valid["ppl-vs-length"] = [*model, "--data", fuzz_paths.valid["data_prefix"]]
    valid["report"] = ["--output-dir", "report"]
    fuzz_cli(main, build_parser(), fuzz_paths, VALID_EXAMPLES, valid,
             {"megatron_hope.eval.scorers.load_scorer": reach_work}, max_examples=500)


def test_hope_rope_flags(fuzz_paths, scratch_cwd):
    from megatron_hope.rope.cli import build_parser, main

    fuzz_cli(main, build_parser(), fuzz_paths, VALID_EXAMPLES, {None: []}, {}, max_examples=300)


def test_hope_train_tokenizer_flags(fuzz_paths, scratch_cwd):
    from megatron_hope.data.cli import train_tokenizer_main, train_tokenizer_parser

    valid = ["--input", fuzz_paths.valid["jsonl"], "--output", "tokenizer/"]
    fuzz_cli(train_tokenizer_main, train_tokenizer_parser(), fuzz_paths, VALID_EXAMPLES,
             {None: valid},
             {"megatron_hope.data.tokenizer.train_bpe_tokenizer_from_texts": reach_work},
             max_examples=300)


def _deep_pretrain_fuzz(rank, paths, max_examples):
    """In a fresh rank (process groups come and go in it): the fuzz past the process group."""
    import os
    import tempfile

    from megatron_hope.training.arguments import build_parser
    from megatron_hope.training.cli import main

    os.chdir(tempfile.mkdtemp(prefix="deep-fuzz-"))
    data = ["--data-path", paths.valid["data_prefix"], "--tokenizer-model",
            paths.valid["tokenizer"]]

    def sample_data(config, run_dir=None):
        # The embedded default's sample corpus takes ~10 s to build: the fixture's stands in.
        return config.replace(data_path=(paths.valid["data_prefix"],),
                              tokenizer_model=paths.valid["tokenizer"],
                              tokenizer_type="HuggingFaceTokenizer")

    fuzz_cli(main, build_parser(), paths, VALID_EXAMPLES, {None: data},
             {"megatron_hope.training.loop.build_train_and_validation": reach_work,
              "megatron_hope.training.cli.with_embedded_sample": sample_data},
             max_examples=max_examples)


def test_hope_pretrain_flags_past_the_process_group(fuzz_paths):
    """Model, optimizer and schedule are built from the flags too (dropout, Adam betas, sizes
    are checked there by megatron-core and torch, with messages that name no flag)."""
    run_on_ranks(1, _deep_pretrain_fuzz, fuzz_paths, 120)
