"""Megatron-LM's ModelConfig path (core_v0.19.0 on): the model configs our launchers build from
Megatron-LM's real parser, the builders they name, and their serialisation. The training runs on
that path are the session's `megatron_lm_run` & co. (`conftest.py`); here, what needs no run:

- `tools/pretrain_hope_gpt.py`'s config for a HoPE type is `HopeGPTModelConfig`, whose builder
  builds `HopeGPTModel` with the encoding's frequencies; for Megatron-LM's own types it is
  upstream's `GPTModelConfig`, unchanged.
- `tools/pretrain_hope_hybrid.py`'s is `HopeHybridModelConfig`; its model needs Transformer Engine
  (tests/gpu builds and runs it), so here only the config and the builder's clear refusal.
- They survive `as_dict`/`from_dict` with the encoding, and the container's `to_yaml` writes
  it with the class and builder names.

Not checked (omegaconf is not installed here): reading that YAML back, which takes the
container's `from_yaml`/`from_dict` (its `instantiate` turns the dtypes and enums the YAML
holds as `_target_` entries back into objects; `ModelConfig.from_dict` alone cannot, for
upstream's configs either) with `megatron_hope.` added to its target allowlist.

The legacy `partial(model_provider, hope_gpt_builder)` on core_v0.19.0 trains the same losses,
bit for bit, as the ModelConfig path (`test_legacy_model_provider_trains_the_same_losses`).
"""

from __future__ import annotations

import importlib.util
import sys

import pytest

from megatron_hope.rope.config import PositionEncodingConfig
from tests.distributed import run_on_ranks
from tests.integrations import megatron_lm_runs as runs
from tests.megatron_lm_archive import megatron_core_series

pytestmark = pytest.mark.megatron_lm
NO_MODEL_CONFIG_PATH = "Megatron-LM's ModelConfig path begins at core_v0.19.0 (megatron-core 0.19)"
needs_model_config_path = pytest.mark.skipif(megatron_core_series() == "0.16",
                                             reason=NO_MODEL_CONFIG_PATH)

HOPE = PositionEncodingConfig("hope", 16, 10000.0, runs.SEQ_LENGTH)
HYBRID_PATTERN = "*-*-"
LEGACY_ITERS = 2
LEGACY_BUILDER_LINE = "building GPT model ..."


def _parsed_container(script, flags: list[str]):
    """The launcher's container for `flags`, parsed by Megatron-LM's parser as in a run."""
    import importlib

    from megatron.training.global_vars import unset_global_variables

    from megatron_hope.integrations import launcher
    from megatron_hope.integrations.megatron_lm import megatron_lm_argv

    unset_global_variables()  # each parse sets Megatron-LM's global args
    sys.argv = ["test", *megatron_lm_argv([*runs.MEGATRON_LM_CPU_FLAGS, *flags])]
    return launcher.parse_pretrain_config(script, importlib.import_module(script.module))


def _model_configs(rank, folder, yaml_path):
    sys.path.insert(0, folder)
    import yaml
    from megatron.core import parallel_state
    from megatron.core.process_groups_config import ProcessGroupCollection
    from megatron.training import get_args
    from megatron.training.models import GPTModelConfig, ModelConfig

    from megatron_hope.integrations import model_builders
    from megatron_hope.integrations.launcher import GPT, HYBRID

    flags = runs.model_flags("unused-data-prefix")
    gpt = _parsed_container(GPT, flags).model
    hope_args = get_args()
    own = _parsed_container(GPT, runs.model_flags(
        "unused-data-prefix", encoding=("--position-embedding-type", "learned_absolute")))
    hybrid_container = _parsed_container(
        HYBRID, [*flags, "--hybrid-layer-pattern", HYBRID_PATTERN])
    hybrid = hybrid_container.model
    hybrid_container.to_yaml(yaml_path)
    with open(yaml_path) as file:
        from_yaml = yaml.safe_load(file)["model"]
    from_dict = ModelConfig.from_dict(gpt.as_dict())

    parallel_state.initialize_model_parallel()
    model = gpt.get_builder_cls()(gpt).build_model(ProcessGroupCollection.use_mpu_process_groups())
    errors = {}
    try:
        hybrid.get_builder_cls()(hybrid).build_model(
            ProcessGroupCollection.use_mpu_process_groups())
    except ValueError as error:
        errors["hybrid_build"] = str(error)
    try:  # a stand-in for ModelOpt's config class, passed where the script enables ModelOpt
        model_builders.gpt_model_config_from_args(hope_args, modelopt_config_cls=GPTModelConfig)
    except ValueError as error:
        errors["modelopt"] = str(error)
    hybrid.position_encoding = PositionEncodingConfig("hope", 32, 10000.0, runs.SEQ_LENGTH)
    try:
        model_builders.checked_position_encoding(hybrid)
    except ValueError as error:
        errors["head_dim"] = str(error)
    return {
        "gpt": (type(gpt).__name__, gpt.get_builder_cls().__name__, gpt.position_encoding,
                gpt.position_embedding_type),
        "own": (type(own.model) is GPTModelConfig, own.model.position_embedding_type),
        "hybrid": (type(hybrid).__name__, hybrid.get_builder_cls().__name__,
                   hybrid_container.model.hybrid_layer_pattern),
        "from_yaml": (from_yaml["_target_"], from_yaml["_builder_"],
                      PositionEncodingConfig.from_dict(from_yaml["position_encoding"]),
                      from_yaml["hybrid_layer_pattern"]),
        "from_dict": (type(from_dict).__name__, from_dict.position_encoding,
                      from_dict.transformer.num_layers),
        "model": (type(model).__name__, model.rotary_pos_emb.inv_freq.cpu().tolist()),
        "errors": errors,
    }


@pytest.fixture(scope="module")
def model_configs(megatron_lm_folder, tmp_path_factory):
    if megatron_core_series() == "0.16":
        pytest.skip(NO_MODEL_CONFIG_PATH)
    yaml_path = tmp_path_factory.mktemp("model_config") / "container.yaml"
    [result] = run_on_ranks(1, _model_configs, str(megatron_lm_folder), str(yaml_path))
    return result


def test_model_builders_name_the_megatron_lm_tag_they_need():
    if importlib.util.find_spec("megatron.training") is not None:
        pytest.skip("Megatron-LM is importable in this process")
    with pytest.raises(ImportError, match=r"core_v0\.19\.0 or newer"):
        importlib.import_module("megatron_hope.integrations.model_builders")


def test_hybrid_launcher_names_the_tag_it_needs(tmp_path, capsys):
    from megatron_hope.integrations import launcher

    assert launcher.main(["--megatron-lm-path", str(tmp_path)], script=launcher.HYBRID) == 2
    message = capsys.readouterr().err
    assert message.startswith("pretrain_hope_hybrid: ") and "no pretrain_hybrid.py" in message
    assert "this script needs core_v0.19.0 or newer" in message, message


def test_gpt_launcher_builds_hope_gpt_through_its_builder(model_configs):
    assert model_configs["gpt"] == ("HopeGPTModelConfig", "HopeGPTModelBuilder", HOPE, "rope")
    assert model_configs["model"] == ("HopeGPTModel", HOPE.inv_freq().tolist())


def test_megatron_lms_own_position_types_keep_its_own_config(model_configs):
    assert model_configs["own"] == (True, "learned_absolute")


def test_hybrid_launcher_config_names_our_builder(model_configs):
    assert model_configs["hybrid"] == ("HopeHybridModelConfig", "HopeHybridModelBuilder",
                                       HYBRID_PATTERN)
    if importlib.util.find_spec("transformer_engine") is None:
        assert "Transformer Engine" in model_configs["errors"]["hybrid_build"]


def test_configs_round_trip_with_their_encoding(model_configs):
    here = "megatron_hope.integrations.model_builders."
    assert model_configs["from_yaml"] == (here + "HopeHybridModelConfig",
                                          here + "HopeHybridModelBuilder", HOPE, HYBRID_PATTERN)
    assert model_configs["from_dict"] == ("HopeGPTModelConfig", HOPE, 2)


def test_configs_refuse_what_would_drop_the_encoding(model_configs):
    errors = model_configs["errors"]
    assert "ModelOpt is enabled" in errors["modelopt"], errors
    assert "kv_channels (32) is not the model's head dimension" in errors["head_dim"], errors


@needs_model_config_path
def test_legacy_model_provider_trains_the_same_losses(megatron_lm_folder, flags,
                                                      initial_checkpoint, megatron_lm_run,
                                                      tmp_path):
    """core_v0.19.0 still takes `partial(model_provider, hope_gpt_builder)` (users' own scripts
    do): its first iterations equal the ModelConfig run's, bit for bit."""
    legacy = runs.run_megatron_lm(
        megatron_lm_folder, [*flags, *runs.from_checkpoint(initial_checkpoint),
                             "--exit-interval", str(LEGACY_ITERS)],
        tmp_path, legacy_model_provider=True)
    expected = {i: megatron_lm_run["losses"][i] for i in range(1, LEGACY_ITERS + 1)}
    print(f"legacy model_provider: {legacy['losses']}; ModelConfig path: {expected}")
    assert legacy["losses"] == expected
    # Megatron-LM's gpt_builder says so; its ModelConfig builders do not.
    assert LEGACY_BUILDER_LINE in legacy["output"]
    assert LEGACY_BUILDER_LINE not in megatron_lm_run["output"]
