"""`write_sample_corpus`: which stdlib files, in which order, how many bytes, written atomically.

PYTHONPATH=. python -m pytest tests/data/test_sample_corpus.py -q
"""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import pytest

from megatron_hope.data.sample_corpus import (
    iter_jsonl_texts,
    python_minor_version,
    stdlib_source_paths,
    write_sample_corpus,
)


def test_source_paths_skip_tests_and_third_party_code():
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    relative = [path.relative_to(stdlib) for path in stdlib_source_paths()]
    assert Path("json/decoder.py") in relative
    for path in relative:
        assert not {"site-packages", "test", "tests", "idle_test"} & set(path.parts)
    assert [p.as_posix() for p in relative] == sorted(p.as_posix() for p in relative)


def test_corpus_is_deterministic_and_within_budget(tmp_path):
    first = write_sample_corpus(tmp_path / "a.jsonl", max_bytes=200_000)
    second = write_sample_corpus(tmp_path / "b.jsonl", max_bytes=200_000)
    assert first.path.read_bytes() == second.path.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "b.jsonl"]  # no temp files

    texts = list(iter_jsonl_texts(first.path))
    assert len(texts) == first.num_documents > 1
    assert sum(len(t.encode()) for t in texts) == first.num_bytes <= 200_000
    meta = json.loads(first.path.read_text().splitlines()[0])["meta"]
    assert meta["python_version"] == python_minor_version() == first.python_version
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    assert (stdlib / meta["path"]).read_text(encoding="utf-8") == texts[0]


def test_budget_below_the_first_file_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="max_bytes \\(1\\)"):
        write_sample_corpus(tmp_path / "a.jsonl", max_bytes=1)
    assert not list(tmp_path.iterdir())
