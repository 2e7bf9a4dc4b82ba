"""kill -9 a small `hope-pretrain` run 20 times at random moments (the first inside a save) and
resume it each time; single process and 2 ranks with the distributed optimizer. Prints, per
setting: kills, kills that landed inside a save, the iterations resumed from, orphan processes,
and whether every logged loss equals the uninterrupted run's bit for bit.

    PYTHONPATH=. python benchmarks/bench_kill_resume.py [--kills 20] [--iters 40] [--ranks 1 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.training import kill_harness


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--iters", type=int, default=40)
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from megatron_hope.data.sample_data import prepare_sample_data

    failed = False
    with tempfile.TemporaryDirectory(prefix="bench-kill-") as tmp:
        root = Path(tmp)
        sample = prepare_sample_data(root / "data", vocab_size=600, max_bytes=1_500_000)
        data = {"prefix": str(sample.data_prefix), "tokenizer": str(sample.tokenizer_path)}
        for ranks in args.ranks:
            work = root / f"ranks{ranks}"
            started = time.monotonic()
            reference = kill_harness.reference_losses(
                work / "ref", kill_harness.tiny_flags(data, work / "ref" / "ckpt", args.iters,
                                                      ranks), ranks, timeout=900)
            ref_seconds = time.monotonic() - started
            run, report = kill_harness.run_with_kills(
                work / "killed", kill_harness.tiny_flags(data, work / "killed" / "ckpt",
                                                         args.iters, ranks),
                ranks, args.kills, seed=args.seed + ranks, timeout=900)
            wrong = kill_harness.mismatches(reference, run)
            logged = len(run.losses())
            failed |= bool(wrong or report.orphans or report.kills != args.kills)
            print(f"ranks={ranks}{' (distributed optimizer)' if ranks > 1 else ''}: "
                  f"{report.kills} kills ({report.kills_inside_save} inside a save), "
                  f"{report.attempts} starts, resumed from iterations {report.resumed_from}; "
                  f"{logged} loss lines for {len(reference)} iterations, "
                  f"{len(wrong)} differing from the uninterrupted run; "
                  f"{len(report.orphans)} orphan processes; "
                  f"{report.seconds:.0f} s killed run vs {ref_seconds:.0f} s uninterrupted",
                  flush=True)
            for line in wrong[:5] + report.orphans[:5]:
                print("   ", line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
