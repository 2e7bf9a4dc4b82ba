"""A HoPE export runs in llama.cpp: its own convert_hf_to_gguf.py, then llama-cpp-python vs HF.

A SentencePiece-tokenized HoPE model, exported with --target auto (phi3) into a directory named
`hf-phi3` (the name that used to break llama.cpp's vocabulary loader, see convert/model_card.py):
- always: the GGUF-relevant parts of the export (config keys, tokenizer files, model card name);
- with the unpacked llama-cpp-python sdist (tests/convert/llama_cpp_support.py): the conversion
  and the GGUF's rope/vocabulary fields;
- with llama-cpp-python importable: logits on a fixed prompt within LOGIT_TOLERANCE of HF's
  (f32 GGUF) and 32 greedy tokens identical.

PYTHONPATH=. python -m pytest tests/convert/test_llama_cpp.py -q -s
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.convert import helpers, llama_cpp_support
from tests.distributed import run_on_ranks

LOGIT_TOLERANCE = 1e-3
"""f32 GGUF, but llama.cpp keeps its KV cache in f16 by default (keys/values rounded to ~5e-4
relative) and sums in another order: measured 7.0e-5 on logits of scale ~1 (37-token prompt,
llama-cpp-python 0.3.36). 1e-3 leaves ~14x headroom and still catches a wrong frequency,
permutation or scale (those move logits by > 1e-1)."""
NEW_TOKENS = 32


@pytest.fixture(scope="module")
def sp_export(tmp_path_factory):
    root = tmp_path_factory.mktemp("llama_cpp")
    data = helpers.prepare_sentencepiece_data(root / "data")
    checkpoint = str(root / "ckpt")
    run_on_ranks(1, helpers.pretrain, data, checkpoint, {},
                 {"tokenizer_type": "SentencePieceTokenizer"})
    hf_dir = root / "hf-phi3"
    [(code, out, err)] = run_on_ranks(1, helpers.export_cli, [
        "--load-dir", checkpoint, "--save-dir", str(hf_dir), "--dtype", "float32"])
    assert code == 0, err
    print(out)
    return {"dir": hf_dir, "stdout": out, "data": data}


def test_auto_target_is_phi3_and_says_why(sp_export):
    config = json.loads((sp_export["dir"] / "config.json").read_text())
    assert config["architectures"] == ["Phi3ForCausalLM"]
    assert "--target auto: phi3" in sp_export["stdout"]
    assert "llama.cpp" in sp_export["stdout"]


def test_export_has_what_llama_cpp_reads(sp_export):
    directory = sp_export["dir"]
    config = json.loads((directory / "config.json").read_text())
    generation = json.loads((directory / "generation_config.json").read_text())
    tokenizer_config = json.loads((directory / "tokenizer_config.json").read_text())
    trained_with = Path(sp_export["data"]["tokenizer"]).read_bytes()
    assert (directory / "tokenizer.model").read_bytes() == trained_with
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        assert config[key] == generation[key]
    assert config["original_max_position_embeddings"] == config["max_position_embeddings"]
    assert config["hidden_size"] == config["num_attention_heads"] * 16  # head_dim = hidden/heads
    assert "chat_template" not in tokenizer_config
    assert tokenizer_config["add_bos_token"] is False  # as the training data: no BOS
    card = (directory / "README.md").read_text()
    name = card.split("model_name: ", 1)[1].split("\n", 1)[0]
    assert "phi3" not in name.lower() and "phi-3" not in name.lower()


@pytest.fixture(scope="module")
def gguf(sp_export):
    llama_cpp = llama_cpp_support.vendored_llama_cpp()
    if llama_cpp is None:
        pytest.skip("no unpacked llama-cpp-python sdist (see tests/convert/llama_cpp_support.py "
                    "or set HOPE_LLAMA_CPP_DIR)")
    path = sp_export["dir"].parent / "model-f32.gguf"
    llama_cpp_support.convert_to_gguf(llama_cpp, sp_export["dir"], path)
    return path, llama_cpp_support.gguf_fields(llama_cpp, path)


def test_gguf_fields(sp_export, gguf):
    _, fields = gguf
    config = json.loads((sp_export["dir"] / "config.json").read_text())
    print({k: v for k, v in fields.items() if not k.startswith("general.")})
    rope = config["rope_parameters"]
    assert fields["general.architecture"] == "phi3"
    assert fields["phi3.rope.dimension_count"] == round(rope["partial_rotary_factor"] * 16)
    assert fields["phi3.rope.freq_base"] == pytest.approx(rope["rope_theta"], rel=1e-6)
    assert fields["tokenizer.ggml.model"] == "llama"
    assert fields["tokenizer.ggml.tokens"] == config["vocab_size"]
    assert fields["tokenizer.ggml.eos_token_id"] == config["eos_token_id"]
    assert fields["tokenizer.ggml.add_bos_token"] is False
    assert "phi3" not in fields["general.name"].lower()


def _hf_reference(hf_dir, prompt):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32).eval()
    device = torch.cuda.current_device() if torch.cuda.is_available() else "cpu"
    tokens = torch.tensor([prompt], device=device)
    with torch.no_grad():
        logits = model(tokens).logits[0].float().cpu()
        sequence = tokens
        for _ in range(NEW_TOKENS):
            nxt = model(sequence).logits[0, -1].argmax()
            sequence = torch.cat([sequence, nxt.view(1, 1).to(sequence.device)], dim=1)
    return logits, sequence[0, len(prompt):].cpu().tolist()


def test_llama_cpp_matches_transformers(sp_export, gguf):
    llama_cpp_support.use_built_library()
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (build it from "
                        "the sdist: tests/convert/llama_cpp_support.py)")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(sp_export["dir"]))
    prompt = tokenizer.encode("The quick brown fox jumps over the lazy dog. Position",
                              add_special_tokens=False)
    hf_logits, hf_greedy = _hf_reference(sp_export["dir"], prompt)
    cpp_logits, cpp_greedy = llama_cpp_support.llama_cpp_run(gguf[0], prompt, NEW_TOKENS)
    diff = float((torch.from_numpy(cpp_logits) - hf_logits).abs().max())
    print(f"llama.cpp vs transformers: {len(prompt)} prompt tokens, max |logit diff| {diff:.3e}"
          f" (logit scale {float(hf_logits.abs().max()):.2f}); greedy {NEW_TOKENS} tokens "
          f"identical: {cpp_greedy == hf_greedy}")
    assert diff < LOGIT_TOLERANCE
    assert cpp_greedy == hf_greedy
