"""The few tokenizer operations the text tasks need, over HF or megatron-hope tokenizers.

A task builds prompts from pieces: `start_id` (what a fresh document starts after), then
`encode(piece)` for each text piece (the bare text's ids, never special tokens). `start_id` is
what our data put at a document's start: the BOS the tokenizer adds to every text where it adds
one (HF directories with special tokens included), else EOD, which ends the previous document
(GPT-2 style data).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class TextTokenizer:
    """Encode/decode plus the special ids a task needs."""

    encode: Callable[[str], list[int]]
    decode: Callable[[list[int]], str]
    vocab_size: int
    bos_id: int | None = None
    """Start-of-document token, when the data put one before every document."""
    eod_id: int | None = None

    @property
    def start_id(self) -> int | None:
        """What a fresh document starts after: BOS if the data has one, else EOD (GPT-2)."""
        return self.bos_id if self.bos_id is not None else self.eod_id

    @property
    def special_ids(self) -> set[int]:
        return {i for i in (self.bos_id, self.eod_id) if i is not None}


def text_tokenizer(spec) -> TextTokenizer:
    """A megatron-hope tokenizer from `TokenizerArgs`, or a path (an HF directory or a
    tokenizer.json, as `--tokenizer-model` with HuggingFaceTokenizer)."""
    from megatron_hope.data.tokenizer_args import TokenizerArgs

    if not isinstance(spec, TokenizerArgs):
        spec = TokenizerArgs(tokenizer_model=str(spec))
    tok = spec.build()
    prefix = tuple(getattr(tok, "special_prefix", ()))
    backend = getattr(tok, "backend", None)
    if backend is not None:  # tokenizers: the bare text, whatever the post-processor adds
        def encode(text: str) -> list[int]:
            return backend.encode(text, add_special_tokens=False).ids
    else:
        encode = tok.tokenize
    return TextTokenizer(encode=encode, decode=lambda ids: tok.detokenize(list(ids)),
                         vocab_size=tok.vocab_size, bos_id=prefix[0] if prefix else None,
                         eod_id=tok.eod)


def tokenizer_from_hf(hf_tokenizer) -> TextTokenizer:
    return TextTokenizer(
        encode=lambda text: hf_tokenizer.encode(text, add_special_tokens=False),
        decode=lambda ids: hf_tokenizer.decode(list(ids)),
        vocab_size=len(hf_tokenizer), bos_id=hf_tokenizer.bos_token_id,
        eod_id=hf_tokenizer.eos_token_id,
    )
