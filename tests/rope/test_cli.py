"""`hope-rope` in process: table, count line, `--json`, and exit code 2 on bad input.

    PYTHONPATH=. python -m pytest tests/rope/test_cli.py -q
"""

from __future__ import annotations

import json

import pytest

from megatron_hope.rope.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def table_rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines() if line.split() and line.split()[0].isdigit()]


def test_table_125m(capsys):
    code, out, err = run(capsys, "--kv-channels", "64", "--hope-train-length", "512")
    assert code == 0 and err == ""
    rows = table_rows(out)
    assert [int(row[0]) for row in rows] == list(range(32))
    assert [row[3] for row in rows] == ["high"] * 16 + ["activated"] * 2 + ["low"] * 14
    assert all(float(row[4]) > 0 for row in rows[:16])
    assert all(float(row[4]) == 0 for row in rows[16:])
    assert float(rows[0][2]) == pytest.approx(6.28319)  # wavelength 2π/θ_0
    last = out.strip().splitlines()[-1]
    assert last == ("rotated pairs: 16 of 32; position-independent pairs: 16; "
                    "rotated dims: 32 of 64")


def test_table_3b_rope_twin(capsys):
    code, out, _ = run(capsys, "--kv-channels", "128", "--hope-train-length", "8192",
                       "--position-embedding-type", "rope")
    assert code == 0
    assert len(table_rows(out)) == 64
    assert "rotated pairs: 64 of 64; position-independent pairs: 0" in out


def test_rope_without_train_length_has_no_band(capsys):
    code, out, _ = run(capsys, "--kv-channels", "32", "--position-embedding-type", "rope")
    assert code == 0
    assert {row[3] for row in table_rows(out)} == {"-"}


def test_json_125m(capsys):
    code, out, _ = run(capsys, "--kv-channels", "64", "--hope-train-length", "512", "--json")
    assert code == 0
    summary = json.loads(out)
    assert summary["rotated_pairs"] == 16
    assert summary["position_independent_pairs"] == 16
    assert len(summary["inv_freq"]) == 32
    assert summary["inv_freq"].count(0.0) == 16
    assert summary["inv_freq"][:16] == [row["theta"] for row in summary["pairs"][:16]]
    assert summary["settings"] == {"position_embedding_type": "hope", "kv_channels": 64,
                                   "rotary_base": 10000.0, "hope_train_length": 512,
                                   "rope_fraction": None}
    assert len(summary["pairs"]) == 32
    assert set(summary["pairs"][0]) == {"pair", "theta", "wavelength", "band", "frequency"}
    assert summary["pairs"][16]["band"] == "activated"


@pytest.mark.parametrize("argv, rotated", [
    (["--kv-channels", "128", "--hope-train-length", "8192"], 50),
    (["--kv-channels", "128", "--rotary-base", "500000", "--hope-train-length", "8192"], 35),
    (["--kv-channels", "64", "--position-embedding-type", "p-rope", "--rope-fraction", "0.25"], 8),
    (["--kv-channels", "64", "--position-embedding-type", "none"], 0),
    (["--kv-channels", "64", "--hope-train-length", "512", "--position-embedding-type", "ab1"], 30),
    (["--kv-channels", "64", "--hope-train-length", "512", "--position-embedding-type", "ab2"], 18),
    (["--kv-channels", "64", "--hope-train-length", "512", "--position-embedding-type", "ab3"], 32),
])
def test_json_rotated_pairs(capsys, argv, rotated):
    code, out, _ = run(capsys, *argv, "--json")
    assert code == 0
    assert json.loads(out)["rotated_pairs"] == rotated


@pytest.mark.parametrize("argv, flag", [
    (["--kv-channels", "64", "--hope-train-length", "4"], "--hope-train-length"),
    (["--kv-channels", "64"], "--hope-train-length"),
    (["--kv-channels", "64", "--position-embedding-type", "ab2"], "--hope-train-length"),
    (["--kv-channels", "64", "--position-embedding-type", "rope", "--hope-train-length", "0"],
     "--hope-train-length"),
    (["--kv-channels", "63", "--hope-train-length", "512"], "--kv-channels"),
    (["--kv-channels", "64", "--position-embedding-type", "p-rope"], "--rope-fraction"),
    (["--kv-channels", "64", "--position-embedding-type", "p-rope", "--rope-fraction", "0"],
     "--rope-fraction"),
    (["--kv-channels", "64", "--position-embedding-type", "p-rope", "--rope-fraction", "1.5"],
     "--rope-fraction"),
    (["--kv-channels", "64", "--hope-train-length", "512", "--rope-fraction", "0.5"],
     "--rope-fraction"),
    # argparse's own errors (exit 2 too):
    (["--kv-channels", "64", "--position-embedding-type", "xpos"], "--position-embedding-type"),
    (["--hope-train-length", "512"], "--kv-channels"),
    (["--kv-channels", "sixty-four"], "--kv-channels"),
])
def test_bad_input_exits_2_naming_the_flag(capsys, argv, flag):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert flag in err


def test_help_exits_0(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "--hope-train-length" in out


def test_every_command_declares_the_position_flags_the_same_way():
    """hope-pretrain, hope-rope and hope-convert share one declaration (rope/arguments.py)."""
    from megatron_hope.convert.cli import build_parser as convert_parser
    from megatron_hope.rope.cli import build_parser as rope_parser
    from megatron_hope.training.arguments import build_parser as pretrain_parser

    def declared(parser):
        return {action.option_strings[0]: action.help for action in parser._actions
                if action.option_strings and action.option_strings[0] in (
                    "--hope-train-length", "--rope-fraction", "--rotary-base")}

    pretrain, rope, convert = declared(pretrain_parser()), declared(rope_parser()), declared(
        convert_parser())
    assert pretrain == rope
    assert convert == {k: v for k, v in pretrain.items() if k != "--rotary-base"}
