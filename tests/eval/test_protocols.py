"""The paper's protocols on known answers: an oracle scores 100 and a constant model 0 under the
rules of sections 3-4 (copy counts and fixed set, FA's "includes" rule, gkamradt's needle, bands
from trained frequencies, document windows), and the report keeps the paper's rows and columns."""

from __future__ import annotations

import json
import math

import pytest
import torch

from megatron_hope.eval import attention, copy_task, fewshot, needle, ppl_vs_length
from megatron_hope.rope.frequencies import position_encoding_inv_freq
from tests.eval.fakes import (
    AnswersWith,
    ConstantModel,
    FixedAttention,
    OracleCopier,
    UniformModel,
    char_tokenizer,
    make,
)

POOL = torch.arange(1, 200)


# ----------------------------------------------------------------------------- copy (Table 1)
def test_copy_defaults_to_the_papers_counts_scaled_by_l_over_512():
    assert copy_task.paper_counts(512) == [30, 40, 50, 60, 70, 80]
    assert copy_task.paper_counts(1024) == [60, 80, 100, 120, 140, 160]
    assert copy_task.paper_counts(64) == [4, 5, 6, 8, 9, 10]
    oracle = make(OracleCopier, train_length=64)
    row = copy_task.run_copy(oracle, samples=3, progress=False)
    assert row["counts"] == [4, 5, 6, 8, 9, 10] and row["scores"] == [100.0] * 6
    # No separator: 12 tokens a sequence, then the 8-token query and the 4 answer tokens.
    assert row["lengths"] == [12 * n + 8 + 4 for n in row["counts"]] and not row["separator"]
    constant = copy_task.run_copy(make(ConstantModel, token=0, train_length=64), samples=3,
                                  progress=False)
    assert constant["scores"] == [0.0] * 6


def test_copy_columns_truncate_one_fixed_set():
    [sample] = copy_task.fixed_set(80, 1, POOL, seed=5)
    short, long = copy_task.truncate(sample, 30), copy_task.truncate(sample, 80)
    assert torch.equal(short.prompt[:30 * 12], long.prompt[:30 * 12])  # same draw, cut at N
    assert torch.equal(short.prompt[-8:], sample.prefixes[15]) and torch.equal(
        short.answer, sample.suffixes[15])  # the middle of 30
    assert torch.equal(long.answer, sample.suffixes[40])
    with pytest.raises(ValueError, match=r"sequence number 81 is outside 1\.\.80"):
        copy_task.truncate(sample, 81)


# ------------------------------------------------------------------- few-shot (Tables 2, 7)
def test_fa_counts_outputs_that_include_a_shown_label():
    labels = ["0", "1"]
    assert fewshot.includes_label(" 1.", labels) and not fewshot.follows_exactly(" 1.", labels)
    assert fewshot.includes_label("0\nReview:", labels) and fewshot.follows_exactly("0\n", labels)
    assert not fewshot.includes_label("yes", labels) and not fewshot.includes_label("\n1", labels)


def test_fewshot_oracle_100_constant_0_and_includes_vs_exact():
    task = fewshot.synthetic_task(60, seed=2)
    tok = char_tokenizer()
    oracle = make(OracleCopier, tokenizer=tok, train_length=1000, last_only=True)
    row = fewshot.run_fewshot(oracle, [task], lengths=[300, 600], samples=4, progress=False)
    assert row["scores"] == [100.0, 100.0] and row["scores_exact"] == [100.0, 100.0]
    constant = make(ConstantModel, token=ord("x"), tokenizer=tok, train_length=1000)
    assert fewshot.run_fewshot(constant, [task], lengths=[300], samples=4,
                               progress=False)["avg"] == 0.0
    wordy = make(AnswersWith, answer="1!", tokenizer=tok, train_length=1000)
    row = fewshot.run_fewshot(wordy, [task], lengths=[300], samples=4, progress=False)
    assert row["scores"] == [100.0] and row["scores_exact"] == [0.0]  # includes, not exactly


def test_fewshot_keeps_shots_and_query_across_lengths_and_flags_long_prompts():
    task = fewshot.synthetic_task(60, seed=3)
    tok = char_tokenizer()
    short = fewshot.make_prompts(task, 300, 4, tok.encode, seed=7)
    long = fewshot.make_prompts(task, 900, 4, tok.encode, seed=7)
    for a, b in zip(short, long, strict=True):
        strip = fewshot.PAD_SENTENCE
        assert tok.decode(a.ids).replace(strip, "") == tok.decode(b.ids).replace(strip, "")
        assert len(b.ids) > len(a.ids) and a.label == b.label
    scorer = make(AnswersWith, answer="1", tokenizer=tok, train_length=1000)
    row = fewshot.run_fewshot(scorer, [task], lengths=[40, 400], samples=3, progress=False)
    cell = row["tasks"]["synthetic"]
    assert cell["over_length"] == [3, 0]  # 5 shots and a query do not fit in 40 characters
    assert cell["input_tokens_max"][0] > 40 and cell["input_tokens_max"][1] <= 400


def test_glue_entailment_labels_become_0_1(tmp_path):
    rte = tmp_path / "dev.tsv"
    rte.write_text("index\tsentence1\tsentence2\tlabel\n" + "".join(
        f"{i}\tA {i}.\tB.\t{'entailment' if i % 2 else 'not_entailment'}\n" for i in range(8)))
    task = fewshot.load_task_file(rte)
    assert task.name == "RTE" and task.label_set == ["0", "1"]
    assert task.examples[1].label == "0" and task.examples[0].label == "1"


# ------------------------------------------------------------------------- needle (Figure 1)
def test_needle_is_gkamradts_with_a_natural_text_haystack():
    tok = char_tokenizer()
    steps = len(needle.ANSWER) + 2
    for depth in (0.0, 0.3, 1.0):
        prompt = needle.make_prompt(needle.NeedleCell(3000, depth), tok.encode, tok.decode, [0],
                                    steps)
        assert len(prompt) + steps - 1 == 3000
        text = tok.decode(prompt[1:])
        at = text.index(needle.NEEDLE.strip())
        assert abs(at / len(text) - depth) < 0.1
        before = text[:at].strip()
        if depth < 1.0:  # gkamradt appends at 100 %, elsewhere it backs off to a sentence end
            assert before == "" or before.endswith(".")
        assert text.endswith(needle.QUESTION) and "Dolores Park" not in text.replace(
            needle.NEEDLE, "")
    assert list(needle.DEFAULT_DEPTHS) == [i / 10 for i in range(11)]
    assert needle.retrieved(" Eat a sandwich and sit in\nDolores  Park.")
    assert not needle.retrieved(" sit in Dolores Park")


def test_needle_oracle_100_constant_0():
    tok = char_tokenizer()
    oracle = make(OracleCopier, tokenizer=tok, train_length=1000, last_only=True)
    row = needle.run_needle(oracle, [700], progress=False)
    assert row["depths"] == list(needle.DEFAULT_DEPTHS) and row["scores"] == [[100.0] * 11]
    assert "python-stdlib" in row["haystack"]
    constant = make(ConstantModel, token=ord("a"), tokenizer=tok, train_length=1000)
    assert needle.run_needle(constant, [400], [0.5], progress=False)["avg"] == 0.0


# ------------------------------------------------------------------ attention (section 3)
def test_bands_come_from_trained_frequencies_and_hope_train_length():
    def bands(kind, length, hope_length=None):
        theta = position_encoding_inv_freq(kind, 16, 1e4, hope_length or length)
        return attention.bands_from_frequencies(theta.double().tolist(), length)

    # d = 16, b = 1e4, L = 64: pairs 0-2 turn at least once within L, 3-7 less than half.
    assert bands("rope", 64) == ["high"] * 3 + ["low"] * 5
    assert bands("hope", 64) == ["high"] * 3 + ["independent"] * 5
    assert bands("rope", 40) == ["high"] * 2 + ["activated"] + ["low"] * 5
    assert bands("ab1", 40) == ["high"] * 2 + ["independent"] + ["low"] * 5
    ab3 = bands("ab3", 40)  # the replaced pairs turn at high frequencies now
    assert "independent" not in ab3 and ab3.count("high") > 2
    scorer = make(FixedAttention, train_length=64,
                  trained_inv_freq=position_encoding_inv_freq("hope", 16, 1e4, 32),
                  info={"hope_train_length": 32})
    assert attention.pair_bands(scorer) == ["high"] * 2 + ["independent"] * 6


def test_attention_keeps_layer_0_and_reports_standard_errors():
    scorer = make(FixedAttention, train_length=16,
                  inv_freq=position_encoding_inv_freq("rope", 8, 1e4),
                  info={"hope_train_length": 16})
    result = attention.run_attention(scorer, [16], samples=12, batch_size=5, progress=False)
    assert attention.DEFAULT_SAMPLES == 5000
    [r] = result["results"]
    components = torch.tensor(r["components"])
    layer0 = torch.tensor(r["layer_components"]["0"])
    torch.testing.assert_close(layer0, 2 * components)  # layer 1's query is zero
    torch.testing.assert_close(components.sum(0), torch.tensor(r["logits"]))
    # Every sample is identical: no spread, so every standard error is zero.
    assert max(r["logits_standard_error"]) == pytest.approx(0.0, abs=1e-9)
    errors = [e for e in r["band_vaf_standard_error"].values() if e is not None]
    assert errors and max(errors) == pytest.approx(0.0, abs=1e-9)
    assert set(r["band_vaf"]) == set(attention.BANDS)


def test_vaf_over_training_sweeps_saved_iterations(tmp_path):
    from megatron_hope.eval import vaf_training

    for step in (10, 30, 20):
        (tmp_path / f"iter_{step:07d}").mkdir()
    (tmp_path / "iter_0000040.incomplete").mkdir()  # an interrupted save is not a checkpoint
    assert vaf_training.parse_iterations("all", tmp_path) == [10, 20, 30]
    assert vaf_training.parse_iterations("30,10", tmp_path) == [10, 30]
    with pytest.raises(ValueError, match=r"\[40\] not saved .* saved: \[10, 20, 30\]"):
        vaf_training.parse_iterations("10,40", tmp_path)

    def load_at(iteration):
        return make(FixedAttention, train_length=8 + iteration // 10,
                    inv_freq=position_encoding_inv_freq("rope", 8, 1e4))

    result = vaf_training.run_vaf_over_training(load_at, [10, 20], samples=3, progress=False)
    for index, step in enumerate((10, 20)):
        # At the training length of that checkpoint, as `attention` computes it.
        alone = attention.run_attention(load_at(step), [8 + step // 10], 3, progress=False)
        expected = alone["results"][0]["band_vaf"]
        assert {b: v[index] for b, v in result["band_vaf"].items()} == expected


# -------------------------------------------------------------------- perplexity (Figure 5)
def test_ppl_document_windows_start_with_the_start_token(tmp_path):
    data = tmp_path / "docs.jsonl"
    texts = ["short", "a" * 50, "b" * 80, "c" * 30]
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    tok = char_tokenizer()
    documents = ppl_vs_length.load_documents(data, 10**6, tok)
    assert [len(d) for d in documents] == [len(t) for t in texts]  # EOD dropped
    windows = ppl_vs_length.document_windows(documents, 40, 5, seed=1, start_id=0)
    assert sorted(tok.decode(w[1:2].tolist()) for w in windows) == ["a", "b"]
    assert all(w[0] == 0 and len(w) == 40 for w in windows)
    with pytest.raises(ValueError, match="no document holds the longest length 100"):
        ppl_vs_length.document_windows(documents, 100, 5, seed=1, start_id=0)
    uniform = make(UniformModel, tokenizer=tok, train_length=32)
    for kind in ("document", "stream"):
        row = ppl_vs_length.run_ppl_vs_length(uniform, str(data), [8, 40], samples=2,
                                              last_tokens=4, windows=kind, progress=False)
        assert row["ppl"] == [pytest.approx(256.0)] * 2 and row["windows"] == kind
    assert ppl_vs_length.DEFAULT_SAMPLES == 1000
    assert math.isfinite(row["ppl"][0])
