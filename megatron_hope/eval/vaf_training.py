"""VAF over training (paper 3.3.2, Figure 3b): eq. 5 per band and per pair at each saved
iteration of one hope-pretrain run, at the training length.

    hope-eval vaf-over-training --load runs/rope/checkpoints --iterations all \
        --output-dir eval/rope

Every saved `iter_XXXXXXX/` (or the `--iterations` listed) is loaded in turn and analysed as
`hope-eval attention` does (random-token inputs, the last query, mean over layers and heads);
the result plots each band's VAF against the training step.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from megatron_hope.eval.attention import BANDS, DEFAULT_SAMPLES, run_attention

ITERATION_DIR = re.compile(r"^iter_(\d{7})$")


def saved_iterations(load_dir: str | Path) -> list[int]:
    """The iterations with a complete checkpoint under `load_dir`, ascending."""
    load_dir = Path(load_dir)
    if not load_dir.is_dir():
        raise ValueError(f"--load {load_dir}: no such checkpoint directory")
    found = sorted(int(match.group(1)) for path in load_dir.iterdir()
                   if path.is_dir() and (match := ITERATION_DIR.match(path.name)))
    if not found:
        raise ValueError(f"--load {load_dir}: no saved iteration (iter_XXXXXXX/) there")
    return found


def parse_iterations(text: str, load_dir: str | Path) -> list[int]:
    """`all` or comma-separated iterations, each checked against what is saved."""
    saved = saved_iterations(load_dir)
    if text == "all":
        return saved
    try:
        wanted = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise ValueError(f"--iterations {text!r}: expected 'all' or numbers such as "
                         "100,200") from None
    missing = [i for i in wanted if i not in saved]
    if missing or not wanted:
        raise ValueError(f"--iterations {text!r}: {missing or 'none'} not saved under "
                         f"{load_dir}; saved: {saved}")
    return wanted


def run_vaf_over_training(load_at: Callable[[int], object], iterations: list[int],
                          length: int | None = None, samples: int = DEFAULT_SAMPLES,
                          seed: int = 1234, batch_size: int = 8, progress: bool = True) -> dict:
    """Band and pair VAF at `length` (default: the training length) for each iteration;
    `load_at(iteration)` returns that checkpoint's scorer."""
    band_vaf: dict[str, list] = {band: [] for band in BANDS}
    band_error: dict[str, list] = {band: [] for band in BANDS}
    pair_vaf, bands, train_length = [], [], None
    for iteration in tqdm(iterations, desc="vaf over training", disable=not progress):
        scorer = load_at(iteration)
        train_length = scorer.train_length
        result = run_attention(scorer, [length or train_length], samples, seed, batch_size,
                               progress=False)
        [at_length] = result["results"]
        bands = result["bands"]
        pair_vaf.append(at_length["vaf"])
        for band in BANDS:
            band_vaf[band].append(at_length["band_vaf"][band])
            band_error[band].append(at_length["band_vaf_standard_error"][band])
    return {"iterations": iterations, "length": length or train_length, "bands": bands,
            "band_vaf": band_vaf, "band_vaf_standard_error": band_error, "pair_vaf": pair_vaf,
            "samples": samples, "seed": seed, "train_length": train_length}
