"""`HopeHybridModel` built the way Megatron-LM's `pretrain()` builds it from a ModelConfig
(`tools/pretrain_hope_hybrid.py`): `HopeHybridModelConfig.get_builder_cls()(config).build_model`.

    python -m pytest -m gpu tests/gpu/test_model_builders.py -q    # on a GPU machine with TE

Skips without CUDA, without Transformer Engine (the hybrid stack builds TE norms), and without
Megatron-LM's `megatron.training.models` (core_v0.19.0 on; the megatron-core 0.19.x wheel
ships it). The CPU suite checks the config and the builder it names
(tests/integrations/test_megatron_lm_model_config.py).
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from megatron_hope.megatron.model import transformer_engine_available
from megatron_hope.rope.config import PositionEncodingConfig

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(not transformer_engine_available(),
                       reason="needs Transformer Engine (the GPU image)"),
]

SEQ_LENGTH = 128
VOCAB_SIZE = 1024


def _model_builders():
    try:
        found = importlib.util.find_spec("megatron.training.models") is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        pytest.skip("needs Megatron-LM's megatron.training.models (core_v0.19.0 or newer)")
    from megatron_hope.integrations import model_builders

    return model_builders


def test_hybrid_builder_builds_hope_frequencies_that_train(single_rank_megatron):
    from megatron.core.process_groups_config import ProcessGroupCollection
    from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed
    from megatron.core.transformer import TransformerConfig

    model_builders = _model_builders()
    model_parallel_cuda_manual_seed(1)
    encoding = PositionEncodingConfig("hope", 64, 10000.0, SEQ_LENGTH)
    transformer = TransformerConfig(num_layers=4, hidden_size=256, num_attention_heads=4,
                                    bf16=True, params_dtype=torch.bfloat16, is_hybrid_model=True)
    config = model_builders.HopeHybridModelConfig(
        transformer=transformer, vocab_size=VOCAB_SIZE, seq_length=SEQ_LENGTH,
        hybrid_layer_pattern="*-*-", position_embedding_type="rope", position_encoding=encoding)
    builder = config.get_builder_cls()(config)
    assert type(builder) is model_builders.HopeHybridModelBuilder
    model = builder.build_model(ProcessGroupCollection.use_mpu_process_groups()).cuda()

    assert type(model).__name__ == "HopeHybridModel"
    assert model.pre_process and model.post_process  # upstream's defaults from the PP group
    torch.testing.assert_close(model.rotary_pos_emb.inv_freq.float().cpu(),
                               encoding.inv_freq().float(),
                               rtol=1e-6, atol=0)
    tokens = torch.randint(0, VOCAB_SIZE, (2, SEQ_LENGTH), device="cuda")
    positions = torch.arange(SEQ_LENGTH, device="cuda").expand(2, SEQ_LENGTH)
    loss = model(tokens, positions, None, labels=tokens).float().mean()
    loss.backward()
    grads = [p.grad if p.grad is not None else getattr(p, "main_grad", None)
             for p in model.parameters()]
    assert torch.isfinite(loss) and any(g is not None and g.abs().sum() > 0 for g in grads)
