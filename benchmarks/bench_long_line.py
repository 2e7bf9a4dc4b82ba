"""hope-preprocess on one JSONL line of 200 MB: time and peak memory, as a fresh process.

    PYTHONPATH=. python benchmarks/bench_long_line.py                  # 200 MB, ~15 s
    PYTHONPATH=. python benchmarks/bench_long_line.py --size-mb 20     # what CI reads

The line is one record whose text is words repeated, written in 1 MB pieces (this process never
holds it). The run is `hope-preprocess --workers 2 --partitions 4` in a fresh subprocess (one
line cannot be cut: one range, one document) with the sample tokenizer; printed: wall time,
tokens, tokens/s, and the peak RSS of the run against the line's size. Before the fix that came
with tests/robustness/test_preprocess_corpora.py a line was re-joined block by block (quadratic
copying) and the fast tokenizer's check encoded the whole document with the reference encoder
(~150 bytes of memory per byte of text): 20 MB took 11 s and 3 GB.

Figures, not assertions.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--workdir", default=None, help="default: a temporary directory")
    args = parser.parse_args()

    from megatron_hope.data.sample_data import prepare_sample_data
    from tests.robustness.corpora import one_long_line

    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.workdir or scratch)
        work.mkdir(parents=True, exist_ok=True)
        sample = prepare_sample_data(work / "sample", vocab_size=600, max_bytes=100_000)
        line = work / "long.jsonl"
        started = time.perf_counter()
        text_bytes = one_long_line(line, args.size_mb)
        print(f"wrote {line} ({line.stat().st_size / 1e6:.0f} MB, one line) in "
              f"{time.perf_counter() - started:.1f} s")
        prefix = work / "out" / "long"
        command = [sys.executable, "-m", "megatron_hope.data.cli", "--input", str(line),
                   "--output-prefix", str(prefix), "--tokenizer-model",
                   str(sample.tokenizer_path), "--append-eod", "--workers", "2",
                   "--partitions", "4", "--no-progress"]
        started = time.perf_counter()
        subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        summary = json.loads(Path(f"{prefix}_summary.json").read_text())["summary"]
        print(f"hope-preprocess: {seconds:.1f} s, {summary['documents']} document(s), "
              f"{summary['tokens']:,} tokens ({summary['tokens'] / seconds / 1e6:.2f}M tokens/s), "
              f"skipped {summary['skipped'] or 'none'}")
        print(f"peak RSS {peak / 2**30:.2f} GiB = {peak / text_bytes:.1f} x the line's "
              f"{text_bytes / 2**20:.0f} MiB of text")


if __name__ == "__main__":
    main()
