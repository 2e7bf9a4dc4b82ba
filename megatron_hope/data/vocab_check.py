"""Is this `.bin/.idx` pair the tokenizer's? A clear error before training, not a crash in it.

A `--data-path` preprocessed with another tokenizer shows in two ways that are cheap to see:

- the `.idx` token dtype is not the one this tokenizer's vocabulary gives (uint16 below 65,500
  entries, int32 above; both Megatron-LM and hope-preprocess choose it with
  `DType.optimal_dtype(vocab_size)`): the data came from a vocabulary on the other side of 65,500;
- a token id in the `.bin` is >= the tokenizer's vocabulary size: the embedding lookup would fail
  at the first batch holding it (an index error on CPU, a device-side assert on GPU).

The id scan reads the whole `.bin` up to `FULL_SCAN_BYTES`, and evenly spaced windows of a larger
one, so a run over terabytes still starts in seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy

FULL_SCAN_BYTES = 256 << 20
"""`.bin` files up to this size are scanned whole."""
SAMPLE_WINDOWS = 64
SAMPLE_WINDOW_BYTES = 4 << 20


def data_token_dtype(prefix: str) -> numpy.dtype:
    """The token dtype recorded in `<prefix>.idx` (Megatron's MMIDIDX header)."""
    from megatron.core.datasets.indexed_dataset import _INDEX_HEADER, DType

    path = Path(f"{prefix}.idx")
    with open(path, "rb") as stream:
        header = stream.read(len(_INDEX_HEADER) + 9)
    if header[: len(_INDEX_HEADER)] != _INDEX_HEADER:
        raise ValueError(f"--data-path: {path} is not a Megatron .idx file (bad header)")
    code = header[-1]
    try:
        return numpy.dtype(DType.dtype_from_code(code))
    except (ValueError, KeyError) as error:
        raise ValueError(f"--data-path: {path} has an unknown token dtype code {code}") from error


def max_token_id(prefix: str, dtype: numpy.dtype) -> int:
    """The largest id in `<prefix>.bin` (whole file, or windows of a large one); -1 if empty."""
    path = Path(f"{prefix}.bin")
    count = path.stat().st_size // dtype.itemsize
    if count == 0:
        return -1
    tokens = numpy.memmap(path, dtype=dtype, mode="r", shape=(count,))
    if count * dtype.itemsize <= FULL_SCAN_BYTES:
        return int(tokens.max())
    window = SAMPLE_WINDOW_BYTES // dtype.itemsize
    starts = numpy.linspace(0, count - window, SAMPLE_WINDOWS).astype(numpy.int64)
    return max(int(tokens[start : start + window].max()) for start in starts)


def check_data_vocabulary(prefixes: Sequence[str], tokenizer) -> None:
    """Raise if any `.bin/.idx` prefix cannot have been written with `tokenizer`.

    Raises:
        ValueError: naming the file, the data's dtype or largest id, the tokenizer's vocabulary
            size, and the fix.
    """
    from megatron.core.datasets.indexed_dataset import DType

    vocab_size = tokenizer.vocab_size
    expected = numpy.dtype(DType.optimal_dtype(vocab_size))
    fix = (
        "pass the --tokenizer-* flags of the tokenizer that preprocessed it, or re-run "
        "hope-preprocess with this tokenizer"
    )
    for prefix in prefixes:
        dtype = data_token_dtype(prefix)
        if dtype != expected:
            side = "at least" if dtype.itemsize > expected.itemsize else "fewer than"
            raise ValueError(
                f"--data-path: {prefix}.idx stores {dtype.name} tokens, written for a vocabulary "
                f"of {side} 65,500 entries, but the tokenizer {tokenizer!r} has {vocab_size:,} "
                f"(which gives {expected.name}); {fix}"
            )
        largest = max_token_id(prefix, dtype)
        if largest >= vocab_size:
            raise ValueError(
                f"--data-path: {prefix}.bin holds token id {largest:,} but the tokenizer "
                f"{tokenizer!r} has only {vocab_size:,} tokens (ids 0..{vocab_size - 1:,}); {fix}"
            )
