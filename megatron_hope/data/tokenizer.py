"""Byte-level BPE tokenizers: training one from JSONL; the adapters megatron-core's datasets use.

`HopeTokenizer` wraps a HuggingFace `tokenizers.Tokenizer` in megatron-core's
`MegatronTokenizerBase` (the type `GPTDatasetConfig.tokenizer` is declared with in 0.16.1 and
0.19.x): a `tokenizer.json` of ours (EOD `<|endoftext|>`, no BOS), or an HF tokenizer directory
(Llama-2/3, Mistral, Qwen, GPT-NeoX...) read as Megatron-LM's HuggingFaceTokenizer reads it
(`hf_directory`). `GPT2BPEHopeTokenizer` is GPT-2's vocab.json + merges.txt. `build_tokenizer`
(in `tokenizer_args`, re-exported here) picks one from Megatron-LM's `--tokenizer-*` flags.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from megatron_hope.data.hf_directory import hf_identity_files, is_hf_directory, load_hf_directory
from megatron_hope.data.sample_corpus import iter_jsonl_texts
from megatron_hope.data.tokenizer_args import (  # noqa: F401  (re-exported)
    SUPPORTED_TOKENIZER_TYPES,
    build_tokenizer,
)
from megatron_hope.data.tokenizer_base import BaseHopeTokenizer, files_identity

EOD_TOKEN = "<|endoftext|>"
"""Appended after every document; GPTDataset resets positions and masks at it."""

PAD_TOKEN = "<|pad|>"
"""Padding; kept distinct from EOD so megatron-core does not disable pad masking."""

TOKENIZER_FILE_NAME = "tokenizer.json"


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


def minimum_vocab_size(special_tokens: Sequence[str] = (EOD_TOKEN, PAD_TOKEN)) -> int:
    """The smallest byte-level BPE vocabulary with room for one merge: the 256 byte tokens, the
    special tokens, one more."""
    return len(pre_tokenizers.ByteLevel.alphabet()) + len(special_tokens) + 1


def train_bpe_tokenizer_from_texts(
    texts: Iterable[str],
    output_path: str | os.PathLike,
    vocab_size: int = 4096,
    special_tokens: Sequence[str] = (EOD_TOKEN, PAD_TOKEN),
) -> Path:
    """`train_bpe_tokenizer` on any stream of texts (what `hope-train-tokenizer` feeds it)."""
    minimum = minimum_vocab_size(special_tokens)
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


class HopeTokenizer(BaseHopeTokenizer):
    """A `tokenizers.Tokenizer` as megatron-core's datasets and our tools expect a tokenizer.

    From a `tokenizer.json` (or a directory holding only one): EOD is `eod_token` (default
    `<|endoftext|>`), there is no BOS. From an HF tokenizer directory (one with a
    `tokenizer_config.json`): EOD, BOS and the vocabulary size are Megatron-LM's
    HuggingFaceTokenizer's (see `hf_directory`), EOD overridable with `eod_token`.

    With `include_special_tokens` every text is encoded with the tokenizer's special tokens (its
    post-processor's BOS); without, as the bare text.
    """

    def __init__(
        self,
        tokenizer_model: str | os.PathLike,
        eod_token: str | None = None,
        pad_token: str = PAD_TOKEN,
        include_special_tokens: bool = False,
    ) -> None:
        """
        Args:
            tokenizer_model: a `tokenizer.json`, a directory holding one, or an HF tokenizer
                directory.
            eod_token: the end-of-document token (`--eod-token`), which must be in the
                vocabulary; None: the tokenizer's eos (HF directories) or `<|endoftext|>`.
            pad_token: the padding token of a plain `tokenizer.json`; when absent, `pad` is `eod`.
            include_special_tokens: add the post-processor's special tokens to every text.
        """
        path = Path(tokenizer_model)
        if is_hf_directory(path):
            tokenizer, special = load_hf_directory(path)
            identity = files_identity(hf_identity_files(path))
            eos, bos, pad, vocab_size = special.eos, special.bos, special.pad, special.vocab_size
        else:
            tokenizer_path = resolve_tokenizer_file(path)
            try:
                tokenizer = Tokenizer.from_file(str(tokenizer_path))
            except Exception as error:  # tokenizers raises a bare Exception for malformed files
                raise ValueError(
                    f"{str(tokenizer_path)!r} is not a HuggingFace tokenizers file ({error})"
                ) from error
            path, identity = tokenizer_path, tokenizer_path.read_bytes()
            eos, bos, pad, vocab_size = EOD_TOKEN, None, pad_token, None
        self._setup(tokenizer, path, identity, eod_token or eos, bos, pad, vocab_size,
                    include_special_tokens, repr(str(path)), eod_token is not None)

    def _setup(
        self,
        tokenizer: Tokenizer,
        path: Path,
        identity: bytes,
        eod_token: str | None,
        bos_token: str | None,
        pad_token: str | None,
        vocab_size: int | None,
        include_special_tokens: bool,
        where: str,
        eod_from_flag: bool = False,
    ) -> None:
        eod = None if eod_token is None else tokenizer.token_to_id(eod_token)
        if eod is None:
            raise ValueError(missing_eod_message(where, eod_token, eod_from_flag))
        pad = None if pad_token is None else tokenizer.token_to_id(pad_token)
        # An EOD token inside a document's text must stay text: only the EOD appended between
        # documents may reset positions and attention in GPTDataset.
        tokenizer.encode_special_tokens = True
        self._init_identity(path, identity, eod=eod_token,
                            include_special_tokens=include_special_tokens)
        self._tokenizer = tokenizer
        self._eod = eod
        self._bos = None if bos_token is None else tokenizer.token_to_id(bos_token)
        self._pad = eod if pad is None else pad
        self._vocab_size = vocab_size or tokenizer.get_vocab_size(with_added_tokens=True)
        self.include_special_tokens = include_special_tokens
        """Whether each text is encoded with the post-processor's special tokens (BOS)."""
        self.eod_token = eod_token
        """The end-of-document token's text."""
        if include_special_tokens:
            added = _added_ids(tokenizer)
            self.supports_gigatoken = added is not None
            self.special_prefix, self.special_suffix = added or ((), ())

    @property
    def backend(self) -> Tokenizer:
        """The wrapped `tokenizers.Tokenizer`."""
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        """Entries including special tokens (before any padding for tensor parallelism)."""
        return self._vocab_size

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
    def bos(self) -> int | None:
        return self._bos

    @property
    def pad(self) -> int:
        return self._pad

    def tokenize(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=self.include_special_tokens).ids

    def detokenize(self, ids: Iterable[int]) -> str:
        # int() accepts numpy integers, which is what IndexedDataset hands back.
        return self._tokenizer.decode(
            [int(token_id) for token_id in ids], skip_special_tokens=False
        )

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of many texts, encoded on the `tokenizers` thread pool."""
        # encode_batch_fast skips the character offsets we never use.
        encode = getattr(self._tokenizer, "encode_batch_fast", self._tokenizer.encode_batch)
        encodings = encode(list(texts), add_special_tokens=self.include_special_tokens)
        return [encoding.ids for encoding in encodings]


def missing_eod_message(where: str, eod_token: str | None, from_flag: bool) -> str:
    """The error for a tokenizer without the end-of-document token it needs."""
    if from_flag:
        missing = f"the --eod-token {eod_token!r} in its vocabulary"
    elif eod_token is not None:
        missing = f"end-of-document token {eod_token!r} in its vocabulary"
    else:
        missing = "end-of-document (eos) token"
    return (
        f"{where} has no {missing}; pass --eod-token TOKEN naming one that is "
        "(e.g. </s> or <|endoftext|>), or retrain with train_bpe_tokenizer"
    )


def _added_ids(tokenizer: Tokenizer) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """The ids the post-processor puts before and after a text, or None if it does more."""
    probe = "x y"
    plain = tokenizer.encode(probe, add_special_tokens=False).ids
    full = tokenizer.encode(probe, add_special_tokens=True).ids
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return tuple(full[:start]), tuple(full[start + len(plain) :])
    return None


class GPT2BPEHopeTokenizer(HopeTokenizer):
    """GPT-2's `vocab.json` + `merges.txt` (Megatron's `GPT2BPETokenizer`) as a HopeTokenizer.

    Byte-level BPE with GPT-2's pre-tokenizing regex and no prefix space, which is what
    Megatron-LM's GPT2BPETokenizer (a port of OpenAI's encoder) computes; EOD is
    `<|endoftext|>`, there is no BOS.
    """

    def __init__(
        self,
        vocab_file: str | os.PathLike,
        merge_file: str | os.PathLike,
        eod_token: str | None = None,
    ) -> None:
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
            eod_token or EOD_TOKEN,
            None,
            PAD_TOKEN,
            None,
            False,
            f"--vocab-file {str(vocab_path)!r}",
            eod_token is not None,
        )
