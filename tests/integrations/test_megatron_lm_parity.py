"""Megatron-LM's own `pretrain()` (the tag paired with the installed megatron-core) and
`hope-pretrain` train the same HoPE model to the same losses, and Megatron-LM's TP=2 and PP=2
runs to those of its single process.

Same `.bin/.idx` (the golden corpus), same flags parsed by each loop's own parser, same initial
weights (one iteration-0 checkpoint loaded model-only). What it took for the numbers to agree:
- the same tokenizer treatment: both read the ids through Megatron-LM's NullTokenizer (same
  EOD, no pad: megatron-core's `GPTDataset` masks nothing in either loop);
- `--swiglu`'s default FFN size: `hope-pretrain` rounded 8/3 x hidden up to a multiple of 64,
  Megatron-LM rounds down (128 vs 192 here); ours now follows Megatron-LM;
- a vocabulary whose padding is the same at TP=1 and TP=2 (760 -> 768; see `VOCAB_SIZE`).

    PYTHONPATH=. python -m pytest tests/integrations -q -m megatron_lm
"""

from __future__ import annotations

import pytest

from tests.integrations import megatron_lm_runs as runs

pytestmark = pytest.mark.megatron_lm

PRINTED_PRECISION = 1e-6
"""Relative: Megatron-LM prints `lm loss` with 7 significant digits (see `iteration_losses`)."""
GRAD_NORM_PRINTED = 1e-3
"""Absolute: Megatron-LM prints `grad norm` with 3 decimals."""


def test_megatron_lm_and_hope_pretrain_give_the_same_losses(hope_run, megatron_lm_run):
    """Every iteration's `lm loss` of Megatron-LM's loop equals `hope-pretrain`'s to the digits
    Megatron-LM prints, and so do the gradient norms: the same GPTDataset sample order (same
    seed, split and train size `train_iters x global batch`), schedule (warm-up and cosine
    decay in samples), AdamW with decoupled weight decay off norms, clipping and loss
    (the token mean of each micro-batch, averaged over micro-batches: Megatron-LM's sum and
    count per micro-batch give the same mean when every token counts).

    No difference is left to explain beyond printing: the reconstructed per-iteration losses
    (Megatron-LM's second line is the mean of the first two; `iteration_losses`) differ from
    ours by less than 1e-6 relative, the rounding of 7 printed digits."""
    ours, theirs = hope_run["train"], megatron_lm_run["losses"]
    assert sorted(theirs) == list(range(1, runs.TRAIN_ITERS + 1)), megatron_lm_run["output"][-3000:]
    difference = runs.max_relative_difference(theirs, ours)
    print(f"hope-pretrain: {ours}\nMegatron-LM:   {theirs}\nmax relative difference "
          f"{difference:.2e}")
    assert difference < PRINTED_PRECISION
    for iteration, norm in megatron_lm_run["grad_norms"].items():
        assert norm == pytest.approx(hope_run["grad_norms"][iteration], abs=GRAD_NORM_PRINTED)
    assert ours[runs.TRAIN_ITERS] < ours[1]


def test_megatron_lm_tp2_matches_its_single_process(megatron_lm_run, megatron_lm_tp2_run):
    """TP=2 (through the CPU module's L6, `get_device_arch_version`), here with the distributed
    optimizer, which over one data-parallel rank computes what the regular one does."""
    losses = megatron_lm_tp2_run["losses"]
    difference = runs.max_relative_difference(losses, megatron_lm_run["losses"])
    print(f"TP=2: {losses}; max relative difference {difference:.2e}")
    assert difference < PRINTED_PRECISION


def test_megatron_lm_pp2_matches_its_single_process(megatron_lm_folder, flags,
                                                    initial_checkpoint, megatron_lm_run,
                                                    tmp_path):
    """PP=2 from the same initial checkpoint (from scratch megatron seeds each stage apart)."""
    result = runs.run_megatron_lm(
        megatron_lm_folder, [*flags, *runs.from_checkpoint(initial_checkpoint),
                             "--pipeline-model-parallel-size", "2"], tmp_path, ranks=2)
    difference = runs.max_relative_difference(result["losses"], megatron_lm_run["losses"])
    print(f"PP=2: {result['losses']}; max relative difference {difference:.2e}")
    assert difference < PRINTED_PRECISION
