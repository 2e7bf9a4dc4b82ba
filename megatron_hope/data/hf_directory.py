"""HF tokenizer directories (Llama-2/3, Mistral, Qwen, GPT-NeoX...) as Megatron-LM reads them.

Megatron-LM's `--tokenizer-type HuggingFaceTokenizer` loads `--tokenizer-model DIR` with
`transformers.AutoTokenizer.from_pretrained(DIR)` (megatron-core's `HuggingFaceTokenizer`):
EOD is the tokenizer's own `eos_token` (its `sep_token` when it has no eos), BOS its `bos_token`
(else `cls_token`), and a text becomes ids with or without the tokenizer's special tokens:

- with (`self.tokenizer(text).input_ids`): whatever the post-processor adds, e.g. Llama-3's
  `<|begin_of_text|>` or Llama-2/Mistral's `<s>` before every document;
- without (`convert_tokens_to_ids(tokenize(text))`): the text's ids alone.

Which one is Megatron-LM's default changed between releases (see `tokenizer_args`). We load the
directory the same way, offline, and encode with the `tokenizers.Tokenizer` that the HF tokenizer
itself encodes with (`backend_tokenizer`), so the ids are the same by construction.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

HF_CONFIG_FILE_NAME = "tokenizer_config.json"
"""A directory holding this file is loaded as an HF tokenizer directory."""

HF_TOKENIZER_FILES = (
    "tokenizer.json",
    HF_CONFIG_FILE_NAME,
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
)
"""The files whose bytes identify an HF tokenizer directory."""


@dataclass(frozen=True)
class HFSpecialTokens:
    """The special tokens Megatron-LM's HuggingFaceTokenizer takes from a directory."""

    eos: str | None
    """`eos_token`, or `sep_token` when the tokenizer has no eos (Megatron-LM's fallback)."""
    bos: str | None
    """`bos_token`, or `cls_token` when the tokenizer has no bos."""
    pad: str | None
    vocab_size: int
    """`len(tokenizer)`: the vocabulary with added tokens."""


def is_hf_directory(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / HF_CONFIG_FILE_NAME).is_file()


def _auto_tokenizer(directory: Path):
    try:
        from transformers import AutoTokenizer
    except ImportError as error:  # pragma: no cover - transformers is a dependency
        raise ValueError(
            f"{str(directory)!r} needs transformers: pip install transformers"
        ) from error
    try:
        # local_files_only: a run never reaches a model hub; no remote code either.
        return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except Exception as error:  # transformers raises OSError, ValueError, KeyError... variously
        raise ValueError(
            f"{str(directory)!r}: transformers.AutoTokenizer cannot load it offline ({error})"
        ) from error


def load_hf_directory(directory: Path) -> tuple[Tokenizer, HFSpecialTokens]:
    """The `tokenizers.Tokenizer` an HF tokenizer directory encodes with, and its special tokens.

    Raises:
        ValueError: naming the directory, when transformers cannot load it or it has no fast
            (`tokenizers`) implementation.
    """
    hf = _auto_tokenizer(directory)
    backend = getattr(hf, "backend_tokenizer", None)
    if not isinstance(backend, Tokenizer):
        raise ValueError(
            f"{str(directory)!r} loads as {type(hf).__name__}, which has no tokenizer.json "
            "(fast) implementation; save it with a recent transformers (save_pretrained) first"
        )
    special = HFSpecialTokens(
        eos=hf.eos_token or hf.sep_token,
        bos=hf.bos_token or hf.cls_token,
        pad=hf.pad_token,
        vocab_size=len(hf),
    )
    return backend, special


def hf_identity_files(directory: Path) -> list[Path]:
    return [directory / name for name in HF_TOKENIZER_FILES]


def export_hf_directory(source: Path, destination: Path, updates: dict) -> None:
    """`source`'s tokenizer saved into `destination` with `updates` in its tokenizer_config.json.

    Saved through transformers so a `tokenizer.model`-only directory gains a `tokenizer.json`.
    """
    _auto_tokenizer(source).save_pretrained(str(destination))
    config_path = destination / HF_CONFIG_FILE_NAME
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.update(updates)
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    if not (destination / "tokenizer.json").is_file() and (source / "tokenizer.json").is_file():
        shutil.copyfile(source / "tokenizer.json", destination / "tokenizer.json")
