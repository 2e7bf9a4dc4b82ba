"""Which export target reaches which serving engine, and what each engine reads from config.json.

Read from the engines' sources (2026-08; see ../shared/FACTS.md "Serving engines"); only
transformers and llama.cpp run here (tests/convert/test_llama_cpp.py round-trips llama.cpp).

| export | transformers | vLLM | SGLang | llama.cpp | TensorRT-LLM | TGI |
|---|---|---|---|---|---|---|
| `llama`, RoPE (default/linear/yarn) | 4.x, 5.x | yes | yes | yes | yes | yes |
| `llama`, HoPE (proportional) | >= 5 | probably | unknown | WRONG (full RoPE) | refuses | refuses |
| `phi3` (partial rotary) | 4.x, 5.x | yes | yes | yes | yes | WRONG (ignores factor) |

`--target auto` picks the exact target that reaches the most engines: plain Llama for RoPE models,
Phi3 for HoPE and p-RoPE, Llama (proportional) where Phi3 cannot express the model (NoPE, biases,
kv_channels != hidden / heads).
"""

from __future__ import annotations

from dataclasses import dataclass

from megatron_hope.convert.mcore_checkpoint import ConversionError

ENGINES = ("transformers 4.x", "transformers 5.x", "vLLM", "SGLang", "llama.cpp", "TensorRT-LLM",
           "TGI")

REACH = {
    "llama-rope": ENGINES,
    "llama-proportional": ("transformers 5.x", "vLLM"),
    "phi3": ("transformers 4.x", "transformers 5.x", "vLLM", "SGLang", "llama.cpp",
             "TensorRT-LLM"),
}
"""Engines that compute the exported model exactly (vLLM on proportional: by reading, not run)."""


@dataclass(frozen=True)
class EngineFields:
    """What one engine's model code reads from config.json for one target."""

    required: tuple[str, ...]
    """Keys it reads without a default: a missing one is a load error."""
    silent_defaults: dict[str, object]
    """Keys it reads with a default: a missing one silently gives another model."""
    source: str


_LLAMA_LIKE = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
               "vocab_size", "rms_norm_eps", "max_position_embeddings")

ENGINE_FIELDS: dict[tuple[str, str], EngineFields] = {
    ("vLLM", "phi3"): EngineFields(
        _LLAMA_LIKE, {"num_key_value_heads": "num_attention_heads", "rope_theta": 10000.0,
                      "partial_rotary_factor": 1.0, "tie_word_embeddings": False,
                      "rope_scaling": None},
        "vllm/model_executor/models/phi3.py (Phi3ForCausalLM = LlamaForCausalLM + packed qkv), "
        "llama.py LlamaAttention, layers/rotary_embedding get_rope"),
    ("vLLM", "llama"): EngineFields(
        _LLAMA_LIKE, {"num_key_value_heads": "num_attention_heads", "rope_theta": 10000.0,
                      "head_dim": "hidden_size // num_attention_heads",
                      "tie_word_embeddings": False, "rope_scaling": None},
        "vllm/model_executor/models/llama.py LlamaAttention"),
    ("SGLang", "phi3"): EngineFields(
        _LLAMA_LIKE, {"num_key_value_heads": "num_attention_heads", "rope_theta": 10000.0,
                      "partial_rotary_factor": 1.0, "tie_word_embeddings": False,
                      "rope_scaling": None},
        "sglang/srt/models/phi3 (registered on the Llama model code), llama.py"),
    ("TensorRT-LLM", "phi3"): EngineFields(
        ("architectures", "hidden_size", "intermediate_size", "num_hidden_layers",
         "num_attention_heads", "vocab_size", "rms_norm_eps", "max_position_embeddings",
         "rope_theta", "hidden_act"),
        {"num_key_value_heads": "num_attention_heads", "partial_rotary_factor": 1.0,
         "tie_word_embeddings": False,
         # long_rope only where max_position_embeddings >= 128000; below, rope_scaling is ignored
         "rope_scaling": "ignored below 128k positions"},
        "tensorrt_llm/models/phi3/config.py Phi3Config.from_hugging_face"),
    ("llama.cpp", "phi3"): EngineFields(
        ("hidden_size", "num_attention_heads", "num_key_value_heads", "rms_norm_eps",
         "max_position_embeddings", "original_max_position_embeddings", "intermediate_size",
         "num_hidden_layers"),
        {"partial_rotary_factor": 1.0, "rope_theta": 10000.0, "sliding_window": 0},
        "convert_hf_to_gguf.py conversion/phi.py Phi3MiniModel.set_gguf_parameters "
        "(rope dims = int(factor * hidden) // heads: head_dim must be hidden / heads)"),
}


ABSENT_MEANS_NONE = frozenset({"rope_scaling"})
"""Silently defaulted keys whose default (no scaling) is what an unscaled export means."""


def reach_key(target: str, config: dict) -> str:
    """`REACH` key of an exported config: llama-rope, llama-proportional or phi3."""
    if target == "phi3":
        return "phi3"
    rope_type = config.get("rope_parameters", {}).get("rope_type", "default")
    return "llama-proportional" if rope_type == "proportional" else "llama-rope"


def missing_fields(config: dict, engine: str, target: str) -> list[str]:
    """Keys `engine` needs (required or silently defaulted) that `config` lacks."""
    fields = ENGINE_FIELDS[(engine, target)]
    wanted = (*fields.required, *fields.silent_defaults)
    return [key for key in wanted if key not in config and key not in ABSENT_MEANS_NONE]


def describe_reach(target: str, config: dict) -> str:
    """One line: the engines that compute this export exactly."""
    return f"{target} ({reach_key(target, config)}) runs exactly in " + ", ".join(
        REACH[reach_key(target, config)])


def choose_target(arch, scaling) -> tuple[str, str]:
    """`--target auto`: the exact target that reaches the most engines, and why (one line)."""
    from megatron_hope.convert.hf_config import build_hf_config

    reach, errors = {}, {}
    for target in ("llama", "phi3"):
        try:
            config, _ = build_hf_config(arch, target, arch.vocab_size, 0, None,
                                        _float32(), scaling)
        except ConversionError as error:
            errors[target] = str(error)
            continue
        reach[target] = (REACH[reach_key(target, config)], config)
    if not reach:
        raise ConversionError("no target can express this checkpoint: " + "; ".join(
            errors.values()))
    target = max(reach, key=lambda name: (len(reach[name][0]), name == "llama"))
    engines, config = reach[target]
    kind = arch.position_encoding.position_embedding_type
    why = {"llama-rope": "plain Llama RoPE",
           "llama-proportional": "Llama proportional RoPE, the only exact form for this model"
                                 + (f" (phi3: {errors['phi3']})" if "phi3" in errors else ""),
           "phi3": "contiguous partial rotary, exact for " + kind}[reach_key(target, config)]
    return target, (f"--target auto: {target} ({why}); runs exactly in {', '.join(engines)}")


def _float32():
    import torch

    return torch.float32
