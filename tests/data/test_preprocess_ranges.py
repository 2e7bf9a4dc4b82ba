"""One large file, many workers: byte ranges of a plain .jsonl and chunks of a .gz/.zst give the
same bytes for any --workers and --partitions, resume after SIGKILL, and keep file:line exact.

Ranges are forced small (`range_bytes`) so that a ~60 kB file is cut into many shards.

PYTHONPATH=. python -m pytest tests/data/test_preprocess_ranges.py -q
"""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import pytest

from megatron_hope.data.preprocess import PreprocessConfig, run_preprocess
from megatron_hope.data.preprocess.plan import line_ranges
from megatron_hope.data.readers import BadRecordError
from tests.data.conftest import run_killed, write_jsonl
from tests.data.test_preprocess import output_bytes

REPO = Path(__file__).resolve().parents[2]
RANGE_BYTES = 8_000


def run(inputs, prefix, tokenizer_file, **overrides):
    settings = {
        "append_eod": True,
        "progress": False,
        "tokenizer_model": str(tokenizer_file),
        "range_bytes": RANGE_BYTES,
    }
    settings.update(overrides)
    return run_preprocess(PreprocessConfig(input=inputs, output_prefix=str(prefix), **settings))


@pytest.fixture
def one_big_file(tmp_path, corpus_records):
    """The same 300 records as .jsonl, .jsonl.gz and .jsonl.zst (~60 kB each decompressed)."""
    return {
        suffix: write_jsonl(tmp_path / "in" / f"book{suffix}", corpus_records[:300])
        for suffix in (".jsonl", ".jsonl.gz", ".jsonl.zst")
    }


def test_ranges_end_at_line_ends_and_cover_the_file(one_big_file):
    path = one_big_file[".jsonl"]
    data = path.read_bytes()
    for partitions in (1, 3, 50):
        ranges = line_ranges(path, partitions, RANGE_BYTES)
        assert ranges[0][0] == 0 and ranges[-1][1] == len(data)
        assert all(a[1] == b[0] for a, b in pairwise(ranges))
        assert all(data[end - 1 : end] == b"\n" for _, end in ranges)
        assert len(ranges) >= 0.9 * partitions  # two cuts in one long line make one range
    assert len(line_ranges(path, 1, RANGE_BYTES)) == -(-len(data) // RANGE_BYTES)


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".jsonl.zst"])
def test_one_file_same_bytes_for_any_workers_and_partitions(
    one_big_file, tokenizer_file, tmp_path, suffix
):
    path = one_big_file[suffix]
    whole = run(path, tmp_path / "whole" / "b", tokenizer_file, range_bytes=1 << 30)
    assert whole.shards_encoded == 1
    expected = output_bytes(tmp_path / "whole")
    assert len(expected) == 2
    for workers, partitions in [(1, 1), (2, 1), (2, 3)]:
        out = tmp_path / f"w{workers}p{partitions}"
        summary = run(path, out / "b", tokenizer_file, workers=workers, partitions=partitions)
        assert summary.shards_encoded > 5  # really cut into many shards
        assert summary.documents == whole.documents == 300
        assert output_bytes(out) == expected, (workers, partitions)
        assert not (out / "b_shards").exists()


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.zst"])
def test_a_sigkilled_run_resumes_to_the_same_bytes(one_big_file, tokenizer_file, tmp_path, suffix):
    path = one_big_file[suffix]
    run(path, tmp_path / "whole" / "b", tokenizer_file)
    run_killed(path, tmp_path / "killed" / "b", tokenizer_file, 3, RANGE_BYTES)
    assert not list((tmp_path / "killed").glob("b_*_document.*"))
    summary = run(path, tmp_path / "killed" / "b", tokenizer_file, workers=2)
    assert summary.shards_reused >= 3  # the workers may have finished more before the kill
    assert output_bytes(tmp_path / "killed") == output_bytes(tmp_path / "whole")
    assert not list((tmp_path / "killed").rglob("*.tmp-*"))


def bad_lines_file(tmp_path, suffix: str, corpus_records) -> tuple[Path, list[int]]:
    """Good records with two bad lines in the later ranges; returns (path, bad line numbers)."""
    lines = [json.dumps(record) for record in corpus_records[:200]]
    bad_at = [150, 181]  # 1-based, well past the first 8 kB range
    lines[bad_at[0] - 1] = '{"text": "unterminated'
    lines[bad_at[1] - 1] = '{"meta": {}}'
    path = tmp_path / "in" / f"bad{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = ("\n".join(lines) + "\n").encode()
    if suffix == ".jsonl.gz":
        import gzip

        data = gzip.compress(data)
    elif suffix == ".jsonl.zst":
        import zstandard

        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path, bad_at


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
@pytest.mark.parametrize("workers", [1, 2])
def test_bad_records_keep_exact_file_and_line_in_later_ranges(
    tmp_path, tokenizer_file, corpus_records, suffix, workers
):
    path, bad_at = bad_lines_file(tmp_path, suffix, corpus_records)
    summary = run(path, tmp_path / "out" / "b", tokenizer_file, workers=workers, partitions=3)
    assert summary.shards_encoded > 2
    assert summary.skipped == {"malformed_json": 1, "missing_key": 1}
    report = (tmp_path / "out" / "b_skipped.tsv").read_text().splitlines()[1:]
    assert [line.split("\t")[0] for line in report] == [f"{path}:{n}" for n in bad_at]
    with pytest.raises(BadRecordError, match=f"{path.name}:{bad_at[0]}: not valid JSON"):
        run(path, tmp_path / "strict" / "b", tokenizer_file, workers=workers, strict=True)


def test_slurm_tasks_share_the_ranges_of_one_file(one_big_file, tokenizer_file, tmp_path):
    path = one_big_file[".jsonl"]
    run(path, tmp_path / "whole" / "b", tokenizer_file)
    for task in range(2):
        partial = run(path, tmp_path / "tasks" / "b", tokenizer_file, task_index=task, num_tasks=2)
        assert not partial.merged and partial.shards_encoded > 1
    merged = run(path, tmp_path / "tasks" / "b", tokenizer_file)
    assert merged.shards_encoded == 0
    assert output_bytes(tmp_path / "tasks") == output_bytes(tmp_path / "whole")
