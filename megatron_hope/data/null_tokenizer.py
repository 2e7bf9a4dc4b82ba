"""Megatron-LM's `NullTokenizer` (benchmarks): a text is its space-separated token ids.

Wraps megatron-core's own `NullTokenizer` class, because its EOD and vocabulary size changed
between releases: in 0.16.1 `--vocab-size N` gives `vocab_size` N + 1 and EOD N, in 0.19.x
`vocab_size` N and EOD N - 1. Using the installed class keeps us equal to the Megatron-LM that
pairs with the installed megatron-core.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from megatron_hope.data.tokenizer_base import BaseHopeTokenizer


class NullHopeTokenizer(BaseHopeTokenizer):
    """`--tokenizer-type NullTokenizer --vocab-size N`."""

    supports_gigatoken = False

    def __init__(self, vocab_size: int) -> None:
        from megatron.core.tokenizers.text.libraries.null_tokenizer import NullTokenizer

        if vocab_size is None or int(vocab_size) < 2:
            raise ValueError(
                f"--tokenizer-type NullTokenizer needs --vocab-size N (N >= 2), got {vocab_size}"
            )
        self._null = NullTokenizer(int(vocab_size))
        self._init_identity(None, b"", vocab_size=int(vocab_size))

    @property
    def vocab_size(self) -> int:
        return self._null.vocab_size

    @property
    def vocab(self):
        raise NotImplementedError("NullTokenizer has no vocabulary")

    @property
    def inv_vocab(self):
        raise NotImplementedError("NullTokenizer has no vocabulary")

    @property
    def eod(self) -> int:
        return self._null.eod

    @property
    def pad(self) -> int:
        return getattr(self._null, "pad_id", -1)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        try:
            return [self._null.text_to_ids(text) for text in texts]
        except ValueError as error:
            raise ValueError(
                f"NullTokenizer reads space-separated integer ids, not text ({error})"
            ) from error

    def detokenize(self, ids: Iterable[int]) -> str:
        return self._null.ids_to_text([int(token_id) for token_id in ids])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"
