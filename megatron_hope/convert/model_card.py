"""The export's `README.md` model card: HoPE settings, training run, evaluations, how to load.

The YAML front matter's `model_name` is what llama.cpp's `convert_hf_to_gguf.py` writes as
`general.name` (before falling back to the directory name). llama.cpp's vocabulary loader treats a
model whose name contains "phi3" or "phi-3" as Microsoft's Phi-3 and looks up `<unk>`, `<s>`,
`</s>` and `<|endoftext|>` by text: a vocabulary without one of them fails with
"error loading model vocabulary: unordered_map::at". `gguf_safe_name` keeps those names out.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

LLAMA_CPP_CHECKED = "llama.cpp as vendored in llama-cpp-python 0.3.36 (convert_hf_to_gguf.py)"
"""The llama.cpp that tests/convert/test_llama_cpp.py round-tripped (greedy tokens, f32 logits)."""

_PHI3_NAME = re.compile(r"phi-?3", re.IGNORECASE)


def gguf_safe_name(name: str) -> str:
    """`name` without "phi3"/"phi-3" (llama.cpp's Phi-3 vocabulary special case, see above)."""
    return _PHI3_NAME.sub("phi_3", name)


def _training(metadata: dict[str, Any], iteration: int) -> list[str]:
    args = metadata.get("args", {})
    arch = metadata.get("arch", {})
    seq = args.get("seq_length") or arch.get("seq_length")
    batch = args.get("global_batch_size")
    lines = [f"- iterations: {iteration}"]
    if seq and batch:
        lines.append(f"- tokens: {iteration * batch * seq:,} ({iteration} x global batch {batch} "
                     f"x sequence {seq})")
    blend = args.get("data_path")
    if blend:
        lines.append(f"- data blend: `{' '.join(map(str, blend))}`")
    tokenizer = metadata.get("tokenizer", {})
    if tokenizer.get("type"):
        lines.append(f"- tokenizer: {tokenizer['type']} (`{Path(str(tokenizer['model'])).name}`)")
    if metadata.get("megatron_core_version"):
        lines.append(f"- megatron-core {metadata['megatron_core_version']}, megatron-hope "
                     f"{metadata.get('megatron_hope_version', '?')}")
    return lines


def _scalars(result: dict[str, Any]) -> str:
    parts = []
    for key, value in result.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            continue
        parts.append(f"{key} = {value:.4g}" if isinstance(value, float) else f"{key} = {value}")
    return ", ".join(parts[:8])


def check_eval_results(eval_files: list[str]) -> list[str]:
    """The model card's lines for hope-eval result files; ValueError naming --eval-results for
    a file that is missing or not a result (checked before an export starts, too)."""
    lines = []
    for path in eval_files:
        try:
            payload = json.loads(Path(path).read_text(encoding="utf-8"))
            task, result = payload["task"], payload["result"]
            if task == "ppl_vs_length":
                pairs = zip(result["lengths"], result["ppl"], strict=True)
                lines.append("- perplexity vs length: " + ", ".join(
                    f"{n}: {p:.3g}" for n, p in pairs))
            else:
                lines.append(f"- {task}: {_scalars(result) or 'see ' + Path(path).name}")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"--eval-results {path}: not a hope-eval result file "
                             f"({type(error).__name__}: {error})") from None
    return lines


def model_card(name: str, config: dict[str, Any], provenance: dict[str, Any],
               metadata: dict[str, Any], eval_files: list[str], reach: str) -> str:
    """The README.md text (front matter + sections)."""
    encoding = provenance["position_encoding"]
    kind, d = encoding["position_embedding_type"], encoding["kv_channels"]
    pairs = provenance["rotated_pairs"]
    settings = [f"- position encoding: {kind} (head dim {d}, base {encoding['rotary_base']:g})",
                f"- rotated pairs: {pairs} of {d // 2}"]
    if encoding.get("hope_train_length"):
        settings.append(f"- HoPE training length L: {encoding['hope_train_length']}")
    if provenance.get("rope_scaling"):
        settings.append(f"- inference-time scaling: {provenance['rope_scaling']}")
    target = provenance["target"]
    rope = config.get("rope_parameters", {})
    settings.append(f"- exported as `{config['architectures'][0]}` (--target {target}): "
                    f"rope_type {rope.get('rope_type')}, rope_theta {rope.get('rope_theta'):g}"
                    + (f", partial_rotary_factor {rope['partial_rotary_factor']:.6g}"
                       if "partial_rotary_factor" in rope else ""))
    evaluations = check_eval_results(eval_files) or ["- none given (hope-convert --eval-results "
                                               "FILE.json ... adds hope-eval results)"]
    front = ["---", f"model_name: {gguf_safe_name(name)}", "library_name: transformers",
             "pipeline_tag: text-generation", "tags:", "- hope", "- megatron-hope", "---"]
    body = [
        f"# {name}", "",
        "A language model trained with megatron-hope (HoPE: high-frequency rotary position "
        "encoding), converted by `hope-convert`. No chat template: a base model.", "",
        "## Position encoding", "", *settings, "",
        f"Engines that compute this export exactly: {reach}.", "",
        "## Training run", "", *_training(metadata, provenance["iteration"]), "",
        "## Evaluation", "", *evaluations, "",
        "## Loading", "",
        "transformers (4.x and 5.x for phi3 and RoPE Llama; >= 5 for proportional RoPE):", "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "tokenizer = AutoTokenizer.from_pretrained(PATH)",
        "model = AutoModelForCausalLM.from_pretrained(PATH)",
        "```", "",
        "vLLM:", "", "```bash", "vllm serve PATH", "```", "",
        f"llama.cpp (checked: {LLAMA_CPP_CHECKED}):", "",
        "```bash",
        "python llama.cpp/convert_hf_to_gguf.py PATH --outtype f32 --outfile model.gguf",
        "llama-cli -m model.gguf -p 'Once upon a time'",
        "```", "",
    ]
    return "\n".join(front + body)
