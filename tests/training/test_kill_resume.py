"""kill -9 at random moments, one of them inside a save: every resume starts from a complete
checkpoint, the losses it logs (with dropout, so the RNG restore is exercised) are bit-identical
to those of an uninterrupted run, and no process of the run survives a kill. The 20-kill version
is `benchmarks/bench_kill_resume.py`."""

from __future__ import annotations

import pytest

from tests.training import kill_harness
from tests.training.test_parallel_parity import data  # noqa: F401 (fixture)

pytestmark = pytest.mark.distributed

TRAIN_ITERS = 4


@pytest.mark.parametrize("ranks, kills", [(1, 1), (2, 1)], ids=["1-rank", "2-ranks-distopt"])
def test_kill_9_during_training_and_saves_resumes_exactly(tmp_path, data, ranks, kills):  # noqa: F811
    reference = kill_harness.reference_losses(
        tmp_path / "ref", kill_harness.tiny_flags(data, tmp_path / "ref" / "ckpt", TRAIN_ITERS,
                                                  ranks), ranks, timeout=240)
    assert sorted(reference) == list(range(1, TRAIN_ITERS + 1))
    run, report = kill_harness.run_with_kills(
        tmp_path / "killed", kill_harness.tiny_flags(data, tmp_path / "killed" / "ckpt",
                                                     TRAIN_ITERS, ranks),
        ranks, kills, seed=ranks, timeout=240)
    assert report.kills == kills and report.kills_inside_save >= 1, report
    assert not report.orphans, f"processes of the run survived kill -9: {report.orphans}"
    assert not kill_harness.mismatches(reference, run), kill_harness.mismatches(reference, run)
    assert not list((tmp_path / "killed" / "ckpt").glob("*.incomplete-*"))
