"""The Megatron-LM-loop examples (`*/pretrain_megatron_lm*`) describe the run of the
`hope-pretrain` script beside each: same model, data, batch and schedule.

    PYTHONPATH=. python -m pytest -q tests/test_examples_megatron_lm.py

Each script's `DRY_RUN` command goes through what `tools/pretrain_hope_gpt.py` does with it
(`split_path_flag`, `megatron_lm_argv`) into Megatron-LM's own parser (`parse_args` with
`add_hope_arguments`, unknown flags refused) and its `validate_args` at the script's world size,
from the checkout $MEGATRON_LM_PATH names (the GPU image's), else the tag that pairs with the
installed megatron-core (../shared/megatron-lm; skipped, saying why, where it is absent).
Importing `megatron.training` sets process-wide state, so all commands are parsed in one
subprocess (this module run as a script). The result is compared with `hope-pretrain`'s parse of
its twin's command: every setting both parsers know is equal, but for the few they spell
differently (`canonical`).
"""

from __future__ import annotations

import contextlib
import enum
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from megatron_hope.integrations.launcher import (
    ARGS_DEFAULTS,
    ENV_VAR,
    find_megatron_lm,
    split_path_flag,
)
from megatron_hope.megatron.model import padded_vocab_size
from megatron_hope.training.arguments import build_parser
from tests.test_examples import (
    EXAMPLES,
    LLAMA_VOCAB,
    REPO,
    _name,
    dry_run,
    pretrain_args,
    world_size,
)
from tests.test_examples import VARIANTS as SCRIPT_VARIANTS

TWINS = {
    EXAMPLES / "125m/pretrain_megatron_lm.sh": EXAMPLES / "125m/pretrain_torchrun.sh",
    EXAMPLES / "3b/pretrain_megatron_lm.sh": EXAMPLES / "3b/pretrain_torchrun.sh",
    EXAMPLES / "3b/pretrain_megatron_lm_slurm.sbatch": EXAMPLES / "3b/pretrain_slurm.sbatch",
}
"""Megatron-LM-loop script: the `hope-pretrain` script it mirrors."""
LAUNCHER = "pretrain_hope_gpt.py"
MUST_MATCH = (
    "num_layers", "hidden_size", "num_attention_heads", "num_query_groups", "ffn_hidden_size",
    "kv_channels", "seq_length", "max_position_embeddings", "swiglu", "normalization",
    "add_bias_linear", "untie_embeddings_and_output_weights", "init_method_std",
    "hidden_dropout", "attention_dropout", "position_embedding_type", "rotary_base",
    "hope_train_length", "tokenizer_type", "tokenizer_model", "data_path", "split", "seed",
    "micro_batch_size", "global_batch_size", "train_iters", "lr", "min_lr", "lr_decay_style",
    "lr_warmup_iters", "lr_decay_iters", "adam_beta1", "adam_beta2", "adam_eps",
    "weight_decay", "clip_grad", "bf16", "transformer_impl", "tensor_model_parallel_size",
    "pipeline_model_parallel_size", "use_distributed_optimizer", "overlap_grad_reduce",
    "overlap_param_gather", "recompute_granularity", "sequence_parallel", "apply_rope_fusion",
    "attention_backend",
)
"""The settings that make the run what it is: each must be among those compared."""
ENCODINGS = {"ab2": {"POSITION_EMBEDDING_TYPE": "ab2"}, "nope": {"POSITION_EMBEDDING_TYPE": "none"}}
"""Besides the branches test_examples.py switches: an ablation and NoPE, which reach
Megatron-LM's parser as `rope` and `none` plus our type."""
VARIANTS = {**SCRIPT_VARIANTS, **ENCODINGS}
HOPE_ONLY = {"keep_last_checkpoints"}
"""`hope-pretrain` flags Megatron-LM lacks (it keeps every checkpoint)."""
COMMON_VARIABLES = {"RUN_DIR": "/runs/example", "MEGATRON_LM_PATH": "/opt/megatron-lm"}
"""What both twins get: one absolute run dir (so the paths compare; a dry run creates nothing),
a Megatron-LM checkout."""


def test_every_megatron_lm_script_has_a_twin():
    assert sorted(EXAMPLES.glob("*/pretrain_megatron_lm*")) == sorted(TWINS)


@pytest.mark.parametrize("script", list(TWINS), ids=_name)
def test_the_script_exports_what_megatron_lm_asks_for(script):
    """Megatron-LM's `validate_args` wants CUDA_DEVICE_MAX_CONNECTIONS=1 with TP > 1 (before
    Blackwell), as its launch scripts export it."""
    assert "export CUDA_DEVICE_MAX_CONNECTIONS=1" in script.read_text()


def megatron_lm_command(script: Path, tmp_path: Path, variant: str) -> tuple[list[str], int]:
    """The launcher's flags in the script's DRY_RUN command (`--megatron-lm-path` included),
    and the GPUs it launches on."""
    words = dry_run(script, tmp_path, **COMMON_VARIABLES, **VARIANTS[variant])
    launcher = next(i for i, word in enumerate(words) if Path(word).name == LAUNCHER)
    return words[launcher + 1:], world_size(script, words)


# -- Megatron-LM's parser, in a subprocess ----------------------------------------------------


def plain(value):
    """A parsed value as JSON carries it: enums by name (AttnBackend.fused, Signals.SIGTERM)."""
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def parse_with_megatron_lm(cases: list[dict]) -> list[dict]:
    """Megatron-LM's `parse_args` + `validate_args` of each case's launcher flags (run in the
    subprocess, with the Megatron-LM folder first on sys.path)."""
    from megatron.training import arguments

    from megatron_hope.integrations.megatron_lm import add_hope_arguments, megatron_lm_argv
    from megatron_hope.megatron.cpu.megatron_lm import megatron_lm_cpu_execution

    results = []
    for case in cases:
        _, flags = split_path_flag(case["flags"])
        sys.argv = [LAUNCHER, *megatron_lm_argv(flags)]
        os.environ.update(RANK="0", WORLD_SIZE=str(case["world_size"]))
        errors = io.StringIO()
        try:
            with contextlib.redirect_stderr(errors):
                args = arguments.parse_args(extra_args_provider=add_hope_arguments,
                                            ignore_unknown_args=False)
        except SystemExit:
            usage_and_error = errors.getvalue().strip().splitlines() or [""]
            results.append({"error": f"parse_args: {usage_and_error[-1]}"})
            continue
        parsed = {key: plain(value) for key, value in vars(args).items()}
        try:
            # megatron_lm_cpu_execution: validate_args reads cuda:0's architecture (L6).
            with megatron_lm_cpu_execution(), contextlib.redirect_stdout(io.StringIO()):
                arguments.validate_args(args, dict(ARGS_DEFAULTS))
        except Exception as error:  # Megatron-LM's checks are asserts and ValueErrors
            results.append({"error": f"validate_args: {error!r}"})
            continue
        results.append({"parsed": parsed, "data_parallel_size": args.data_parallel_size})
    return results


@pytest.fixture(scope="session")
def megatron_lm_folder():
    """The checkout MEGATRON_LM_PATH names (the GPU image's), else the archive's tag."""
    if os.environ.get(ENV_VAR):
        return find_megatron_lm(None)
    from tests.megatron_lm_archive import unpack_or_skip

    return unpack_or_skip()


@pytest.fixture(scope="session")
def megatron_lm_parses(megatron_lm_folder, tmp_path_factory) -> dict:
    """{(script, variant): Megatron-LM's parse}: every case in one subprocess."""
    keys, cases = [], []
    for script in TWINS:
        for variant in VARIANTS:
            work = tmp_path_factory.mktemp("dry_run")
            flags, gpus = megatron_lm_command(script, work, variant)
            keys.append((script, variant))
            cases.append({"flags": flags, "world_size": gpus})
    work = tmp_path_factory.mktemp("megatron_lm_parse")
    (work / "cases.json").write_text(json.dumps(cases))
    env = {**os.environ, "CUDA_DEVICE_MAX_CONNECTIONS": "1", "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, "-m", "tests.test_examples_megatron_lm", str(megatron_lm_folder),
         str(work / "cases.json"), str(work / "results.json")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return dict(zip(keys, json.loads((work / "results.json").read_text()), strict=True))


# -- the comparison ---------------------------------------------------------------------------


def canonical(settings: dict, megatron_lm: bool) -> dict:
    """The settings with the differences of spelling taken out."""
    settings = dict(settings)
    if megatron_lm:
        # megatron_lm_argv: Megatron-LM's type is `rope`, ours rides in its own flag.
        settings["position_embedding_type"] = (settings["hope_position_embedding_type"]
                                               or settings["position_embedding_type"])
        # --cp-comm-type takes one value per layer there (nargs='+').
        if isinstance(settings["cp_comm_type"], list) and len(settings["cp_comm_type"]) == 1:
            settings["cp_comm_type"] = settings["cp_comm_type"][0]
    else:
        settings["add_bias_linear"] = not settings.pop("disable_bias_linear")
    # Without --group-query-attention the number of groups is unused (one head per group).
    if not settings["group_query_attention"]:
        settings["num_query_groups"] = None
    # store_true flags that one parser defaults to None, the other to False.
    for key in ("no_load_optim", "no_load_rng", "tokenizer_hf_include_special_tokens"):
        if key in settings:
            settings[key] = bool(settings[key])
    return settings


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("script", list(TWINS), ids=_name)
def test_megatron_lm_parses_the_same_run_as_hope_pretrain(script, variant, megatron_lm_parses,
                                                        tmp_path):
    result = megatron_lm_parses[(script, variant)]
    assert "error" not in result, result.get("error")
    hope_words = pretrain_args(dry_run(TWINS[script], tmp_path, **COMMON_VARIABLES,
                                       **VARIANTS[variant]))
    parser = build_parser()
    hope = canonical({key: plain(value)
                      for key, value in vars(parser.parse_args(hope_words)).items()}, False)
    megatron_lm = canonical(result["parsed"], True)

    shared = set(hope) & set(megatron_lm)
    assert set(MUST_MATCH) <= shared, sorted(set(MUST_MATCH) - shared)
    hope_flags = {parser._option_string_actions[word].dest for word in hope_words
                  if word in parser._option_string_actions}
    assert hope_flags - shared - {"disable_bias_linear"} == HOPE_ONLY
    differences = {key: (hope[key], megatron_lm[key]) for key in sorted(shared)
                   if hope[key] != megatron_lm[key]}
    assert differences == {}, "hope-pretrain vs Megatron-LM: " + str(differences)


@pytest.mark.parametrize("script", list(TWINS), ids=_name)
def test_megatron_lm_pads_the_vocabulary_as_hope_pretrain(script, megatron_lm_parses):
    """The tokenizer's 32,000 ids padded by Megatron-LM's rule (a multiple of
    --make-vocab-size-divisible-by x TP) to hope-pretrain's embedding rows."""
    parsed = megatron_lm_parses[(script, "defaults")]["parsed"]
    multiple = parsed["make_vocab_size_divisible_by"] * parsed["tensor_model_parallel_size"]
    megatron_lm_rows = math.ceil(LLAMA_VOCAB / multiple) * multiple
    assert megatron_lm_rows == padded_vocab_size(LLAMA_VOCAB,
                                                 parsed["tensor_model_parallel_size"])


@pytest.mark.parametrize("script", list(TWINS), ids=_name)
def test_the_global_batch_is_the_papers(script, megatron_lm_parses):
    """Validated at the script's GPU count: micro-batch x DP x accumulation = 512."""
    result = megatron_lm_parses[(script, "defaults")]
    parsed = result["parsed"]
    per_step = parsed["micro_batch_size"] * result["data_parallel_size"]
    assert parsed["global_batch_size"] == 512
    assert parsed["global_batch_size"] % per_step == 0


if __name__ == "__main__":
    folder, cases_file, results_file = sys.argv[1:4]
    sys.path.insert(0, folder)
    cases = json.loads(Path(cases_file).read_text())
    Path(results_file).write_text(json.dumps(parse_with_megatron_lm(cases)))
