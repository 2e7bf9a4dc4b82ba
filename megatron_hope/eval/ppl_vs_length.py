"""Perplexity of the last 256 tokens at a list of input lengths (paper 4.2.1, Figure 5).

Text comes from a held-out megatron `.bin/.idx` pair (give the prefix, with or without `.bin`) or
a JSONL file with a "text" field (tokenized with the model's tokenizer). The paper uses 1,000 C4
samples; two ways to cut them (`windows`):

  stream    documents are concatenated into one token stream; each sample is a window ending at
            a seeded random position, and at every length ℓ the model reads the last ℓ tokens of
            that window, so all lengths score the same final tokens and differ only in how much
            context precedes them (windows may cross document boundaries).
  document  each sample is ONE document of at least the longest length: at length ℓ the model
            reads the start token followed by the document's first ℓ - 1 tokens, as a model sees
            a fresh document (shorter documents are skipped; the result says how many were used).

PPL at ℓ = exp(mean negative log-likelihood over the last min(256, ℓ - 1) targets of every
sample).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from megatron_hope.eval.common import batches

DEFAULT_LAST_TOKENS = 256
DEFAULT_SAMPLES = 1000
LENGTH_FRACTIONS = (0.5, 1.0, 2.0, 4.0, 8.0)
"""Default input lengths / L: the paper's Figure 5 reaches 8 L (4096 for L = 512)."""
WINDOW_KINDS = ("stream", "document")


def load_documents(path: str | Path, needed: int, tokenizer=None) -> list[np.ndarray]:
    """Documents (token arrays, EOD dropped) from a `.bin/.idx` prefix or JSONL until they hold
    at least `needed` tokens (when the data has them)."""
    eod = tokenizer.eod_id if tokenizer is not None else None
    stream = load_token_stream(path, needed, tokenizer, separate=True)
    documents = []
    for document in stream:
        if eod is not None and len(document) and document[-1] == eod:
            document = document[:-1]
        documents.append(document)
    return documents


def load_token_stream(path: str | Path, needed: int, tokenizer=None, separate: bool = False):
    """At least `needed` tokens (when the data has them) from a `.bin/.idx` prefix or JSONL: one
    array, or the list of per-document arrays with `separate`."""
    path = Path(path)
    if path.suffix == ".jsonl":
        if not path.is_file():
            raise ValueError(f"--data {path}: no such file")
        if tokenizer is None:
            raise ValueError(f"--data {path}: JSONL needs a tokenizer; pass --tokenizer")
        pieces: list[int] = []
        documents: list[np.ndarray] = []
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    text = json.loads(line)["text"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise ValueError(f"--data {path}, line {number}: expected a JSON object "
                                     "with a \"text\" field") from None
                document = tokenizer.encode(text)
                if tokenizer.eod_id is not None:
                    document.append(tokenizer.eod_id)
                documents.append(np.asarray(document, dtype=np.int64))
                pieces += document
                if len(pieces) >= needed:
                    break
        return documents if separate else np.asarray(pieces, dtype=np.int64)
    prefix = path.with_suffix("") if path.suffix in (".bin", ".idx") else path
    if not (Path(f"{prefix}.bin").is_file() and Path(f"{prefix}.idx").is_file()):
        raise ValueError(f"--data {path}: neither a JSONL file nor a megatron dataset "
                         f"({prefix}.bin and {prefix}.idx)")
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    dataset = IndexedDataset(str(prefix))  # keep alive while its memory map is read
    chunks, total = [], 0
    for index in range(len(dataset)):
        chunk = np.asarray(dataset[index], dtype=np.int64).copy()
        chunks.append(chunk)
        total += len(chunk)
        if total >= needed:
            break
    if separate:
        return chunks
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)


def window_ends(stream_length: int, longest: int, samples: int, seed: int) -> list[int]:
    """End offsets (exclusive) of `samples` windows of `longest` tokens, seeded; windows do not
    overlap when the stream is long enough."""
    if stream_length < longest:
        raise ValueError(f"--data holds {stream_length} tokens, fewer than the longest length "
                         f"{longest}; use more data or shorter --lengths")
    rng = np.random.default_rng(seed)
    slots = stream_length // longest
    if slots >= samples:
        chosen = np.sort(rng.choice(slots, samples, replace=False))
        return [int((slot + 1) * longest) for slot in chosen]
    return sorted(int(e) for e in rng.integers(longest, stream_length + 1, samples))


def nll_of_last(logits: torch.Tensor, tokens: torch.Tensor, last: int) -> torch.Tensor:
    """Summed NLL of the last `last` targets per row: logits `[b, s, V]`, tokens `[b, s]`."""
    targets = tokens[:, -last:]
    predicted = logits[:, -last - 1: -1]
    return F.cross_entropy(predicted.reshape(-1, predicted.shape[-1]), targets.reshape(-1),
                           reduction="none").view(targets.shape).sum(dim=1)


def document_windows(documents: list[np.ndarray], longest: int, samples: int, seed: int,
                     start_id: int | None) -> list[np.ndarray]:
    """`samples` windows of `longest` tokens, each the start of one document (seeded choice among
    the documents long enough), led by `start_id` unless the document already starts with it."""
    windows = []
    for document in documents:
        if start_id is not None and (len(document) == 0 or document[0] != start_id):
            document = np.concatenate([[start_id], document]).astype(np.int64)
        if len(document) >= longest:
            windows.append(document[:longest])
    if not windows:
        raise ValueError(f"--data: no document holds the longest length {longest} tokens; use "
                         "longer documents, shorter --lengths or --windows stream")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(windows), min(samples, len(windows)), replace=False))
    return [windows[i] for i in chosen]


def run_ppl_vs_length(scorer, data: str, lengths: list[int] | None = None,
                      samples: int = DEFAULT_SAMPLES, last_tokens: int = DEFAULT_LAST_TOKENS,
                      seed: int = 1234, batch_size: int = 4, progress: bool = True,
                      windows: str = "stream") -> dict:
    """Figure 5 curve for `scorer`: {"lengths", "ppl", "tokens_scored"}."""
    if windows not in WINDOW_KINDS:
        raise ValueError(f"--windows {windows!r}: use one of {', '.join(WINDOW_KINDS)}")
    lengths = lengths or [max(2, int(f * scorer.train_length)) for f in LENGTH_FRACTIONS]
    for length in lengths:
        if length < 2:
            raise ValueError(f"--lengths: {length} leaves no token to predict")
        scorer.check_length(length, "ppl-vs-length: input length")
    longest = max(lengths)
    if windows == "stream":
        stream = load_token_stream(data, longest * samples, scorer.tokenizer)
        rows = [stream[end - longest: end]
                for end in window_ends(len(stream), longest, samples, seed)]
    else:
        tokenizer = scorer.tokenizer
        documents = load_documents(data, 8 * longest * samples, tokenizer)
        start_id = tokenizer.start_id if tokenizer is not None else None
        rows = document_windows(documents, longest, samples, seed, start_id)
    top = max(int(row.max()) for row in rows)
    if top >= scorer.vocab_size:
        raise ValueError(f"--data {data}: token id {top} is outside the model's "
                         f"vocabulary ({scorer.vocab_size}); was it tokenized for this model?")
    ppl, scored = [], []
    for length in tqdm(lengths, desc=f"ppl {scorer.name}", disable=not progress):
        last = min(last_tokens, length - 1)
        total, count = 0.0, 0
        for batch in batches(rows, batch_size):
            # stream: the last `length` tokens (same targets at every length); document: the
            # first `length` (the document's start, start token included).
            cut = [row[-length:] if windows == "stream" else row[:length] for row in batch]
            tokens = torch.tensor(np.stack(cut))
            total += float(nll_of_last(scorer.logits(tokens), tokens, last).sum())
            count += last * len(batch)
        ppl.append(math.exp(total / count))
        scored.append(last)
    return {"lengths": lengths, "ppl": ppl, "tokens_scored": scored, "samples": len(rows),
            "windows": windows, "last_tokens": last_tokens, "seed": seed, "data": str(data),
            "train_length": scorer.train_length}
