"""Runs shared by the Megatron-LM integration tests, each made once per session.

All start from one initial checkpoint (iteration 0, saved by `hope-pretrain`) loaded model-only,
on the golden corpus's `.bin/.idx`, with the same flags (`megatron_lm_runs.model_flags`):

- `hope_run`: `hope-pretrain`, saving at `RESUME_AT` and at the end;
- `megatron_lm_run`: Megatron-LM's `pretrain()`, the same (on core_v0.19.0 through its
  ModelConfig path, `HopeGPTModelConfig`; on core_v0.16.1 through `model_provider`);
- `megatron_lm_tp2_run`: Megatron-LM at TP=2 with the distributed optimizer, saving at
  `RESUME_AT` (a checkpoint of the distributed optimizer's `dp_reshardable` form at TP=2).
"""

from __future__ import annotations

import pytest

from tests.integrations import megatron_lm_runs as runs

RESUME_AT = 3
"""Where the resume tests pick the runs up (of `runs.TRAIN_ITERS`)."""


@pytest.fixture(scope="session")
def megatron_lm_folder():
    from tests.data import megatron_lm

    return megatron_lm.unpack_tool_or_skip()


@pytest.fixture(scope="session")
def golden_data(tmp_path_factory):
    from tests.synthetic_corpus import prepare_golden_data

    return prepare_golden_data(tmp_path_factory.mktemp("golden_data"))


@pytest.fixture(scope="session")
def flags(golden_data) -> list[str]:
    return runs.model_flags(golden_data["prefix"])


@pytest.fixture(scope="session")
def initial_checkpoint(megatron_lm_folder, flags, tmp_path_factory):
    directory = tmp_path_factory.mktemp("initial")
    runs.run_hope_pretrain([*flags, "--train-iters", "0", "--save", str(directory)])
    return directory


def _saving(directory) -> list[str]:
    return ["--save", str(directory), "--save-interval", str(RESUME_AT)]


@pytest.fixture(scope="session")
def hope_run(flags, initial_checkpoint, tmp_path_factory):
    save = tmp_path_factory.mktemp("hope_run")
    result = runs.run_hope_pretrain(
        [*flags, *runs.from_checkpoint(initial_checkpoint), *_saving(save)])
    return {**result, "save": save}


@pytest.fixture(scope="session")
def megatron_lm_run(megatron_lm_folder, flags, initial_checkpoint, tmp_path_factory):
    work = tmp_path_factory.mktemp("megatron_lm_run")
    result = runs.run_megatron_lm(
        megatron_lm_folder,
        [*flags, *runs.from_checkpoint(initial_checkpoint), *_saving(work / "checkpoints")],
        work)
    print(f"Megatron-LM pretrain() losses: {result['losses']}")
    return {**result, "save": work / "checkpoints"}


@pytest.fixture(scope="session")
def megatron_lm_tp2_run(megatron_lm_folder, flags, initial_checkpoint, tmp_path_factory):
    work = tmp_path_factory.mktemp("megatron_lm_tp2")
    result = runs.run_megatron_lm(
        megatron_lm_folder,
        [*flags, *runs.from_checkpoint(initial_checkpoint), *_saving(work / "checkpoints"),
         "--tensor-model-parallel-size", "2", "--use-distributed-optimizer"],
        work, ranks=2)
    print(f"Megatron-LM pretrain() TP=2 losses: {result['losses']}")
    return {**result, "save": work / "checkpoints"}
