"""Shared corpus and tokenizer for the preprocessing tests: stdlib sources in a RedPajama tree."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from megatron_hope.data.sample_corpus import write_sample_corpus
from megatron_hope.data.tokenizer import train_bpe_tokenizer


@pytest.fixture(scope="session")
def corpus_records(tmp_path_factory) -> list[dict]:
    """600 documents of real text (stdlib source paragraphs) as RedPajama-1T records."""
    path = tmp_path_factory.mktemp("corpus") / "stdlib.jsonl"
    write_sample_corpus(path, max_bytes=400_000)
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        source = json.loads(line)
        for number, paragraph in enumerate(source["text"].split("\n\n")):
            if paragraph.strip():
                meta = {"path": source["meta"]["path"], "paragraph": number}
                records.append({"text": paragraph, "meta": meta})
    return records[:600]


@pytest.fixture(scope="session")
def tokenizer_file(tmp_path_factory, corpus_records) -> Path:
    directory = tmp_path_factory.mktemp("tokenizer")
    corpus = directory / "corpus.jsonl"
    write_jsonl(corpus, corpus_records)
    return train_bpe_tokenizer(corpus, directory, vocab_size=600)


def jsonl_bytes(records) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def write_jsonl(path: Path, records) -> Path:
    """Plain, .gz or .zst by the file name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = jsonl_bytes(records)
    name = str(path)
    if name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    elif name.endswith(".zst"):
        import zstandard

        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path


@pytest.fixture
def redpajama_tree(tmp_path, corpus_records) -> Path:
    """A small RedPajama-1T layout: arxiv (.jsonl + .jsonl.gz), common_crawl (.jsonl.zst), c4."""
    root = tmp_path / "redpajama"
    records = corpus_records
    write_jsonl(root / "arxiv" / "arxiv_0.jsonl", records[0:10])
    write_jsonl(root / "arxiv" / "arxiv_1.jsonl.gz", records[10:20])
    write_jsonl(root / "common_crawl" / "2019-30" / "en_head_0000.jsonl.zst", records[20:35])
    write_jsonl(root / "common_crawl" / "2023-06" / "en_head_0001.jsonl.zst", records[35:45])
    write_jsonl(root / "c4" / "c4-train.00000-of-01024.jsonl", records[45:60])
    return root


KILLED_RUN = """
import os, signal, sys
from megatron_hope.data.preprocess import PreprocessConfig, run_preprocess, schedule

def kill(completed):
    if completed == int(sys.argv[4]):  # SIGKILL: no cleanup at all, as under an OOM killer
        os.kill(os.getpid(), signal.SIGKILL)

schedule.after_shard_hook = kill
run_preprocess(PreprocessConfig(input=sys.argv[1], output_prefix=sys.argv[2],
               tokenizer_model=sys.argv[3], append_eod=True, workers=2, progress=False,
               range_bytes=int(sys.argv[5])))
"""


def run_killed(inputs, prefix, tokenizer_file, kill_after: int, range_bytes: int) -> None:
    """`run_preprocess` with 2 workers in a real subprocess, SIGKILLed after `kill_after` shards.

    stderr goes to a file, not a pipe: a pipe would stay open in any worker that outlived the
    kill and keep `subprocess.run` waiting.
    """
    import os
    import signal
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    log = Path(f"{prefix}.killed.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as stderr:
        killed = subprocess.run(
            [
                sys.executable,
                "-c",
                KILLED_RUN,
                str(inputs),
                str(prefix),
                str(tokenizer_file),
                str(kill_after),
                str(range_bytes),
            ],
            env={**os.environ, "PYTHONPATH": str(repo)},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            timeout=300,
        )
    assert killed.returncode == -signal.SIGKILL, log.read_text()[-2000:]
    log.unlink()
