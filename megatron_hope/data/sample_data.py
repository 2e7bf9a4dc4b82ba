"""The offline sample dataset: stdlib corpus, its own BPE tokenizer, and a Megatron `.bin/.idx`.

This is what training falls back to when no `--data-path` is given, so a smoke run needs neither
network nor prepared data:

    from megatron_hope.data.sample_data import prepare_sample_data
    sample = prepare_sample_data("/tmp/hope-sample")
    # --data-path {sample.data_prefix} --tokenizer-type HuggingFaceTokenizer
    # --tokenizer-model {sample.tokenizer_path}

The first call takes about 10 s on 2 cores (plus importing megatron-core); later calls with the
same settings reuse the files.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import tokenizers

from megatron_hope.data.indexed import write_indexed_dataset
from megatron_hope.data.sample_corpus import DEFAULT_MAX_BYTES, write_sample_corpus
from megatron_hope.data.tokenizer import HopeTokenizer, train_bpe_tokenizer

logger = logging.getLogger(__name__)

CORPUS_FILE_NAME = "sample_corpus.jsonl"
TOKENIZER_FILE_NAME = "tokenizer.json"
DATA_PREFIX_NAME = "sample_text_document"
MANIFEST_FILE_NAME = "sample_data.json"
MANIFEST_FORMAT = 1
"""Bumped whenever the recipe changes in a way the settings below do not capture."""


@dataclass(frozen=True)
class SampleData:
    """The prepared sample: pass `data_prefix` as `--data-path`, `tokenizer_path` as
    `--tokenizer-model`."""

    corpus_path: Path
    """RedPajama-style JSONL of stdlib sources."""

    tokenizer_path: Path
    """Byte-level BPE `tokenizer.json` trained on the corpus."""

    data_prefix: Path
    """`<data_prefix>.bin/.idx`, one document per corpus line, EOD-terminated."""

    num_documents: int

    num_tokens: int
    """Tokens in `.bin`, EOD tokens included."""


def _settings(vocab_size: int, max_bytes: int) -> dict:
    """Everything the outputs depend on; a change in any of them forces a rebuild."""
    return {
        "format": MANIFEST_FORMAT,
        "vocab_size": vocab_size,
        "max_bytes": max_bytes,
        # The corpus is this Python's stdlib; the merges depend on the tokenizers release.
        "python_version": platform.python_version(),
        "tokenizers_version": tokenizers.__version__,
    }


def _output_paths(work_dir: Path) -> dict[str, Path]:
    prefix = work_dir / DATA_PREFIX_NAME
    return {
        "corpus": work_dir / CORPUS_FILE_NAME,
        "tokenizer": work_dir / TOKENIZER_FILE_NAME,
        "bin": prefix.with_name(prefix.name + ".bin"),
        "idx": prefix.with_name(prefix.name + ".idx"),
    }


def _reusable(manifest_path: Path, settings: dict, outputs: dict[str, Path]) -> dict | None:
    """The manifest when it matches `settings` and every output still has its recorded size."""
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if manifest.get("settings") != settings:
        return None
    sizes = manifest.get("file_sizes", {})
    for name, path in outputs.items():
        if not path.is_file() or path.stat().st_size != sizes.get(name):
            return None
    return manifest


@contextlib.contextmanager
def _exclusive(lock_path: Path):
    """Serialize builders of one work_dir (e.g. every rank of a smoke run calling this at once)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: the temp-and-rename writes still keep each file whole
        yield
        return
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def prepare_sample_data(
    work_dir: str | os.PathLike, vocab_size: int = 4096, max_bytes: int | None = None
) -> SampleData:
    """Build (or reuse) the sample corpus, tokenizer and `.bin/.idx` under `work_dir`.

    Outputs are reused when the manifest (`sample_data.json`, written last) records the same
    settings and the files' sizes still match; otherwise everything is rebuilt. The build is
    deterministic, so a rebuild reproduces the same bytes.

    Args:
        work_dir: directory for the outputs; created if missing.
        vocab_size: BPE vocabulary including the special tokens.
        max_bytes: text bytes of stdlib sources to use; None means `DEFAULT_MAX_BYTES`.
    """
    max_bytes = DEFAULT_MAX_BYTES if max_bytes is None else max_bytes
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    outputs = _output_paths(work_dir)
    manifest_path = work_dir / MANIFEST_FILE_NAME
    settings = _settings(vocab_size, max_bytes)

    with _exclusive(work_dir / ".sample_data.lock"):
        manifest = _reusable(manifest_path, settings, outputs)
        if manifest is not None:
            logger.info("reusing the sample data in %s", work_dir)
        else:
            manifest = _build(work_dir, settings, outputs, manifest_path)
    return SampleData(
        corpus_path=outputs["corpus"],
        tokenizer_path=outputs["tokenizer"],
        data_prefix=work_dir / DATA_PREFIX_NAME,
        num_documents=manifest["num_documents"],
        num_tokens=manifest["num_tokens"],
    )


def _build(work_dir: Path, settings: dict, outputs: dict[str, Path], manifest_path: Path) -> dict:
    # The manifest goes first so that a build interrupted halfway is never mistaken for a whole one.
    manifest_path.unlink(missing_ok=True)
    started = time.perf_counter()
    logger.info("building the sample data in %s (%s)", work_dir, settings)

    corpus = write_sample_corpus(outputs["corpus"], max_bytes=settings["max_bytes"])
    logger.info(
        "corpus: %d stdlib files, %.1f MB of text (%.1f s)",
        corpus.num_documents,
        corpus.num_bytes / 1e6,
        time.perf_counter() - started,
    )
    train_bpe_tokenizer(outputs["corpus"], outputs["tokenizer"], vocab_size=settings["vocab_size"])
    tokenizer = HopeTokenizer(outputs["tokenizer"])
    logger.info(
        "tokenizer: %d entries (%.1f s)", tokenizer.vocab_size, time.perf_counter() - started
    )
    indexed = write_indexed_dataset(
        outputs["corpus"], tokenizer, work_dir / DATA_PREFIX_NAME, progress=True
    )
    logger.info(
        "sample data ready: %d documents, %d tokens (%.1f s)",
        indexed.num_documents,
        indexed.num_tokens,
        time.perf_counter() - started,
    )

    manifest = {
        "settings": settings,
        "num_documents": indexed.num_documents,
        "num_tokens": indexed.num_tokens,
        "file_sizes": {name: path.stat().st_size for name, path in outputs.items()},
    }
    temporary_path = manifest_path.with_name(f"{manifest_path.name}.tmp-{os.getpid()}")
    temporary_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary_path, manifest_path)
    return manifest
