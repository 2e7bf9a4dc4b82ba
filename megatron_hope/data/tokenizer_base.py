"""What every megatron-hope tokenizer shares: megatron-core's tokenizer interface and an identity.

megatron-core's datasets read only `vocab_size`, `eod`, `pad`, `eos` and `unique_identifiers`
(the last names the index cache); our preprocessing and evaluation also use `tokenize`,
`encode_batch`, `detokenize`, `bos` and `special_prefix`.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path


class BaseHopeTokenizer:
    """The interface megatron-core's tokenizer base declares, plus our identity and helpers.

    Not a subclass of `megatron.core.tokenizers.MegatronTokenizerBase`: that is an abstract class
    with no behaviour megatron-core's datasets rely on (they never check the type), and importing
    it pulls in all of megatron-core and torch, 3 s of `hope-preprocess`'s start-up.

    Subclasses call `_init_identity` and implement `encode_batch`, `vocab_size`, `eod`.
    """

    supports_gigatoken = True
    """Whether the gigatoken backend may encode for this tokenizer (checked for exactness)."""

    special_prefix: tuple[int, ...] = ()
    """Ids the tokenizer puts before every text it encodes (BOS where Megatron-LM adds it)."""

    special_suffix: tuple[int, ...] = ()
    """Ids the tokenizer puts after every text it encodes (never EOD: that is `--append-eod`)."""

    def _init_identity(self, path: str | os.PathLike | None, identity: bytes, **settings) -> None:
        """`path` names the tokenizer; `identity` is its content; `settings` change its ids."""
        self.path = None if path is None else Path(path)
        """The file or directory this tokenizer was read from."""
        self._sha256 = hashlib.sha256(identity).hexdigest()
        self._settings = settings

    @property
    def unique_identifiers(self) -> OrderedDict:
        """What names this tokenizer in megatron-core's dataset cache hash and our shard stamps.

        The content hash makes a retrained tokenizer at the same path a new cache entry.
        """
        identifiers = OrderedDict(
            [
                ("class", f"{type(self).__module__}.{type(self).__qualname__}"),
                ("tokenizer_path", str(self.path)),
                ("sha256", self._sha256),
            ]
        )
        identifiers.update((key, str(value)) for key, value in self._settings.items())
        return identifiers

    @property
    def eos(self) -> int:
        return self.eod

    @property
    def bos(self) -> int | None:
        return None

    def tokenize(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        raise NotImplementedError

    def detokenize(self, ids: Iterable[int]) -> str:
        raise NotImplementedError

    def apply_chat_template(self, *args, **kwargs):
        raise NotImplementedError(
            f"{type(self).__name__} is for pretraining; it has no chat template"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, vocab_size={self.vocab_size})"


def files_identity(paths: Iterable[Path]) -> bytes:
    """The bytes of `paths` (those that exist), each preceded by its name: a content identity."""
    parts = []
    for path in sorted(paths):
        if path.is_file():
            parts.append(path.name.encode() + b"\0" + path.read_bytes())
    return b"\0\0".join(parts)
