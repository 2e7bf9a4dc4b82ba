"""SentencePiece `.model` files: Megatron-LM's `SentencePieceTokenizer` and `Llama2Tokenizer`.

Megatron-LM's `tools/preprocess_data.py` (core_v0.16.1 and core_v0.19.0 alike) builds both types
with megatron-core's `SentencePieceTokenizer` library: a text is `encode_as_ids(text)` (no BOS,
no EOS; the Llama2Tokenizer name does not add BOS there, only Megatron-LM's legacy tokenizer
did), EOD is the model's `eos_id`, the vocabulary is `get_piece_size()`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from megatron_hope.data.tokenizer_base import BaseHopeTokenizer


class SentencePieceHopeTokenizer(BaseHopeTokenizer):
    """A SentencePiece model as megatron-core's datasets and our tools expect a tokenizer."""

    def __init__(self, tokenizer_model: str | os.PathLike, eod_token: str | None = None) -> None:
        """
        Args:
            tokenizer_model: the `.model` file.
            eod_token: a piece to use as EOD (`--eod-token`) instead of the model's `</s>`.
        """
        path = Path(tokenizer_model)
        if not path.is_file():
            raise ValueError(f"{str(path)!r} does not exist")
        try:
            import sentencepiece
        except ImportError as error:
            raise ValueError(
                "SentencePiece models need the sentencepiece package: pip install sentencepiece"
            ) from error
        processor = sentencepiece.SentencePieceProcessor()
        try:
            processor.Load(str(path))
        except Exception as error:  # sentencepiece raises OSError/RuntimeError variously
            raise ValueError(f"{str(path)!r} is not a SentencePiece model ({error})") from error
        if eod_token is not None:
            eod = processor.PieceToId(eod_token)
            if eod == processor.unk_id() and eod_token != processor.IdToPiece(eod):
                raise ValueError(
                    f"{str(path)!r} has no piece --eod-token {eod_token!r}; pass one of its "
                    f"pieces (e.g. {processor.IdToPiece(max(processor.eos_id(), 0))!r})"
                )
        else:
            eod = processor.eos_id()
            if eod < 0:
                raise ValueError(
                    f"{str(path)!r} has no end-of-sentence piece (eos_id -1) to use as EOD; "
                    "pass --eod-token PIECE naming one of its pieces"
                )
        self._init_identity(path, path.read_bytes(), eod=eod_token)
        self._processor = processor
        self._eod = eod

    @property
    def processor(self):
        """The wrapped `sentencepiece.SentencePieceProcessor`."""
        return self._processor

    @property
    def vocab_size(self) -> int:
        return self._processor.GetPieceSize()

    @property
    def vocab(self) -> dict[str, int]:
        return {self._processor.IdToPiece(i): i for i in range(self.vocab_size)}

    @property
    def inv_vocab(self) -> dict[int, str]:
        return {i: self._processor.IdToPiece(i) for i in range(self.vocab_size)}

    @property
    def eod(self) -> int:
        return self._eod

    @property
    def bos(self) -> int | None:
        return self._processor.bos_id() if self._processor.bos_id() >= 0 else None

    @property
    def pad(self) -> int:
        pad = self._processor.pad_id()
        return self.eod if pad < 0 else pad

    def detokenize(self, ids: Iterable[int]) -> str:
        return self._processor.Decode([int(token_id) for token_id in ids])

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self._processor.Encode(list(texts))
