"""hope-preprocess on hostile corpora: every bad record counted and reported with file:line, or
one clear error naming the file; never a traceback, never a silent drop.

    python -m pytest -x -q tests/robustness/test_preprocess_corpora.py

Already covered elsewhere and not repeated: each bad-record reason on its own and truncated
.gz/.zst at the reader (tests/data/test_readers.py), a mixed bad corpus with --workers 2 and
--strict (tests/data/test_preprocess.py). The 200 MB line is `benchmarks/bench_long_line.py`;
CI reads a 20 MB one.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest

from megatron_hope.data.cli import main
from megatron_hope.data.preprocess import schedule
from tests.robustness.corpora import CORPORA, one_long_line


def preprocess(inputs: Path, prefix: Path, tokenizer: str, *flags: str) -> tuple[int, str, str]:
    """`hope-preprocess` in process: (exit status, stdout, stderr)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    argv = ["--input", str(inputs), "--output-prefix", str(prefix), "--tokenizer-model",
            tokenizer, "--append-eod", "--no-progress", *flags]
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            status = main(argv)
        except SystemExit as exit_:
            status = exit_.code
    return status, stdout.getvalue(), stderr.getvalue()


def summary_of(prefix: Path) -> dict:
    return json.loads(Path(f"{prefix}_summary.json").read_text())["summary"]


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("corpus", sorted(CORPORA))
def test_every_record_is_a_document_or_a_counted_skip(corpus, workers, sample_data, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    expected = CORPORA[corpus](inputs)
    prefix = tmp_path / "out" / corpus
    status, stdout, stderr = preprocess(inputs, prefix, str(sample_data.tokenizer_path),
                                        "--workers", workers)
    assert status == 0, stderr
    summary = summary_of(prefix)
    assert summary["documents"] == expected.documents
    assert sum(summary["skipped"].values()) == expected.skipped_total, summary["skipped"]
    if expected.any_skipped is None:
        assert summary["skipped"] == expected.skipped
    assert f"skipped records: {expected.skipped_total:,}" in stdout
    # Every skipped record has its own file:line in the report beside the outputs.
    report = Path(f"{prefix}_skipped.tsv")
    rows = report.read_text().splitlines()[1:] if expected.skipped_total else []
    assert len(rows) == expected.skipped_total
    assert all(re.match(rf"{re.escape(str(inputs))}/[^\t]+:\d+\t", row) for row in rows), rows[:3]


def test_a_single_20_megabyte_line_is_one_document(sample_data, tmp_path):
    path = tmp_path / "long.jsonl"
    one_long_line(path, megabytes=20)
    prefix = tmp_path / "out" / "long"
    status, _, stderr = preprocess(path, prefix, str(sample_data.tokenizer_path),
                                   "--workers", "2", "--partitions", "4")
    assert status == 0, stderr
    summary = summary_of(prefix)
    assert (summary["documents"], summary["skipped"]) == (1, {})
    [output] = summary["outputs"].values()
    assert output["tokens"] > 1_000_000  # the words, not a truncated piece of them


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("replacement", ["vanished", "directory"])
def test_an_input_that_goes_away_mid_run_is_named(replacement, workers, sample_data, tmp_path,
                                                  monkeypatch):
    """chmod 000 cannot make a file unreadable here: the tests run as root, whom permission
    bits do not stop. A file deleted, or replaced by a directory, after the first shard fails
    the same `open` a permission error would."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    words = "".join(json.dumps({"text": f"document {i} " * 5}) + "\n" for i in range(3000))
    (inputs / "a_large.jsonl").write_text(words)  # encoded first: shards go largest first
    victim = inputs / "b_small.jsonl"
    victim.write_text("".join(json.dumps({"text": f"small {i}"}) + "\n" for i in range(10)))

    def take_away(completed: int) -> None:
        if completed == 1 and victim.is_file():
            victim.unlink()
            if replacement == "directory":
                victim.mkdir()

    monkeypatch.setattr(schedule, "after_shard_hook", take_away)
    prefix = tmp_path / "out" / "corpus"
    status, _, stderr = preprocess(inputs, prefix, str(sample_data.tokenizer_path),
                                   "--workers", workers)
    if status == 0:  # --workers 2: the pool may have read the small file before it went away
        assert workers == "2" and summary_of(prefix)["documents"] == 3010
        return
    assert status == 1, stderr
    assert f"hope-preprocess: error: {victim}: cannot read it" in stderr
    assert "Traceback" not in stderr
    assert not list(prefix.parent.glob("corpus_text_document.*"))  # no output from half a run
