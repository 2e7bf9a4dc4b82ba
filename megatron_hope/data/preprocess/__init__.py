"""RedPajama (or any JSONL) to Megatron `.bin/.idx`: streaming, parallel, resumable, exact.

The engine behind `hope-preprocess` and `tools/preprocess_data.py`:

1. `build_tokenizer` fails on a bad `--tokenizer-*` before any file is opened.
2. Inputs are discovered and sorted by path; each file's subset (RedPajama-1T) comes from its path
   or its first record's meta (`plan.py`).
3. Every file is cut into shards (`plan.py`): a plain `.jsonl` into byte ranges at line ends
   (`--partitions`, `range_bytes`), a compressed one into chunks of its decompressed lines, read
   once. `--workers` processes encode the shards (`schedule.py`, `worker.py`) into
   `<output-prefix>_shards/` under temporary names; a shard's `.done.json` is written last, so a
   rerun after a crash or preemption skips exactly the complete shards and redoes the rest.
4. The shards are merged in sorted input order, range by range (`merge.py`, streaming, the bytes
   of megatron-core's `IndexedDatasetBuilder.add_index`) into
   `{prefix}_{key}_{document|sentence}.bin/.idx` (`{prefix}_{subset}_{key}_...` for RedPajama
   subsets). The order never depends on which worker finished first or on how files were cut,
   so the bytes are identical for any `--workers`, `--partitions` and across interrupted runs.

Memory: a worker holds one batch of documents and its shard's index (12 bytes per sequence);
the parent holds a few chunks of a compressed file it decompresses; the merge holds one shard's
index at a time. Nothing grows with the size of the input.
"""

from megatron_hope.data.preprocess.config import PreprocessConfig, PreprocessSummary
from megatron_hope.data.preprocess.run import run_preprocess

__all__ = ["PreprocessConfig", "PreprocessSummary", "run_preprocess"]
