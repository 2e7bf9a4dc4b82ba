"""Readers: every format, subsets from paths and meta, and every bad record with its file:line.

PYTHONPATH=. python -m pytest tests/data/test_readers.py -q
"""

from __future__ import annotations

import gzip
import json

import pytest

from megatron_hope.data import inputs
from megatron_hope.data.readers import BadRecord, Document, iter_records
from tests.data.conftest import jsonl_bytes, write_jsonl

RECORDS = [{"text": f"document {i}: " + "word " * i, "meta": {"i": i}} for i in range(1, 40)]


@pytest.mark.parametrize("name", ["a.jsonl", "a.jsonl.gz", "a.jsonl.zst"])
def test_formats_read_the_same_documents(tmp_path, name):
    path = write_jsonl(tmp_path / name, RECORDS)
    items = list(iter_records(path))
    assert [item.texts[0] for item in items] == [r["text"] for r in RECORDS]
    assert [item.line for item in items] == list(range(1, len(RECORDS) + 1))


def test_multi_member_gzip_and_multi_frame_zstd_are_read_to_the_end(tmp_path):
    import zstandard

    first, second = jsonl_bytes(RECORDS[:5]), jsonl_bytes(RECORDS[5:])
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(first) + gzip.compress(second))
    compressor = zstandard.ZstdCompressor()
    (tmp_path / "a.jsonl.zst").write_bytes(compressor.compress(first) + compressor.compress(second))
    for name in ("a.jsonl.gz", "a.jsonl.zst"):
        assert len(list(iter_records(tmp_path / name))) == len(RECORDS)


def test_redpajama_v2_documents_read_raw_content(tmp_path):
    records = [{"raw_content": "v2 text", "doc_id": "x/0"}, {"raw_content": "more", "doc_id": "1"}]
    path = write_jsonl(tmp_path / "documents" / "2023-06" / "0000" / "en_head.json.gz", records)
    assert [d.texts for d in iter_records(path)] == [("v2 text",), ("more",)]
    assert [d.texts for d in iter_records(path, ["raw_content"])] == [("v2 text",), ("more",)]


def test_plain_jsonl_with_any_keys(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [{"content": "a", "title": "t"}])
    assert [d.texts for d in iter_records(path, ["content", "title"])] == [("a", "t")]


def test_subsets_from_paths_and_meta(tmp_path):
    assert inputs.subset_from_path("/d/rp/common_crawl/2019-30/en_head_0000.jsonl.zst") == (
        "common_crawl"
    )
    assert inputs.subset_from_path("/d/rp/arxiv/arxiv_024.jsonl") == "arxiv"
    assert inputs.subset_from_path("/d/rp/book/book.jsonl") == "book"
    assert inputs.subset_from_path("/d/rp/wikipedia/wiki.jsonl") == "wikipedia"
    assert inputs.subset_from_path("/d/rp/stackexchange/stackexchange.jsonl") == "stackexchange"
    assert inputs.subset_from_path("/d/rp/github/filtered_0.sampled.jsonl") == "github"
    assert inputs.subset_from_path("/d/my_corpus/part-0.jsonl") is None
    record = {"text": "x", "meta": {"redpajama_set_name": "RedPajamaStackExchange"}}
    assert inputs.subset_from_meta(record) == "stackexchange"
    assert inputs.subset_from_meta({"text": "x", "meta": json.dumps({"source": "c4"})}) == "c4"


def test_discover_inputs_is_sorted_and_clear_about_nothing(tmp_path):
    for name in ["b/2.jsonl", "a/1.jsonl.zst", "a/0.json.gz", "notes.txt"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = inputs.discover_inputs(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "a/0.json.gz",
        "a/1.jsonl.zst",
        "b/2.jsonl",
    ]
    assert inputs.discover_inputs(str(tmp_path / "*" / "*.jsonl")) == [tmp_path / "b/2.jsonl"]
    with pytest.raises(ValueError, match=r"--input .*no such file"):
        inputs.discover_inputs(tmp_path / "missing")


BAD_LINES = [
    (b'{"text": "ok"', "malformed_json", "not valid JSON"),
    (b'["a list"]', "not_an_object", "expected a JSON object"),
    (b'{"meta": {}}', "missing_key", "no 'text' key"),
    (b'{"text": 42}', "not_a_string", "'text' holds a int"),
    (b'{"text": "caf\xe9"}', "invalid_utf8", "not valid UTF-8"),
    (b'{"text": "  \\n "}', "empty_document", "'text' is empty"),
]


@pytest.mark.parametrize("line, reason, message", BAD_LINES)
def test_each_bad_record_is_reported_with_file_and_line(tmp_path, line, reason, message):
    good = json.dumps({"text": "good"}).encode()
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join([good, line, good]) + b"\n")
    items = list(iter_records(path))
    assert [type(item) for item in items] == [Document, BadRecord, Document]
    bad = items[1]
    assert (bad.line, bad.reason) == (2, reason)
    assert str(bad).startswith(f"{path}:2: {message}")
    assert items[2].line == 3  # the reader goes on after a bad line


@pytest.mark.parametrize("name", ["cut.jsonl.gz", "cut.jsonl.zst"])
def test_truncated_compressed_file_keeps_the_complete_lines_and_reports_the_cut(tmp_path, name):
    many = [{"text": f"{i} {r['text']}"} for i, r in enumerate(RECORDS * 300)]
    whole = write_jsonl(tmp_path / ("whole" + name[3:]), many).read_bytes()
    path = tmp_path / name
    path.write_bytes(whole[: len(whole) * 2 // 3])
    items = list(iter_records(path))
    documents = [item for item in items if isinstance(item, Document)]
    assert isinstance(items[-1], BadRecord) and items[-1].reason == "truncated_file"
    assert items[-1].line == len(documents) + 1
    assert 0 < len(documents) < len(many)
    assert [d.texts[0] for d in documents] == [r["text"] for r in many[: len(documents)]]
    assert all(isinstance(item, Document) for item in items[:-1])
