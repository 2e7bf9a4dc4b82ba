"""`hope-rope`: print which rotary pairs a position encoding keeps, to pick L and b before training.

How to run (after `pip install -e .`, or with `PYTHONPATH=.` from the repository root):

    hope-rope --kv-channels 64 --hope-train-length 512                 # the paper's 125M model
    hope-rope --kv-channels 128 --hope-train-length 8192 --json        # the paper's 3B model
    hope-rope --kv-channels 128 --rotary-base 500000 --hope-train-length 8192
    hope-rope --kv-channels 64 --position-embedding-type p-rope --rope-fraction 0.5
    python -m megatron_hope.rope.cli --kv-channels 64 --hope-train-length 512 \\
        --position-embedding-type ab1

One row per pair i (dimensions i and i + d/2): θ_i = b^(-2i/d), its wavelength 2π/θ_i in tokens,
its band for the training length L (paper 3.3.2: high θ ≥ 2π/L, activated π/L < θ < 2π/L,
low θ ≤ π/L; "-" without L) and the frequency the chosen type uses (0 = position independent).
The last line counts rotated and position-independent pairs. `--json` prints the same as one JSON
object (keys: settings, rotated_pairs, position_independent_pairs, rotated_dims, kv_channels,
inv_freq, pairs). Bad settings print the library's message on stderr and exit with 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from megatron_hope.rope.arguments import add_position_encoding_arguments
from megatron_hope.rope.config import PositionEncodingConfig
from megatron_hope.rope.frequencies import (
    classify_pairs,
    rope_inv_freq,
    rotated_pair_count,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hope-rope",
        description="Show the rotary pairs that RoPE / HoPE (arXiv 2410.21216) / p-RoPE / NoPE and "
        "the HoPE ablations rotate, for a head dimension d, base b and training length L.",
    )
    parser.add_argument("--kv-channels", type=int, required=True,
                        help="head dimension d (hidden_size / num_attention_heads)")
    # --hope-train-length is optional for rope/p-rope/none here: it then fills the band column.
    add_position_encoding_arguments(parser, group_title=None)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    return parser


def describe(config: PositionEncodingConfig) -> dict:
    """Everything the table and `--json` print, as plain Python values."""
    kv_channels = config.kv_channels
    train_length = config.hope_train_length
    if train_length is not None and train_length <= 0:
        # classify_pairs does not validate L; rope/p-rope/none never look at it otherwise.
        raise ValueError(f"--hope-train-length ({train_length}) must be a positive token count")
    inv_freq = config.inv_freq()
    # The float32 θ the model uses (bit-exact with megatron-core): kept pairs show θ == frequency.
    theta = [float(value) for value in rope_inv_freq(kv_channels, config.rotary_base).tolist()]
    bands = (classify_pairs(kv_channels, config.rotary_base, train_length)
             if train_length is not None else [None] * len(theta))
    used = [float(value) for value in inv_freq.tolist()]
    pairs = [
        {
            "pair": index,
            "theta": theta[index],
            "wavelength": 2.0 * math.pi / theta[index],
            "band": None if bands[index] is None else bands[index].value,
            "frequency": used[index],
        }
        for index in range(len(theta))
    ]
    rotated = rotated_pair_count(inv_freq)
    return {
        "settings": config.to_dict(),
        "kv_channels": kv_channels,
        "rotated_pairs": rotated,
        "position_independent_pairs": len(theta) - rotated,
        "rotated_dims": 2 * rotated,
        "inv_freq": used,
        "pairs": pairs,
    }


def format_table(summary: dict) -> str:
    settings = summary["settings"]
    header = (
        f"# {settings['position_embedding_type']}: kv_channels={settings['kv_channels']} "
        f"rotary_base={settings['rotary_base']:g} "
        f"hope_train_length={settings['hope_train_length']} "
        f"rope_fraction={settings['rope_fraction']}"
    )
    lines = [
        header,
        f"{'pair':>4}  {'theta':>12}  {'wavelength':>12}  {'band':>9}  {'frequency':>12}",
    ]
    for row in summary["pairs"]:
        lines.append(
            f"{row['pair']:>4}  {row['theta']:>12.6g}  {row['wavelength']:>12.6g}  "
            f"{row['band'] or '-':>9}  {row['frequency']:>12.6g}"
        )
    lines.append(
        f"rotated pairs: {summary['rotated_pairs']} of {len(summary['pairs'])}; "
        f"position-independent pairs: {summary['position_independent_pairs']}; "
        f"rotated dims: {summary['rotated_dims']} of {summary['kv_channels']}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed usage + error (exit 2) or --help (0)
        return int(exc.code or 0)
    try:
        config = PositionEncodingConfig(
            position_embedding_type=args.position_embedding_type,
            kv_channels=args.kv_channels,
            rotary_base=args.rotary_base,
            hope_train_length=args.hope_train_length,
            rope_fraction=args.rope_fraction,
            rotary_percent=args.rotary_percent,
        )
        summary = describe(config)
    except ValueError as exc:
        print(f"hope-rope: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2) if args.json else format_table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
