"""The metric cores on cases with known answers (no model, no megatron state)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from megatron_hope.eval import attention, copy_task, fewshot, passkey, ppl_vs_length, report
from megatron_hope.rope.frequencies import position_encoding_inv_freq
from megatron_hope.rope.scaling import RopeScaling, parse_rope_scaling, scaled_inv_freq
from tests.eval.fakes import AnswersWith, ConstantModel, OracleCopier, char_tokenizer, make

POOL = torch.arange(1, 200)


# --------------------------------------------------------------------------------- copy task
def test_copy_samples_have_unique_prefixes_and_the_middle_query():
    [sample] = copy_task.make_samples(9, 1, POOL, seed=3, separator_id=250, start_id=0)
    ids = sample.prompt.tolist()
    assert ids[0] == 0
    assert len(ids) == copy_task.prompt_length(9, 250, 0)
    sequences = [ids[1 + 13 * i: 1 + 13 * (i + 1)] for i in range(9)]
    prefixes = [tuple(s[:8]) for s in sequences]
    assert len(set(prefixes)) == 9
    assert all(s[-1] == 250 for s in sequences)
    assert tuple(ids[-8:]) == prefixes[4]  # the middle sequence's prefix is the query
    assert sample.answer.tolist() == sequences[4][8:12]


def test_copy_oracle_scores_100_and_constant_model_0():
    samples = copy_task.make_samples(12, 10, POOL, seed=1, separator_id=250)
    assert copy_task.score_copy(make(OracleCopier), samples, batch_size=4) == 100.0
    assert copy_task.score_copy(make(ConstantModel, token=0), samples) == 0.0


def test_run_copy_table_row_and_lengths():
    row = copy_task.run_copy(make(OracleCopier), counts=[2, 5], samples=3, progress=False)
    assert row["scores"] == [100.0, 100.0] and row["avg"] == 100.0
    assert row["lengths"] == [copy_task.prompt_length(c, None, None) + 4 for c in (2, 5)]
    assert copy_task.counts_for_lengths([100, 200], separator_id=7, start_id=0) == [6, 14]
    assert copy_task.prompt_length(6, 7, 0) + 4 <= 100 < copy_task.prompt_length(7, 7, 0) + 4


def test_copy_is_deterministic_for_a_seed():
    first = copy_task.make_samples(6, 4, POOL, seed=11)
    again = copy_task.make_samples(6, 4, POOL, seed=11)
    other = copy_task.make_samples(6, 4, POOL, seed=12)
    assert all(torch.equal(a.prompt, b.prompt) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a.prompt, b.prompt) for a, b in zip(first, other, strict=True))


# ------------------------------------------------------------------------ few-shot following
def test_fa_counts_label_set_membership_not_correctness():
    assert fewshot.following_ability(["0", "0", "1"], [["0", "1"]] * 3) == 100.0
    assert fewshot.following_ability(["yes", "2", ""], [["0", "1"]] * 3) == 0.0
    assert fewshot.following_ability(["1", "maybe"], [["0", "1"]] * 2) == 50.0
    assert fewshot.answer_of(" not_entailment\nQuestion:") == "not_entailment"


def test_a_model_that_always_answers_1_follows_perfectly():
    task = fewshot.synthetic_task(200, seed=0)
    assert {e.label for e in task.examples} == {"0", "1"}
    accuracy = sum(e.label == "1" for e in task.examples) / len(task.examples)
    assert 0.2 < accuracy < 0.8  # so FA = 100 below cannot be correctness
    scorer = make(AnswersWith, answer="1", tokenizer=char_tokenizer(), train_length=1000)
    row = fewshot.run_fewshot(scorer, [task], lengths=[300, 600], samples=6, progress=False)
    assert row["scores"] == [100.0, 100.0]
    outside = make(AnswersWith, answer="7", tokenizer=char_tokenizer(), train_length=1000)
    assert fewshot.run_fewshot(outside, [task], lengths=[300], samples=4,
                               progress=False)["avg"] == 0.0


def test_fewshot_prompts_follow_figure_9_and_reach_the_length():
    task = fewshot.synthetic_task(50, seed=1)
    tok = char_tokenizer()
    prompts = fewshot.make_prompts(task, 900, 3, tok.encode, seed=5, start=[0])
    for prompt in prompts:
        text = tok.decode(prompt.ids[1:])
        assert text.count("Answer:") == fewshot.DEFAULT_SHOTS + 1 and text.endswith("Answer:")
        assert fewshot.PAD_SENTENCE in text
        assert 900 - len(fewshot.PAD_SENTENCE) < len(prompt.ids) <= 900
        assert prompt.label_set == ["0", "1"]
    assert prompts == fewshot.make_prompts(task, 900, 3, tok.encode, seed=5, start=[0])


def test_glue_files_load_and_unknown_formats_are_named(tmp_path):
    sst2 = tmp_path / "SST-2.tsv"
    sst2.write_text("sentence\tlabel\n" + "".join(f"film {i} was fine\t{i % 2}\n"
                                                 for i in range(8)))
    qnli = tmp_path / "QNLI.tsv"
    qnli.write_text("index\tquestion\tsentence\tlabel\n" + "".join(
        f"{i}\tWho?\tSomeone {i}.\t{'entailment' if i % 2 else 'not_entailment'}\n"
        for i in range(8)))
    rte = tmp_path / "RTE.jsonl"
    rte.write_text("".join(json.dumps({"sentence1": f"A {i}", "sentence2": "B",
                                       "label": "entailment"}) + "\n" for i in range(8)))
    assert fewshot.load_task_file(sst2).examples[0].prompt == "Review:film 0 was fine\nAnswer:"
    assert fewshot.load_task_file(qnli).label_set == ["0", "1"]  # Figure 9's form
    assert fewshot.load_task_file(qnli).name == "QNLI"
    assert fewshot.load_task_file(rte).examples[0].prompt.startswith("Premise:A 0\nHypothesis:B")
    odd = tmp_path / "task.csv"
    odd.write_text("a,b\n")
    with pytest.raises(ValueError, match=r"task\.csv: unknown format '\.csv'"):
        fewshot.load_task_file(odd)
    columns = tmp_path / "MNLI.tsv"
    columns.write_text("premise\thypothesis\tgold\nx\ty\tz\n")
    with pytest.raises(ValueError, match=r"MNLI\.tsv: unknown format \(fields"):
        fewshot.load_task_file(columns)
    with pytest.raises(ValueError, match="no such file"):
        fewshot.load_task_file(tmp_path / "missing.tsv")


# ---------------------------------------------------------------------------------- passkey
def test_needle_grid_covers_lengths_and_depths():
    from megatron_hope.eval import needle

    grid = needle.needle_grid([64, 128, 256], [0.0, 0.5, 1.0])
    assert {(c.length, c.depth) for c in grid} == {(n, d) for n in (64, 128, 256)
                                                   for d in (0.0, 0.5, 1.0)}
    assert len(grid) == 9
    with pytest.raises(ValueError, match=r"1\.5 is not a fraction"):
        needle.needle_grid([64], [1.5])


def test_passkey_prompts_place_the_key_at_the_depth():
    tok = char_tokenizer()
    for depth in (0.0, 0.5, 1.0):
        prompt, answer = passkey.make_prompt(passkey.NeedleCell(2000, depth), "12345",
                                             tok.encode, [0])
        text = tok.decode(prompt[1:])
        assert 2000 - len(passkey.FILLER) < len(prompt) + len(answer) <= 2000
        assert tok.decode(answer) == " 12345"
        where = text.index("The pass key is 12345") / len(text)
        assert abs(where - depth) < 0.1
    oracle = make(OracleCopier, tokenizer=tok, train_length=1000, last_only=True)
    # The oracle copies after "The pass key is": the needle's continuation is the key.
    row = passkey.run_passkey(oracle, [300, 600], [0.0, 1.0], samples=2, progress=False)
    assert row["scores"] == [[100.0, 100.0], [100.0, 100.0]]
    constant = make(ConstantModel, token=ord("7"), tokenizer=tok, train_length=1000)
    assert passkey.run_passkey(constant, [300], [0.5], samples=2, progress=False)["avg"] == 0.0
    assert passkey.names_key(" 48213. Remember", "48213")
    assert not passkey.names_key(" 4821\n3", "48213") and not passkey.names_key("none", "1")


# ---------------------------------------------------------------------- attention, eq. 4, 5
def _rotate(x, positions, theta):
    """megatron-core's non-interleaved RoPE on `[s, d]` rows (its own function)."""
    from megatron.core.models.common.embeddings.rope_utils import _apply_rotary_pos_emb_bshd

    freqs = positions[:, None].double() * theta.double()[None]
    freqs = torch.cat([freqs, freqs], dim=-1)[:, None, None, :]  # [s, 1, 1, d]
    return _apply_rotary_pos_emb_bshd(x[:, None, None, :], freqs)[:, 0, 0]


def test_eq4_components_sum_exactly_to_the_logits():
    gen = torch.Generator().manual_seed(0)
    d, length = 16, 40
    theta = position_encoding_inv_freq("rope", d, 10000.0).double()
    q = torch.randn(length, d, generator=gen, dtype=torch.float64)
    k = torch.randn(length, d, generator=gen, dtype=torch.float64)
    positions = torch.arange(length)
    q_rot, k_rot = _rotate(q, positions, theta), _rotate(k, positions, theta)
    m = length - 1
    parts = attention.pair_components(q_rot[m], k_rot, scale=0.25)  # [d/2, s]
    assert parts.shape == (d // 2, length)
    torch.testing.assert_close(parts.sum(0), 0.25 * k_rot @ q_rot[m], rtol=0, atol=1e-12)
    for n in (0, 7, m):
        literal = attention.eq4_components(q[m], k[n], theta, m, n)  # eq. 4 before rotation
        torch.testing.assert_close(parts[:, n], 0.25 * literal, rtol=0, atol=1e-12)


def test_vaf_known_values():
    y = torch.tensor([1.0, -2.0, 3.0, 0.5])
    assert attention.vaf(y, y) == 100.0
    assert attention.vaf(torch.zeros(4), y) == 0.0
    assert attention.vaf(0.5 * y, y) == pytest.approx(75.0)
    assert math.isnan(attention.vaf(y, torch.zeros(4)))


def test_random_token_inputs():
    tokens = attention.random_token_inputs(5, 12, POOL, start_id=0, seed=9)
    assert tokens.shape == (5, 12)
    assert (tokens[:, 0] == 0).all()
    assert (tokens[:, 1:] == tokens[:, 1:2]).all()
    assert torch.equal(tokens, attention.random_token_inputs(5, 12, POOL, 0, seed=9))


# ------------------------------------------------------------------------------- ppl, scaling
def test_nll_of_last_and_windows():
    logits = torch.log_softmax(torch.randn(2, 10, 7), dim=-1)
    tokens = torch.randint(7, (2, 10))
    expected = -sum(logits[:, t - 1].gather(1, tokens[:, t:t + 1]).squeeze(1)
                    for t in range(6, 10))
    torch.testing.assert_close(ppl_vs_length.nll_of_last(logits, tokens, 4), expected)
    ends = ppl_vs_length.window_ends(1000, 100, 5, seed=1)
    assert ends == ppl_vs_length.window_ends(1000, 100, 5, seed=1)
    assert len(set(ends)) == 5 and all(100 <= e <= 1000 and e % 100 == 0 for e in ends)
    with pytest.raises(ValueError, match="fewer than the longest length 200"):
        ppl_vs_length.window_ends(150, 200, 2, seed=1)


def test_rope_scaling():
    theta = position_encoding_inv_freq("hope", 64, 10000.0, 512)
    linear, factor = scaled_inv_freq(theta, RopeScaling("linear", 4), 512)
    torch.testing.assert_close(linear, theta / 4)
    assert factor == 1.0
    yarn, factor = scaled_inv_freq(theta, parse_rope_scaling("yarn:4"), 512, 64, 10000.0)
    assert factor == pytest.approx(0.1 * math.log(4) + 1)
    assert (yarn[theta == 0] == 0).all()  # position-independent pairs stay independent
    # d = 64, b = 1e4, L = 512: HF's ramp runs from pair floor(3.25) = 3 to ceil(15.29) = 16.
    assert torch.equal(yarn[:4], theta[:4])  # fast pairs untouched
    rope = position_encoding_inv_freq("rope", 64, 10000.0)
    yarn_rope, _ = scaled_inv_freq(rope, RopeScaling("yarn", 4), 512, 64, 10000.0)
    torch.testing.assert_close(yarn_rope[16:], rope[16:] / 4)
    assert ((yarn_rope[4:16] < rope[4:16]) & (yarn_rope[4:16] > rope[4:16] / 4)).all()
    torch.testing.assert_close(yarn[theta != 0], yarn_rope[theta != 0])
    with pytest.raises(ValueError, match="head dim and rotary base"):
        scaled_inv_freq(rope, RopeScaling("yarn", 4), 512)
    for bad in ("ntk:2", "linear", "yarn:x", "linear:0.5"):
        with pytest.raises(ValueError, match="--rope-scaling"):
            parse_rope_scaling(bad)


def test_length_limit_names_the_length_and_the_fix():
    scorer = make(ConstantModel, train_length=64)
    scorer.check_length(512)
    with pytest.raises(ValueError, match=r"input length 513 is beyond .* limit is 512 = 8 x "
                                         r"training length 64.*--rope-scaling"):
        scorer.check_length(513)
    scorer.scaling = RopeScaling("yarn", 2)
    scorer.check_length(1024)


# -------------------------------------------------------------------------------------- report
def test_report_lays_out_tables_1_2_3(tmp_path):
    def model(label, kind, scaling=None):
        return {"label": label, "position_encoding": kind, "rope_scaling": scaling}

    for label, kind, scaling, score in [("rope", "rope", None, 10.0), ("hope", "hope", None, 60.0),
                                        ("ab1", "ab1", None, 30.0),
                                        ("hope+YaRN", "hope", "yarn:2", 70.0)]:
        out = tmp_path / label
        report.write_copy(out, model(label, kind, scaling),
                          {"counts": [3, 6], "lengths": [40, 80], "scores": [score, score / 2],
                           "avg": score * 0.75, "train_length": 64})
        cell = {"scores": [score, score], "scores_exact": [score / 2] * 2, "avg": score,
                "input_tokens_mean": [30.0, 70.0], "input_tokens_max": [31, 71],
                "over_length": [1, 0]}
        report.write_fewshot(out, model(label, kind, scaling),
                             {"lengths": [32, 64], "scores": [score, score], "avg": score,
                              "scores_exact": [score / 2] * 2,
                              "tasks": {name: cell for name in ("SST-2", "QNLI", "RTE",
                                                                "synthetic")},
                              "train_length": 64})
    path = report.build_report([tmp_path], tmp_path / "report")
    text = path.read_text()
    assert "## Table 1" in text and "## Table 2" in text and "## Table 3" in text
    table3 = text.split("## Table 3")[1]
    assert table3.index("| rope |") < table3.index("| ab1 |") < table3.index("| hope |")
    assert "hope+YaRN" not in table3
    assert "| hope+YaRN F=2 | 70.00 | 35.00 | 52.50 |" in text  # F in the label
    table2 = text.split("## Table 2")[1].split("## ")[0]
    assert "averaged over SST-2, QNLI, RTE" in table2
    assert "| hope | 60.00 | 60.00 | 60.00 |" in table2
    assert "| hope | 30.00 | 30.00 | 30.00 |" in table2  # exact match, the second table
    assert "| Method | SST-2 32 | SST-2 64 | SST-2 Avg. | QNLI 32 |" in text  # Table 7
    assert "## Few-shot following on the synthetic task (not a paper table)" in text
    assert "| hope | SST-2 | 30 / 31 (1 over) | 70 / 71 |" in text
    assert (tmp_path / "report" / "copy.png").stat().st_size > 0
    with pytest.raises(ValueError, match="no hope-eval result"):
        report.build_report([tmp_path / "report"], tmp_path / "empty")


def test_learned_positions_are_a_hard_limit():
    scorer = make(ConstantModel, train_length=1024, hard_max_length=100)
    with pytest.raises(ValueError, match="beyond the 100 positions this model has"):
        scorer.check_length(101)
