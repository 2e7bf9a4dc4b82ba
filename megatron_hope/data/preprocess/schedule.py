"""Parent side: run the pending shards in this process or in a pool of `--workers` processes.

Plain files' byte ranges are independent tasks. A compressed file is decompressed once: by a
worker as one task when there are at least as many compressed files as workers, else by this
process, which sends each chunk of lines to the pool (at most workers + 1 chunks in flight, so
memory stays at a few chunks however large the file). Results are keyed by shard, and the merge
reads shards in input order, so which worker finished first never shows in the outputs.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

from megatron_hope.data.preprocess import worker
from megatron_hope.data.preprocess.config import PreprocessConfig
from megatron_hope.data.preprocess.plan import InputFile, Shard, read_done
from megatron_hope.data.preprocess.progress import Progress

after_shard_hook = None
"""Tests set this to a callable(completed_count) to simulate a crash between shards."""


class Results:
    """Where finished shards go: `done` by shard prefix, `layouts` by file base."""

    def __init__(self, done: dict, layouts: dict) -> None:
        self.done = done
        self.layouts = layouts
        self.completed = 0
        self.reused = 0

    def shard(self, prefix: str, record: dict) -> None:
        self.done[prefix] = record
        self.completed += 1
        if after_shard_hook is not None:
            after_shard_hook(self.completed)

    def stream(self, file: InputFile, result) -> None:
        layout, records, reused = result
        self.layouts[file.base] = layout
        self.reused += reused
        for prefix, record in records.items():
            self.shard(prefix, record)


def encode_pending(
    config: PreprocessConfig,
    state: dict,
    ranges: list[Shard],
    streams: list[InputFile],
    results: Results,
    total_bytes: int,
) -> None:
    """Encode `ranges` and the chunks of `streams` not done yet into `results`."""
    progress = Progress(config.progress, config.log_interval, total_bytes)
    ranges = sorted(ranges, key=lambda shard: shard.start - shard.end)  # biggest first
    counters = None
    try:
        if config.workers == 1 or (not streams and len(ranges) <= 1):
            counters = multiprocessing.Array("q", 4)
            worker.init_worker(state, counters, in_subprocess=False)
            worker._worker["on_batch"] = lambda: progress.update(counters)
            for shard in ranges:
                results.shard(shard.prefix, worker.encode_range(shard))
            for file in streams:
                results.stream(file, worker.encode_stream(file))
            return
        context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
        counters = context.Array("q", 4)
        size = config.workers if streams else min(config.workers, len(ranges))
        with _pool(context, size, state, counters) as pool:
            tracker = _Tracker(progress, counters)
            for shard in ranges:
                tracker.submit(
                    pool.submit(worker.encode_range, shard),
                    lambda record, shard=shard: results.shard(shard.prefix, record),
                    order=(shard.file.index, shard.number),
                )
            if len(streams) >= config.workers:
                for file in streams:
                    tracker.submit(
                        pool.submit(worker.encode_stream, file),
                        lambda result, file=file: results.stream(file, result),
                        order=(file.index, 0),
                    )
            else:
                for file in streams:
                    _stream_in_parent(file, pool, tracker, state, results, config.workers + 1)
            while tracker.pending:
                tracker.poll(0.2)
    finally:
        progress.close(counters)


def _stream_in_parent(file, pool, tracker, state, results: Results, in_flight: int) -> None:
    """Decompress `file` here and encode its chunks in the pool."""

    def count_bytes(n: int) -> None:
        with tracker.counters.get_lock():
            tracker.counters[3] += n

    stream = worker.ChunkStream(file, state["range_bytes"], count_bytes)
    for shard, first_line, data in stream:
        record = read_done(shard, state)
        if record is not None:
            results.done[shard.prefix] = record
            results.reused += 1
            continue
        while len(tracker.pending) >= in_flight:
            tracker.poll(0.05)
        tracker.submit(
            pool.submit(worker.encode_chunk, shard, data, first_line),
            lambda record, shard=shard: results.shard(shard.prefix, record),
            order=(file.index, shard.number),
        )
    results.layouts[file.base] = stream.finish(state)


class _Tracker:
    """Futures in flight, each with what to do with its value and its place in the input.

    Workers finish in any order, but an error must be the one a single worker would have met
    first (`--strict`: the first bad record in file order). So after an error the shards that
    come later are cancelled, the earlier ones still in flight finish, and the earliest error
    is raised.
    """

    def __init__(self, progress: Progress, counters) -> None:
        self.progress = progress
        self.counters = counters
        self.pending: list = []
        self.error: tuple | None = None  # (order, exception) of the earliest failed shard

    def submit(self, future, on_value, order: tuple[int, int]) -> None:
        self.pending.append((future, on_value, order))
        if self.error is not None and order > self.error[0]:
            future.cancel()

    def poll(self, timeout: float) -> None:
        if self.pending:
            wait([item[0] for item in self.pending], timeout, return_when=FIRST_COMPLETED)
        for item in [item for item in self.pending if item[0].done()]:
            self.pending.remove(item)
            future, on_value, order = item
            if future.cancelled():
                continue
            error = future.exception()
            if error is None:
                on_value(future.result())
            elif self.error is None or order < self.error[0]:
                self.error = (order, error)
                for later in self.pending:
                    if later[2] > order:
                        later[0].cancel()
        self.progress.update(self.counters)
        if self.error is not None and not any(item[2] < self.error[0] for item in self.pending):
            raise self.error[1]


@contextlib.contextmanager
def _pool(context, workers: int, state: dict, counters):
    """A process pool that, on any error, cancels what has not started and waits for the rest.

    `concurrent.futures` rather than `multiprocessing.Pool`: Pool.terminate() can deadlock
    joining its task thread once a worker has gone (seen here with a --strict bad record), while
    an executor reports a dead worker as BrokenProcessPool and shuts down cleanly.
    """
    # Set while workers fork (the executor forks them on demand), so HF tokenizers' fork handler
    # sees parallelism is off in them; restored so this process keeps its threads.
    saved = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=worker.init_worker,
                               initargs=(state, counters, True))
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    else:
        pool.shutdown(wait=True)
    finally:
        if saved is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = saved
