"""The preprocessing engine: round trip, identical bytes for any worker count, resume after a
crash, Slurm task slices, bad records, --strict, early tokenizer errors, GPTDataset on the output.

PYTHONPATH=. python -m pytest tests/data/test_preprocess.py -q
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy
import pytest
from megatron.core.datasets.indexed_dataset import IndexedDataset

from megatron_hope.data.preprocess import PreprocessConfig, run_preprocess, schedule
from megatron_hope.data.preprocess.config import RANGE_BYTES
from megatron_hope.data.readers import BadRecordError
from megatron_hope.data.tokenizer import HopeTokenizer
from tests.data.conftest import run_killed, write_jsonl

SUBSET_FILES = {
    "arxiv": ["arxiv/arxiv_0.jsonl", "arxiv/arxiv_1.jsonl.gz"],
    "c4": ["c4/c4-train.00000-of-01024.jsonl"],
    "common_crawl": [
        "common_crawl/2019-30/en_head_0000.jsonl.zst",
        "common_crawl/2023-06/en_head_0001.jsonl.zst",
    ],
}


def run(inputs, prefix, tokenizer_file, **overrides):
    settings = {"append_eod": True, "progress": False, "tokenizer_model": str(tokenizer_file)}
    settings.update(overrides)
    return run_preprocess(PreprocessConfig(input=inputs, output_prefix=str(prefix), **settings))


def output_bytes(directory: Path) -> dict[str, bytes]:
    return {
        path.name: path.read_bytes()
        for path in sorted(directory.iterdir())
        if path.suffix in (".bin", ".idx")
    }


def texts_of(root: Path, relative_paths) -> list[str]:
    texts = []
    for relative in relative_paths:
        data = (root / relative).read_bytes()
        if relative.endswith(".gz"):
            data = gzip.decompress(data)
        elif relative.endswith(".zst"):
            import zstandard

            data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
        texts.extend(json.loads(line)["text"] for line in data.decode().splitlines())
    return texts


def test_round_trip_one_output_per_subset(redpajama_tree, tokenizer_file, tmp_path):
    summary = run(redpajama_tree, tmp_path / "out" / "rp", tokenizer_file)
    tokenizer = HopeTokenizer(tokenizer_file)
    assert sorted(Path(p).name for p in summary.outputs) == [
        "rp_arxiv_text_document",
        "rp_c4_text_document",
        "rp_common_crawl_text_document",
    ]
    for subset, files in SUBSET_FILES.items():
        prefix = tmp_path / "out" / f"rp_{subset}_text_document"
        dataset = IndexedDataset(str(prefix))
        texts = texts_of(redpajama_tree, files)
        assert dataset.index.dtype == numpy.uint16
        assert len(dataset) == len(texts)
        for index, text in enumerate(texts):
            ids = dataset[index].tolist()
            assert ids == [*tokenizer.tokenize(text), tokenizer.eod]
            assert tokenizer.detokenize(ids[:-1]) == text
        output = summary.outputs[str(prefix)]
        assert output["tokens"] == int(dataset.sequence_lengths.sum())
        assert output["subset"] == subset
    assert summary.skipped == {}
    assert not (tmp_path / "out" / "rp_shards").exists()  # removed after the merge
    blend = (tmp_path / "out" / "rp_summary.json").read_text()
    assert "common_crawl" in blend


def test_without_eod_and_without_subsets(redpajama_tree, tokenizer_file, tmp_path):
    run(redpajama_tree, tmp_path / "rp", tokenizer_file, append_eod=False, subsets=False)
    dataset = IndexedDataset(str(tmp_path / "rp_text_document"))
    tokenizer = HopeTokenizer(tokenizer_file)
    files = sorted(f for fs in SUBSET_FILES.values() for f in fs)
    texts = texts_of(redpajama_tree, files)
    assert len(dataset) == len(texts)
    assert dataset[0].tolist() == tokenizer.tokenize(texts[0])
    assert dataset[len(texts) - 1].tolist() == tokenizer.tokenize(texts[-1])


def test_workers_and_backends_give_identical_bytes(redpajama_tree, tokenizer_file, tmp_path):
    run(redpajama_tree, tmp_path / "w1" / "rp", tokenizer_file, workers=1)
    run(redpajama_tree, tmp_path / "w2" / "rp", tokenizer_file, workers=2)
    run(redpajama_tree, tmp_path / "ref" / "rp", tokenizer_file, tokenizer_backend="reference")
    first = output_bytes(tmp_path / "w1")
    assert len(first) == 6
    assert output_bytes(tmp_path / "w2") == first
    assert output_bytes(tmp_path / "ref") == first


@pytest.mark.parametrize("workers", [1, 2])
def test_a_crash_midway_resumes_to_the_same_bytes(
    redpajama_tree, tokenizer_file, tmp_path, monkeypatch, workers
):
    run(redpajama_tree, tmp_path / "whole" / "rp", tokenizer_file)

    def crash(completed):
        if completed == 2:
            raise KeyboardInterrupt("simulated preemption")

    monkeypatch.setattr(schedule, "after_shard_hook", crash)
    with pytest.raises(KeyboardInterrupt):
        run(redpajama_tree, tmp_path / "resumed" / "rp", tokenizer_file, workers=workers)
    assert not list((tmp_path / "resumed").glob("rp_*_document.*"))  # nothing final yet
    done = list((tmp_path / "resumed" / "rp_shards").rglob("*.done.json"))
    assert len(done) >= 2
    # A shard cut short before its .done.json was written is never taken for a whole one.
    half_written = Path(str(done[0])[: -len(".done.json")] + "_text_document.bin")
    half_written.write_bytes(half_written.read_bytes()[:10])
    done[0].unlink()

    monkeypatch.setattr(schedule, "after_shard_hook", None)
    summary = run(redpajama_tree, tmp_path / "resumed" / "rp", tokenizer_file, workers=workers)
    assert summary.shards_reused == len(done) - 1
    assert summary.shards_encoded == 5 - len(done) + 1
    assert output_bytes(tmp_path / "resumed") == output_bytes(tmp_path / "whole")

    again = run(redpajama_tree, tmp_path / "resumed" / "rp", tokenizer_file)
    assert again.shards_encoded == 0  # up to date: nothing redone


def test_slurm_task_slices_then_merge(redpajama_tree, tokenizer_file, tmp_path):
    run(redpajama_tree, tmp_path / "whole" / "rp", tokenizer_file)
    for task in range(3):
        partial = run(
            redpajama_tree, tmp_path / "tasks" / "rp", tokenizer_file, task_index=task, num_tasks=3
        )
        assert not partial.merged
    with pytest.raises(ValueError, match="cannot merge"):
        # A merge before every task finished names what is missing.
        (tmp_path / "other").mkdir()
        run(
            redpajama_tree,
            tmp_path / "other" / "rp",
            tokenizer_file,
            task_index=0,
            num_tasks=2,
            merge=True,
        )
    merged = run(redpajama_tree, tmp_path / "tasks" / "rp", tokenizer_file)
    assert merged.shards_encoded == 0 and merged.shards_reused == 5
    assert output_bytes(tmp_path / "tasks") == output_bytes(tmp_path / "whole")


def write_bad_corpus(directory: Path) -> dict[str, int]:
    good = {"text": "a good document."}
    lines = [
        json.dumps(good).encode(),
        b'{"text": "unterminated',
        b'["not", "an", "object"]',
        b'{"meta": {}}',
        b'{"text": ["a", "list"]}',
        b'{"text": "bad \xff byte"}',
        b'{"text": ""}',
        json.dumps(good).encode(),
    ]
    (directory / "bad.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    whole = gzip.compress(
        b"".join(json.dumps({"text": f"doc {i}"}).encode() + b"\n" for i in range(5000))
    )
    (directory / "cut.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    return {
        "malformed_json": 1,
        "not_an_object": 1,
        "missing_key": 1,
        "not_a_string": 1,
        "invalid_utf8": 1,
        "empty_document": 1,
        "truncated_file": 1,
    }


def test_bad_records_are_counted_reported_and_skipped(tokenizer_file, tmp_path):
    (tmp_path / "in").mkdir()
    expected = write_bad_corpus(tmp_path / "in")
    summary = run(tmp_path / "in", tmp_path / "out", tokenizer_file, workers=2)
    assert summary.skipped == expected
    dataset = IndexedDataset(str(tmp_path / "out_text_document"))
    assert (
        len(dataset)
        == summary.documents
        == 2 + sum(1 for _ in range(dataset.document_indices.size - 1 - 2))
    )
    bad = str(tmp_path / "in" / "bad.jsonl")
    assert f"{bad}:2: not valid JSON" in "\n".join(summary.skipped_examples)
    assert f"{bad}:6: not valid UTF-8" in "\n".join(summary.skipped_examples)
    report = (tmp_path / "out_skipped.tsv").read_text()
    assert f"{tmp_path / 'in' / 'cut.jsonl.gz'}:" in report and "truncated_file" in report
    assert len(report.splitlines()) == 1 + sum(expected.values())
    lines = "\n".join(summary.lines())
    assert "skipped records: 7" in lines and "invalid_utf8 1" in lines


def test_strict_stops_at_the_first_bad_record_and_writes_nothing_final(tokenizer_file, tmp_path):
    (tmp_path / "in").mkdir()
    write_bad_corpus(tmp_path / "in")
    (tmp_path / "in" / "cut.jsonl.gz").unlink()
    write_jsonl(tmp_path / "in" / "good.jsonl", [{"text": f"doc {i}"} for i in range(100)])
    for workers in (1, 2):
        with pytest.raises(BadRecordError, match=r"bad.jsonl:2: not valid JSON"):
            run(tmp_path / "in", tmp_path / "out", tokenizer_file, strict=True, workers=workers)
        assert not list(tmp_path.glob("out_text_document*"))
        assert not list(tmp_path.rglob("*.tmp-*"))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"tokenizer_type": "WordPieceTokenizer"}, "--tokenizer-type 'WordPieceTokenizer'"),
        ({"tokenizer_model": "/no/such/tokenizer.json"}, "--tokenizer-model.*does not exist"),
        ({"tokenizer_type": "SentencePieceTokenizer"}, "not a SentencePiece model"),
        ({"tokenizer_type": "GPT2BPETokenizer"}, "needs --vocab-file and --merge-file"),
    ],
)
def test_tokenizer_errors_come_before_any_work(tmp_path, tokenizer_file, overrides, message):
    (tmp_path / "in.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(ValueError, match=message):
        run(tmp_path / "in.jsonl", tmp_path / "out" / "x", tokenizer_file, **overrides)
    assert not (tmp_path / "out").exists()


def test_v2_documents_and_sentences(tokenizer_file, tmp_path, corpus_records):
    texts = [r["text"] for r in corpus_records[:40] if not r["text"][0].isspace()]
    texts = [t + " Second sentence here. And a third one!" for t in texts]
    write_jsonl(
        tmp_path / "v2" / "documents" / "2023-06" / "0000" / "en_head.json.gz",
        [{"raw_content": t, "doc_id": str(i)} for i, t in enumerate(texts)],
    )
    summary = run(
        tmp_path / "v2", tmp_path / "out", tokenizer_file, split_sentences=True, keep_newlines=True
    )
    dataset = IndexedDataset(str(tmp_path / "out_text_sentence"))
    tokenizer = HopeTokenizer(tokenizer_file)
    assert summary.outputs[str(tmp_path / "out_text_sentence")]["sequences"] > len(texts)
    assert dataset.document_indices.size - 1 == len(texts)
    for document, text in enumerate(texts):
        first, last = dataset.document_indices[document], dataset.document_indices[document + 1]
        ids = numpy.concatenate([dataset[i] for i in range(first, last)]).tolist()
        assert ids[-1] == tokenizer.eod and tokenizer.eod not in ids[:-1]
        # --keep-newlines: the sentences together are the whole text again.
        assert tokenizer.detokenize(ids[:-1]) == text


def test_gpt_dataset_builds_samples_from_the_output(redpajama_tree, tokenizer_file, tmp_path):
    from megatron.core.datasets.blended_megatron_dataset_builder import (
        BlendedMegatronDatasetBuilder,
    )
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    summary = run(redpajama_tree, tmp_path / "rp", tokenizer_file)
    tokenizer = HopeTokenizer(tokenizer_file)
    # One prefix: a weighted blend of several needs torch.distributed for its index cache.
    config = GPTDatasetConfig(
        random_seed=1234,
        sequence_length=32,
        blend=([str(tmp_path / "rp_common_crawl_text_document")], None),
        split="100,0,0",
        path_to_cache=str(tmp_path / "cache"),
        tokenizer=tokenizer,
        reset_position_ids=True,
        reset_attention_mask=True,
        eod_mask_loss=True,
    )
    train, _valid, _test = BlendedMegatronDatasetBuilder(
        GPTDataset, [64, None, None], lambda: True, config
    ).build()
    assert summary.outputs[str(tmp_path / "rp_common_crawl_text_document")]["tokens"] > 32
    assert len(train) >= 64
    for index in range(len(train)):
        item = train[index]
        assert item["tokens"].shape == (32,)
        assert item["tokens"][1:].tolist() == item["labels"][:-1].tolist()
        assert (item["loss_mask"][item["tokens"] == tokenizer.eod] == 0).all()


def test_a_sigkilled_run_resumes_to_the_same_bytes(redpajama_tree, tokenizer_file, tmp_path):
    run(redpajama_tree, tmp_path / "whole" / "rp", tokenizer_file)
    run_killed(redpajama_tree, tmp_path / "killed" / "rp", tokenizer_file, 2, RANGE_BYTES)
    assert not list((tmp_path / "killed").glob("rp_*_document.*"))
    summary = run(redpajama_tree, tmp_path / "killed" / "rp", tokenizer_file, workers=2)
    assert summary.shards_reused >= 2
    assert output_bytes(tmp_path / "killed") == output_bytes(tmp_path / "whole")
    assert not list((tmp_path / "killed").rglob("*.tmp-*"))
