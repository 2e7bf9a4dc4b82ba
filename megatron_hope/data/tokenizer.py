"""Byte-level BPE tokenizers: training one from JSONL, and the adapter megatron-core's datasets use.

`HopeTokenizer` wraps a HuggingFace `tokenizers.Tokenizer` (a `tokenizer.json`) in
megatron-core's `MegatronTokenizerBase`, the type `GPTDatasetConfig.tokenizer` is declared with in
both 0.16.1 and 0.19.x. The datasets read only `vocab_size`, `eod`, `pad`, `eos` and
`unique_identifiers` (the last goes into the hash that names the index cache); the rest serves our
preprocessing and evaluation code.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from megatron_hope.data.sample_corpus import iter_jsonl_texts

try:
    # The base that GPTDatasetConfig annotates its tokenizer with (0.14 onwards, 0.19 included).
    from megatron.core.tokenizers import MegatronTokenizerBase as _TokenizerBase
except ImportError:  # older megatron-core: only the legacy base exists
    from megatron.core.datasets.megatron_tokenizer import MegatronLegacyTokenizer as _TokenizerBase

EOD_TOKEN = "<|endoftext|>"
"""Appended after every document; GPTDataset resets positions and masks at it."""

PAD_TOKEN = "<|pad|>"
"""Padding; kept distinct from EOD so megatron-core does not disable pad masking."""

TOKENIZER_FILE_NAME = "tokenizer.json"

SUPPORTED_TOKENIZER_TYPES = (
    "HuggingFaceTokenizer",
    "SentencePieceTokenizer",
    "Llama2Tokenizer",
    "GPT2BPETokenizer",
)
"""`--tokenizer-type` values `build_tokenizer` accepts (Megatron-LM's names)."""


def _write_atomically(tokenizer: Tokenizer, output_path: Path) -> None:
    temporary_path = output_path.with_name(f"{output_path.name}.tmp-{os.getpid()}")
    try:
        tokenizer.save(str(temporary_path), pretty=True)
        os.replace(temporary_path, output_path)
    finally:
        temporary_path.unlink(missing_ok=True)


def train_bpe_tokenizer(
    jsonl_paths: str | os.PathLike | Iterable[str | os.PathLike],
    output_path: str | os.PathLike,
    vocab_size: int = 4096,
    json_key: str = "text",
    special_tokens: Sequence[str] = (EOD_TOKEN, PAD_TOKEN),
) -> Path:
    """Train a GPT-2-style byte-level BPE on JSONL documents and write it as `tokenizer.json`.

    The documents are streamed (never held in one list), so the corpus may exceed memory. Special
    tokens take the first ids in the order given (`<|endoftext|>` = 0, `<|pad|>` = 1 by default).
    Training is deterministic: the same files and settings give a byte-identical file.

    Args:
        jsonl_paths: one JSONL file or several, read in order.
        output_path: the `tokenizer.json` to write, or a directory to write it into.
        vocab_size: entries including the 256 byte tokens and the special tokens.
        json_key: the field holding each document's text.
        special_tokens: added tokens that are never split or merged.

    Returns:
        The path of the written `tokenizer.json`.
    """
    return train_bpe_tokenizer_from_texts(
        iter_jsonl_texts(jsonl_paths, json_key), output_path, vocab_size, special_tokens
    )


def train_bpe_tokenizer_from_texts(
    texts: Iterable[str],
    output_path: str | os.PathLike,
    vocab_size: int = 4096,
    special_tokens: Sequence[str] = (EOD_TOKEN, PAD_TOKEN),
) -> Path:
    """`train_bpe_tokenizer` on any stream of texts (what `hope-train-tokenizer` feeds it)."""
    minimum = len(pre_tokenizers.ByteLevel.alphabet()) + len(special_tokens) + 1
    if vocab_size < minimum:
        raise ValueError(
            f"vocab_size ({vocab_size}) leaves no room for merges after the 256 byte tokens and "
            f"{len(special_tokens)} special tokens; use at least {minimum}"
        )
    output_path = Path(output_path)
    if output_path.is_dir():
        output_path = output_path / TOKENIZER_FILE_NAME
    output_path.parent.mkdir(parents=True, exist_ok=True)

    tokenizer = Tokenizer(models.BPE())
    # Byte level: every string is representable, so there is no unknown token; no prefix space,
    # so a document's first word is tokenized as written.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        # All 256 bytes, seen or not, so text unseen in training still encodes.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    _write_atomically(tokenizer, output_path)
    return output_path


def resolve_tokenizer_file(tokenizer_model: str | os.PathLike) -> Path:
    """The `tokenizer.json` that `tokenizer_model` names: the file, or the one in the directory."""
    path = Path(tokenizer_model)
    if path.is_dir():
        candidate = path / TOKENIZER_FILE_NAME
        if not candidate.is_file():
            raise ValueError(f"{str(path)!r} is a directory without a {TOKENIZER_FILE_NAME}")
        return candidate
    if not path.is_file():
        raise ValueError(f"{str(path)!r} does not exist")
    return path


class HopeTokenizer(_TokenizerBase):
    """A `tokenizer.json` as megatron-core's datasets and our tools expect a tokenizer.

    Documents are separated by `eod` only: there is no BOS token (`bos` is None) and `eos` is
    `eod`, as in GPT-2 and Megatron's GPT2BPETokenizer.
    """

    def __init__(
        self,
        tokenizer_model: str | os.PathLike,
        eod_token: str = EOD_TOKEN,
        pad_token: str = PAD_TOKEN,
    ) -> None:
        """
        Args:
            tokenizer_model: a `tokenizer.json` or a directory holding one.
            eod_token: the end-of-document token, which must be in the vocabulary.
            pad_token: the padding token; when absent, `pad` falls back to `eod`.
        """
        tokenizer_path = resolve_tokenizer_file(tokenizer_model)
        try:
            tokenizer = Tokenizer.from_file(str(tokenizer_path))
        except Exception as error:  # tokenizers raises a bare Exception for malformed files
            raise ValueError(
                f"{str(tokenizer_path)!r} is not a HuggingFace tokenizers file ({error})"
            ) from error
        self._setup(tokenizer, tokenizer_path, tokenizer_path.read_bytes(), eod_token, pad_token)

    def _setup(
        self,
        tokenizer: Tokenizer,
        tokenizer_path: Path,
        identity: bytes,
        eod_token: str,
        pad_token: str,
    ) -> None:
        eod = tokenizer.token_to_id(eod_token)
        if eod is None:
            raise ValueError(
                f"{str(tokenizer_path)!r} has no end-of-document token {eod_token!r}; "
                f"retrain with train_bpe_tokenizer or pass the right eod_token"
            )
        pad = tokenizer.token_to_id(pad_token)
        # An EOD token inside a document's text must stay text: only the EOD appended between
        # documents may reset positions and attention in GPTDataset.
        tokenizer.encode_special_tokens = True
        if _TokenizerBase.__name__ == "MegatronTokenizerBase":
            super().__init__(str(tokenizer_path), {})
        else:
            super().__init__(str(tokenizer_path))
        self.path = tokenizer_path
        """The `tokenizer.json` (or vocabulary) file this tokenizer was read from."""
        self._tokenizer = tokenizer
        self._eod = eod
        self._pad = eod if pad is None else pad
        self._sha256 = hashlib.sha256(identity).hexdigest()

    @property
    def unique_identifiers(self) -> OrderedDict:
        """What names this tokenizer in megatron-core's dataset cache hash.

        The content hash makes a retrained tokenizer at the same path a new cache entry.
        """
        return OrderedDict(
            [
                ("class", f"{type(self).__module__}.{type(self).__qualname__}"),
                ("tokenizer_path", str(self.path)),
                ("sha256", self._sha256),
            ]
        )

    @property
    def backend(self) -> Tokenizer:
        """The wrapped `tokenizers.Tokenizer`."""
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        """Entries including special tokens (before any padding for tensor parallelism)."""
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def vocab(self) -> dict[str, int]:
        return self._tokenizer.get_vocab(with_added_tokens=True)

    @property
    def inv_vocab(self) -> dict[int, str]:
        return {token_id: token for token, token_id in self.vocab.items()}

    @property
    def eod(self) -> int:
        return self._eod

    @property
    def eos(self) -> int:
        return self._eod

    @property
    def bos(self) -> None:
        return None

    @property
    def pad(self) -> int:
        return self._pad

    def tokenize(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def detokenize(self, ids: Iterable[int]) -> str:
        # int() accepts numpy integers, which is what IndexedDataset hands back.
        return self._tokenizer.decode(
            [int(token_id) for token_id in ids], skip_special_tokens=False
        )

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of many texts, encoded on the `tokenizers` thread pool."""
        # encode_batch_fast skips the character offsets we never use.
        encode = getattr(self._tokenizer, "encode_batch_fast", self._tokenizer.encode_batch)
        return [encoding.ids for encoding in encode(list(texts), add_special_tokens=False)]

    def apply_chat_template(self, *args, **kwargs):
        raise NotImplementedError(
            f"{type(self).__name__} is for pretraining; it has no chat template"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, vocab_size={self.vocab_size})"


class GPT2BPEHopeTokenizer(HopeTokenizer):
    """GPT-2's `vocab.json` + `merges.txt` (Megatron's `GPT2BPETokenizer`) as a HopeTokenizer.

    Byte-level BPE with GPT-2's pre-tokenizing regex and no prefix space, which is what
    Megatron-LM's GPT2BPETokenizer (a port of OpenAI's encoder) computes.
    """

    def __init__(self, vocab_file: str | os.PathLike, merge_file: str | os.PathLike) -> None:
        vocab_path, merge_path = Path(vocab_file), Path(merge_file)
        for flag, path in (("--vocab-file", vocab_path), ("--merge-file", merge_path)):
            if not path.is_file():
                raise ValueError(f"{flag} {str(path)!r} does not exist")
        try:
            model = models.BPE.from_file(str(vocab_path), str(merge_path))
        except Exception as error:  # tokenizers raises a bare Exception for malformed files
            raise ValueError(
                f"--vocab-file {str(vocab_path)!r} / --merge-file {str(merge_path)!r} are not a "
                f"GPT-2 vocab.json and merges.txt ({error})"
            ) from error
        tokenizer = Tokenizer(model)
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        # GPT-2's <|endoftext|> is an ordinary vocabulary entry; make it the special EOD.
        tokenizer.add_special_tokens([EOD_TOKEN])
        self.merge_path = merge_path
        self._setup(
            tokenizer,
            vocab_path,
            vocab_path.read_bytes() + merge_path.read_bytes(),
            EOD_TOKEN,
            PAD_TOKEN,
        )


class SentencePieceHopeTokenizer(_TokenizerBase):
    """A SentencePiece `.model` (Megatron's `SentencePieceTokenizer`, `Llama2Tokenizer`).

    EOD is the model's `</s>` (`eos_id`). With `bos=True` (Llama2Tokenizer) every document starts
    with `<s>`, as Megatron-LM's Llama2Tokenizer.tokenize does by default.
    """

    def __init__(self, tokenizer_model: str | os.PathLike, bos: bool = False) -> None:
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
        if processor.eos_id() < 0:
            raise ValueError(f"{str(path)!r} has no end-of-sentence piece to use as EOD")
        if _TokenizerBase.__name__ == "MegatronTokenizerBase":
            super().__init__(str(path), {})
        else:
            super().__init__(str(path))
        self.path = path
        self.add_bos = bos
        self._processor = processor
        self._sha256 = hashlib.sha256(path.read_bytes()).hexdigest()

    @property
    def unique_identifiers(self) -> OrderedDict:
        return OrderedDict(
            [
                ("class", f"{type(self).__module__}.{type(self).__qualname__}"),
                ("tokenizer_path", str(self.path)),
                ("sha256", self._sha256),
                ("bos", self.add_bos),
            ]
        )

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
        return self._processor.eos_id()

    @property
    def eos(self) -> int:
        return self._processor.eos_id()

    @property
    def bos(self) -> int | None:
        return self._processor.bos_id() if self._processor.bos_id() >= 0 else None

    @property
    def pad(self) -> int:
        pad = self._processor.pad_id()
        return self.eod if pad < 0 else pad

    def tokenize(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]

    def detokenize(self, ids: Iterable[int]) -> str:
        ids = [int(token_id) for token_id in ids]
        if self.add_bos and ids and ids[0] == self.bos:
            ids = ids[1:]
        return self._processor.Decode(ids)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self._processor.Encode(list(texts), add_bos=self.add_bos)

    def apply_chat_template(self, *args, **kwargs):
        raise NotImplementedError(
            f"{type(self).__name__} is for pretraining; it has no chat template"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, vocab_size={self.vocab_size})"


def build_tokenizer(
    tokenizer_type: str,
    tokenizer_model: str | os.PathLike | None,
    vocab_file: str | os.PathLike | None = None,
    merge_file: str | os.PathLike | None = None,
):
    """The tokenizer Megatron-LM's `--tokenizer-type`, `--tokenizer-model`, `--vocab-file` and
    `--merge-file` name, from local files only (runs must not reach a model hub).

    | `--tokenizer-type` | files |
    |---|---|
    | HuggingFaceTokenizer | `--tokenizer-model` tokenizer.json or a directory holding one |
    | SentencePieceTokenizer | `--tokenizer-model` SentencePiece `.model` |
    | Llama2Tokenizer | `--tokenizer-model` SentencePiece `.model`; documents start with BOS |
    | GPT2BPETokenizer | `--vocab-file` vocab.json and `--merge-file` merges.txt |

    Raises:
        ValueError: naming the flag and the fix, before any work starts.
    """
    fix = (
        "use --tokenizer-type HuggingFaceTokenizer --tokenizer-model <tokenizer.json or a "
        "directory holding one>; megatron_hope.data.tokenizer.train_bpe_tokenizer "
        "(hope-train-tokenizer) writes one"
    )
    if tokenizer_type not in SUPPORTED_TOKENIZER_TYPES:
        raise ValueError(
            f"--tokenizer-type {tokenizer_type!r} is not supported "
            f"(supported: {', '.join(SUPPORTED_TOKENIZER_TYPES)}); {fix}"
        )
    if tokenizer_type == "GPT2BPETokenizer":
        if not vocab_file or not merge_file:
            raise ValueError(
                f"--tokenizer-type {tokenizer_type} needs --vocab-file and --merge-file "
                f"(GPT-2's vocab.json and merges.txt); or {fix}"
            )
        return GPT2BPEHopeTokenizer(vocab_file, merge_file)
    if tokenizer_model is None or str(tokenizer_model) == "":
        raise ValueError(
            f"--tokenizer-model is required with --tokenizer-type {tokenizer_type}; {fix}"
        )
    try:
        if tokenizer_type == "HuggingFaceTokenizer":
            return HopeTokenizer(tokenizer_model)
        return SentencePieceHopeTokenizer(tokenizer_model, bos=tokenizer_type == "Llama2Tokenizer")
    except ValueError as error:
        raise ValueError(f"--tokenizer-model: {error}; {fix}") from error
