"""The position-encoding flags, declared once for every command that takes them.

`hope-pretrain`, `hope-rope`, `hope-convert --from-hf` and Megatron-LM's parser (through the
plug-in) all call `add_position_encoding_arguments`, so the names, defaults and help agree. The
type is not a `choices=` flag: an unknown one gets the library's message, which lists the valid
types and says which settings each needs.
"""

from __future__ import annotations

import argparse

from megatron_hope.rope.frequencies import POSITION_ENCODING_TYPES

ArgumentContainer = argparse.ArgumentParser | argparse._ArgumentGroup


def add_position_encoding_arguments(
    parser: ArgumentContainer,
    rotary_base: bool = True,
    type_flag: str = "--position-embedding-type",
    default_type: str | None = "hope",
    group_title: str | None = "position encoding",
    rotary_percent: bool = True,
) -> ArgumentContainer:
    """Add the HoPE flags to `parser` (in a group titled `group_title`, or straight into
    `parser` when it is itself a group or the title is None); returns where they went.

    For Megatron-LM's parser (`megatron_hope.integrations.megatron_lm`), `rotary_base=False`
    leaves `--rotary-base` to Megatron-LM and the type goes under `type_flag`
    (`--hope-position-embedding-type`), since Megatron-LM keeps its own
    `--position-embedding-type` with fixed choices. `default_type=None` means "keep what the
    model has" (`hope-convert --from-hf`). `rotary_percent=False` leaves `--rotary-percent` out
    (Megatron-LM declares its own; an import keeps the model's).
    """
    group = (parser.add_argument_group(group_title)
             if group_title and isinstance(parser, argparse.ArgumentParser) else parser)
    default = f"default {default_type}" if default_type else "default: keep the model's"
    group.add_argument(type_flag, default=default_type,
                       help=f"one of {', '.join(POSITION_ENCODING_TYPES)} ({default})")
    if rotary_base:
        group.add_argument("--rotary-base", type=float, default=10000.0,
                           help="RoPE base b (default 10000)")
    group.add_argument("--hope-train-length", type=int, default=None,
                       help="training length L of the HoPE paper's eq. 6: pairs with "
                       "θ_i >= 2π/L rotate (hope, ab1-ab3; hope-pretrain's default: "
                       "--seq-length)")
    group.add_argument("--rope-fraction", type=float, default=None,
                       help="p-rope: fraction p of the pairs, fastest first, that rotate")
    if rotary_percent:
        group.add_argument("--rotary-percent", type=float, default=1.0,
                           help="rope only, Megatron-LM's flag: rotate the head's first "
                           "int(p x kv-channels) dims with RoPE's frequencies re-spread over "
                           "them (NOT HoPE or p-RoPE; for Megatron-LM runs that used it)")
    return group
