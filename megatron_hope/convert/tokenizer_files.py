"""The tokenizer files of an HF export, for every tokenizer hope-pretrain takes.

`AutoTokenizer.from_pretrained(export)` must load offline and agree with the training data: its
eos is the EOD the data was written with, its pad the run's pad, its bos the tokenizer's BOS.
`generation_config.json` and `config.json` carry the same ids (`special_token_ids`).

| trained with | export |
|---|---|
| HF tokenizer directory | the directory saved by transformers, eos set to the run's EOD |
| our tokenizer.json / GPT-2 vocab+merges | tokenizer.json + PreTrainedTokenizerFast config |
| SentencePiece `.model` | tokenizer.model + LlamaTokenizer config (no BOS added, as the data) |
| NullTokenizer | none (there is no text) |

`tokenizer_config.json` is written so that transformers 4.x and 5.x both read it, without a chat
template (a base model): transformers 5 saves `tokenizer_class: TokenizersBackend` (4.57: "does
not exist"), a list-valued `extra_special_tokens` (4.x wants a dict) and drops `add_bos_token`
(4.x's LlamaTokenizerFast and llama.cpp then add a BOS the training data never had).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from megatron_hope.data.hf_directory import (
    HF_CONFIG_FILE_NAME,
    export_hf_directory,
    is_hf_directory,
)


def special_token_ids(tokenizer) -> dict[str, int | None]:
    """`bos_token_id`, `eos_token_id`, `pad_token_id` for config.json / generation_config.json.

    bos is set only where the training data put BOS before every document.
    """
    prefix = tuple(getattr(tokenizer, "special_prefix", ()))
    return {
        "bos_token_id": prefix[0] if prefix else None,
        "eos_token_id": tokenizer.eod,
        "pad_token_id": tokenizer.pad if tokenizer.pad is not None and tokenizer.pad >= 0 else None,
    }


FIVE_ONLY_KEYS = ("backend", "is_local", "local_files_only", "chat_template")
"""Keys transformers 5 saves that 4.x does not read (or, chat_template, that a base model lacks)."""


def portable_tokenizer_config(config: dict[str, Any]) -> dict[str, Any]:
    """`config` as both transformers 4.x and 5.x read it, chat-free (see the module docstring)."""
    out = {key: value for key, value in config.items() if key not in FIVE_ONLY_KEYS}
    if out.get("tokenizer_class") in (None, "TokenizersBackend"):
        out["tokenizer_class"] = "PreTrainedTokenizerFast"
    if not isinstance(out.get("extra_special_tokens", {}), dict):
        del out["extra_special_tokens"]  # they are in tokenizer.json's added_tokens already
    return out


def _write_portable(directory: Path, pinned: dict[str, Any]) -> None:
    path = directory / HF_CONFIG_FILE_NAME
    config = portable_tokenizer_config(json.loads(path.read_text(encoding="utf-8")))
    config.update(pinned)
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    for name in ("chat_template.jinja", "chat_template.json"):
        (directory / name).unlink(missing_ok=True)


def _token(tokenizer, token_id: int | None) -> str | None:
    return None if token_id is None else tokenizer.inv_vocab.get(token_id)


def write_tokenizer_files(directory: Path, tokenizer, max_length: int) -> None:
    """Write `tokenizer`'s files into the export `directory` (see the module docstring)."""
    kind = type(tokenizer).__name__
    if kind == "NullHopeTokenizer":
        return
    eos = _token(tokenizer, tokenizer.eod)
    pad = _token(tokenizer, tokenizer.pad)
    if kind == "SentencePieceHopeTokenizer":
        shutil.copyfile(tokenizer.path, directory / "tokenizer.model")
        processor = tokenizer.processor
        config = {
            "tokenizer_class": "LlamaTokenizer", "model_max_length": max_length,
            "bos_token": _token(tokenizer, tokenizer.bos), "eos_token": eos,
            "unk_token": processor.IdToPiece(processor.unk_id()), "pad_token": pad,
            "add_bos_token": False, "add_eos_token": False, "legacy": False,
        }
        (directory / HF_CONFIG_FILE_NAME).write_text(json.dumps(config, indent=2) + "\n")
        export_hf_directory(directory, directory, {})  # adds the converted tokenizer.json
        _write_portable(directory, config)
        return
    if is_hf_directory(tokenizer.path):
        export_hf_directory(tokenizer.path, directory, {
            "eos_token": eos, "pad_token": pad, "model_max_length": max_length})
        _write_portable(directory, {})
        return
    backend = type(tokenizer.backend).from_str(tokenizer.backend.to_str())
    backend.encode_special_tokens = False
    backend.save(str(directory / "tokenizer.json"))
    special = {"eos_token": eos, "pad_token": pad}
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": max_length,
              "bos_token": None, "unk_token": None, "add_bos_token": False,
              "add_eos_token": False, "clean_up_tokenization_spaces": False, **special}
    (directory / HF_CONFIG_FILE_NAME).write_text(json.dumps(config, indent=2) + "\n")
    (directory / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
