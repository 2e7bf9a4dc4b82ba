"""`hope-preprocess` and `hope-train-tokenizer` end to end, in process (`main(argv)`).

PYTHONPATH=. python -m pytest tests/data/test_cli.py -q
"""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest
from megatron.core.datasets.indexed_dataset import IndexedDataset

from megatron_hope.data.cli import main, train_tokenizer_main
from megatron_hope.data.tokenizer import HopeTokenizer

REPO = Path(__file__).resolve().parents[2]


def test_train_tokenizer_then_preprocess_a_redpajama_tree(redpajama_tree, tmp_path, capsys):
    assert (
        train_tokenizer_main(
            [
                "--input",
                str(redpajama_tree / "arxiv"),
                "--vocab-size",
                "400",
                "--output",
                str(tmp_path / "tok"),
            ]
        )
        == 0
    )
    tokenizer_file = tmp_path / "tok" / "tokenizer.json"
    assert HopeTokenizer(tokenizer_file).vocab_size == 400

    prefix = tmp_path / "out" / "rp"
    argv = [
        "--input",
        str(redpajama_tree),
        "--output-prefix",
        str(prefix),
        "--tokenizer-type",
        "HuggingFaceTokenizer",
        "--tokenizer-model",
        str(tokenizer_file),
        "--json-keys",
        "text",
        "--append-eod",
        "--workers",
        "2",
        "--partitions",
        "2",
        "--log-interval",
        "10",
    ]
    assert main(argv) == 0
    captured = capsys.readouterr()
    out = captured.out
    # Progress (stderr is not a terminal here): log lines with the three rates.
    assert "docs/s" in captured.err and "tokens/s" in captured.err and "MB/s" in captured.err
    assert "skipped records: 0" in out and "--data-path " in out
    data_path = (tmp_path / "out" / "rp_data_path.txt").read_text().split()
    assert data_path[1::2] == [
        str(tmp_path / "out" / f"rp_{s}_text_document") for s in ("arxiv", "c4", "common_crawl")
    ]
    assert abs(sum(map(float, data_path[0::2])) - 1) < 1e-5
    for path in data_path[1::2]:
        assert len(IndexedDataset(path)) > 0
    summary = json.loads((tmp_path / "out" / "rp_summary.json").read_text())
    assert summary["summary"]["documents"] == 60

    # A rerun finds everything up to date.
    assert main(argv) == 0
    # 2 plain files in 2 ranges each (--partitions 2), 3 compressed files in one chunk each.
    assert "0 encoded, 7 reused" in capsys.readouterr().out


def test_errors_are_messages_not_tracebacks(tmp_path, capsys, tokenizer_file):
    (tmp_path / "in.jsonl").write_text('{"text": "x"}\n{"text": 1}\n')
    base = ["--input", str(tmp_path / "in.jsonl"), "--output-prefix", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as usage:  # a bad tokenizer flag is a usage error
        main([*base, "--tokenizer-model", str(tmp_path / "missing.json")])
    assert usage.value.code == 2
    assert "--tokenizer-model" in capsys.readouterr().err
    assert main([*base, "--tokenizer-model", str(tokenizer_file), "--strict"]) == 1
    assert f"{tmp_path / 'in.jsonl'}:2: 'text' holds a int" in capsys.readouterr().err
    assert main([*base, "--tokenizer-model", str(tokenizer_file)]) == 0
    assert "not_a_string 1" in capsys.readouterr().out


def test_tools_wrapper_runs_as_a_script(tmp_path, tokenizer_file, monkeypatch):
    (tmp_path / "in.jsonl").write_text('{"text": "hello world"}\n')
    # In process (a fresh interpreter would spend most of the test importing torch).
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "preprocess_data.py",
            "--input",
            str(tmp_path / "in.jsonl"),
            "--output-prefix",
            str(tmp_path / "o"),
            "--tokenizer-model",
            str(tokenizer_file),
            "--append-eod",
            "--no-progress",
        ],
    )
    with pytest.raises(SystemExit) as exit_status:
        runpy.run_path(str(REPO / "tools" / "preprocess_data.py"), run_name="__main__")
    assert exit_status.value.code == 0
    assert (tmp_path / "o_text_document.idx").read_bytes()[:9] == b"MMIDIDX\x00\x00"
