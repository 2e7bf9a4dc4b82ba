"""Progress of a run: a tqdm bar over input bytes on a terminal, log lines otherwise (Slurm)."""

from __future__ import annotations

import sys
import time


class Progress:
    """Documents/s, tokens/s and MB/s (input file bytes): a tqdm bar on a terminal, a log line
    every `log_interval` documents otherwise.

    `update(counters)` reads the shared counters `[documents, tokens, text bytes, file bytes]`.
    """

    def __init__(self, enabled: bool, log_interval: int, total_file_bytes: int) -> None:
        self.enabled = enabled
        self.log_interval = log_interval
        self.total = max(total_file_bytes, 1)
        self.started = self.last_draw = time.perf_counter()
        self.next_log = log_interval
        self.bar = None
        if enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm
            except ImportError:  # tqdm is optional: fall back to log lines
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(
                    total=self.total, unit="B", unit_scale=True, desc="preprocess", leave=True
                )

    def update(self, counters, final: bool = False) -> None:
        if not self.enabled or counters is None:
            return
        documents, tokens, text_bytes, file_bytes = list(counters)
        now = time.perf_counter()
        elapsed = max(now - self.started, 1e-9)
        rates = (
            f"{documents:,} docs, {documents / elapsed:,.0f} docs/s, "
            f"{tokens / elapsed / 1e6:,.2f}M tokens/s, {file_bytes / elapsed / 1e6:,.1f} MB/s"
        )
        if self.bar is not None:
            if final or now - self.last_draw >= 0.5:
                self.last_draw = now
                self.bar.update(min(file_bytes, self.total) - self.bar.n)
                self.bar.set_postfix_str(rates, refresh=True)
        elif documents >= self.next_log:
            self.next_log = (documents // self.log_interval + 1) * self.log_interval
            print(
                f"processed {documents:,} documents ({text_bytes / 1e6:,.1f} MB of text, "
                f"{100 * min(file_bytes / self.total, 1.0):.1f}% of the input): {rates}",
                file=sys.stderr,
                flush=True,
            )

    def close(self, counters=None) -> None:
        if counters is not None:
            self.update(counters, final=True)
        if self.bar is not None:
            self.bar.close()
