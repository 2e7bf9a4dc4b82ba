"""Megatron-LM's `--tokenizer-*` flags, declared once for hope-preprocess, hope-pretrain, hope-eval.

| `--tokenizer-type` | files | EOD | BOS before each document |
|---|---|---|---|
| HuggingFaceTokenizer | `--tokenizer-model` HF dir or tokenizer.json | eos_token | post-processor*|
| SentencePieceTokenizer, Llama2Tokenizer | `--tokenizer-model` `.model` | `</s>` | none |
| GPT2BPETokenizer | `--vocab-file` vocab.json, `--merge-file` merges.txt | endoftext | none |
| NullTokenizer | `--vocab-size N` (texts are space-separated ids) | megatron-core's | none |

Each is what Megatron-LM's `tools/preprocess_data.py` writes for the same flags at the tag that
pairs with the installed megatron-core (core_v0.16.1 / core_v0.19.0;
tests/data/test_megatron_lm_parity.py compares the bytes). *One choice differs between the two:
whether an HF tokenizer's special tokens are included (`--tokenizer-hf-include-special-tokens`,
off by default at core_v0.16.1; `--tokenizer-hf-no-include-special-tokens`, on by default at
core_v0.19.0). Both flags are accepted; without either, the installed megatron-core's default
applies. `--eod-token` (ours) names the EOD token of a tokenizer that has none or the wrong one.
"""

from __future__ import annotations

import argparse
import ast
import functools
import importlib.metadata
import os
from dataclasses import dataclass
from pathlib import Path

SUPPORTED_TOKENIZER_TYPES = (
    "HuggingFaceTokenizer",
    "SentencePieceTokenizer",
    "Llama2Tokenizer",
    "GPT2BPETokenizer",
    "NullTokenizer",
)
"""`--tokenizer-type` values `build_tokenizer` accepts (Megatron-LM's names)."""

_FIX = (
    "use --tokenizer-type HuggingFaceTokenizer --tokenizer-model <HF tokenizer directory or "
    "tokenizer.json>; megatron_hope.data.tokenizer.train_bpe_tokenizer (hope-train-tokenizer) "
    "writes one"
)


@dataclass(frozen=True)
class TokenizerArgs:
    """The tokenizer flags of any of our CLIs (field names are the flags' dests)."""

    tokenizer_type: str = "HuggingFaceTokenizer"
    tokenizer_model: str | None = None
    vocab_file: str | None = None
    """GPT2BPETokenizer's vocab.json (`--vocab-file`)."""
    merge_file: str | None = None
    """GPT2BPETokenizer's merges.txt (`--merge-file`)."""
    tokenizer_vocab_size: int | None = None
    """NullTokenizer's `--vocab-size`."""
    eod_token: str | None = None
    """`--eod-token`: the end-of-document token instead of the tokenizer's eos."""
    tokenizer_hf_include_special_tokens: bool | None = None
    """HuggingFaceTokenizer: encode with the tokenizer's special tokens (BOS); None: as the
    installed megatron-core's Megatron-LM does by default."""

    @classmethod
    def of(cls, source) -> TokenizerArgs:
        """The fields read from an argparse namespace or a config with the same names."""
        defaults = cls()
        return cls(**{
            name: getattr(source, name, getattr(defaults, name))
            for name in cls.__dataclass_fields__
        })

    def build(self):
        """`build_tokenizer` with these flags."""
        return build_tokenizer(
            self.tokenizer_type, self.tokenizer_model, self.vocab_file, self.merge_file,
            vocab_size=self.tokenizer_vocab_size, eod_token=self.eod_token,
            include_special_tokens=self.tokenizer_hf_include_special_tokens,
        )

    def files_exist(self) -> bool:
        """Whether the files these flags name (if any) are all there."""
        paths = (self.tokenizer_model, self.vocab_file, self.merge_file)
        return all(os.path.exists(path) for path in paths if path is not None)


def saved_tokenizer_args(metadata: dict) -> TokenizerArgs | None:
    """The tokenizer flags a hope-pretrain checkpoint ran with (its run metadata), or None.

    The run's config (`args`) has every tokenizer flag; `tokenizer.model` is the resolved path.
    """
    values = dict(metadata.get("args") or {})
    info = metadata.get("tokenizer") or {}
    if info.get("type"):
        values["tokenizer_type"] = info["type"]
    if info.get("model"):
        values["tokenizer_model"] = info["model"]
    if not values.get("tokenizer_type"):
        return None
    return TokenizerArgs.of(argparse.Namespace(**values))


def add_tokenizer_arguments(
    parser: argparse.ArgumentParser, model_help: str | None = None
) -> argparse._ArgumentGroup:
    """Declare the tokenizer flags (Megatron-LM's names) in a "tokenizer" group of `parser`."""
    group = parser.add_argument_group("tokenizer")
    group.add_argument(
        "--tokenizer-type", default="HuggingFaceTokenizer", choices=SUPPORTED_TOKENIZER_TYPES
    )
    group.add_argument(
        "--tokenizer-model",
        default=None,
        help=model_help
        or "HF tokenizer directory (tokenizer_config.json + tokenizer.json or tokenizer.model), "
        "a tokenizer.json, or a SentencePiece .model",
    )
    group.add_argument("--vocab-file", default=None, help="GPT2BPETokenizer: vocab.json")
    group.add_argument("--merge-file", default=None, help="GPT2BPETokenizer: merges.txt")
    group.add_argument(
        "--vocab-size",
        dest="tokenizer_vocab_size",
        type=int,
        default=None,
        help="NullTokenizer: vocabulary size (texts are space-separated token ids)",
    )
    group.add_argument(
        "--eod-token",
        default=None,
        metavar="TOKEN",
        help="end-of-document token to use instead of the tokenizer's eos (e.g. </s>)",
    )
    include = group.add_mutually_exclusive_group()
    include.add_argument(
        "--tokenizer-hf-include-special-tokens",
        dest="tokenizer_hf_include_special_tokens",
        action="store_true",
        default=None,
        help="HuggingFaceTokenizer: encode with the tokenizer's special tokens (e.g. BOS); "
        "default: as the installed megatron-core's Megatron-LM (off at 0.16, on at 0.19)",
    )
    include.add_argument(
        "--tokenizer-hf-no-include-special-tokens",
        dest="tokenizer_hf_include_special_tokens",
        action="store_false",
        help="HuggingFaceTokenizer: encode the bare text",
    )
    return group


@functools.cache
def megatron_includes_special_tokens() -> bool:
    """Whether Megatron-LM's HuggingFaceTokenizer includes special tokens by default here.

    megatron-core's `HuggingFaceTokenizer(include_special_tokens=...)` default follows the
    Megatron-LM release it ships with (False at 0.16.1, True at 0.19.x), so it is read from the
    installed class's source: importing it would pull in all of megatron-core and torch (seconds
    of `hope-preprocess` start-up for one boolean).
    """
    try:
        source = importlib.metadata.distribution("megatron-core").locate_file(
            "megatron/core/tokenizers/text/libraries/huggingface_tokenizer.py"
        )
        tree = ast.parse(Path(source).read_text(encoding="utf-8"))
    except (importlib.metadata.PackageNotFoundError, OSError, SyntaxError):
        return False
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "HuggingFaceTokenizer":
            init = next((item for item in node.body
                         if isinstance(item, ast.FunctionDef) and item.name == "__init__"), None)
            if init is None:
                return False
            arguments = init.args
            named = arguments.args[len(arguments.args) - len(arguments.defaults):]
            pairs = [*zip(named, arguments.defaults, strict=True),
                     *zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True)]
            for argument, default in pairs:
                if argument.arg == "include_special_tokens":
                    return isinstance(default, ast.Constant) and default.value is True
    return False


def build_tokenizer(
    tokenizer_type: str,
    tokenizer_model: str | os.PathLike | None,
    vocab_file: str | os.PathLike | None = None,
    merge_file: str | os.PathLike | None = None,
    *,
    vocab_size: int | None = None,
    eod_token: str | None = None,
    include_special_tokens: bool | None = None,
):
    """The tokenizer Megatron-LM's `--tokenizer-*` flags name, from local files only (runs must
    not reach a model hub); see the module docstring for what each type computes.

    Raises:
        ValueError: naming the flag and the fix, before any work starts.
    """
    if tokenizer_type not in SUPPORTED_TOKENIZER_TYPES:
        raise ValueError(
            f"--tokenizer-type {tokenizer_type!r} is not supported "
            f"(supported: {', '.join(SUPPORTED_TOKENIZER_TYPES)}); {_FIX}"
        )
    if tokenizer_type == "NullTokenizer":
        from megatron_hope.data.null_tokenizer import NullHopeTokenizer

        if eod_token is not None:
            raise ValueError("--eod-token does not apply to NullTokenizer (its EOD is an id)")
        return NullHopeTokenizer(vocab_size)
    if tokenizer_type == "GPT2BPETokenizer":
        from megatron_hope.data.tokenizer import GPT2BPEHopeTokenizer

        if not vocab_file or not merge_file:
            raise ValueError(
                f"--tokenizer-type {tokenizer_type} needs --vocab-file and --merge-file "
                f"(GPT-2's vocab.json and merges.txt); or {_FIX}"
            )
        return GPT2BPEHopeTokenizer(vocab_file, merge_file, eod_token=eod_token)
    if tokenizer_model is None or str(tokenizer_model) == "":
        raise ValueError(
            f"--tokenizer-model is required with --tokenizer-type {tokenizer_type}; {_FIX}"
        )
    try:
        if tokenizer_type == "HuggingFaceTokenizer":
            from megatron_hope.data.tokenizer import HopeTokenizer

            if include_special_tokens is None:
                include_special_tokens = megatron_includes_special_tokens()
            return HopeTokenizer(
                tokenizer_model, eod_token=eod_token, include_special_tokens=include_special_tokens
            )
        from megatron_hope.data.sentencepiece_tokenizer import SentencePieceHopeTokenizer

        return SentencePieceHopeTokenizer(tokenizer_model, eod_token=eod_token)
    except ValueError as error:
        raise ValueError(f"--tokenizer-model: {error}; {_FIX}") from error
