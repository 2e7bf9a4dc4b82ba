"""`--no-rope-freq`: the layers that skip rotary embedding (NoPE layers, as in Llama 4).

Megatron-LM's flag takes either an integer N (every N-th layer skips rotary: N=4 on 8 layers is
[0,0,0,1,0,0,0,1]) or a list expression such as "([0]*3+[1])*2", where 1 marks a NoPE layer.
Megatron-LM evaluates that expression with `eval` after a character check; here it is evaluated
from its syntax tree, which admits only list literals of 0/1, `+` and `*` by an integer, so a
flag value can never run code. megatron-core's attention then passes no rotary embedding to the
marked layers, whatever the rotary type (RoPE, HoPE, p-RoPE, AB1-3).
"""

from __future__ import annotations

import ast
from collections.abc import Sequence

FLAG = "--no-rope-freq"
MAX_LAYERS = 100_000
"""A bound on the expanded pattern, so that a typo such as [0]*10000000000 fails at once."""


def parse_no_rope_freq(value: str | int | None, num_layers: int) -> tuple[int, ...] | None:
    """The per-layer pattern (1 = no rotary) for `num_layers` layers, or None for "rotary on
    every layer". Raises ValueError naming the flag."""
    if value is None:
        return None
    if isinstance(value, int) or str(value).strip().isdigit():
        every = int(value)
        if every < 1 or num_layers % every:
            raise ValueError(
                f"{FLAG} {every}: every N-th layer skips rotary, so N must be a positive divisor "
                f"of --num-layers ({num_layers})")
        pattern = ([0] * (every - 1) + [1]) * (num_layers // every)
    else:
        pattern = _evaluate_pattern(str(value))
    return check_no_rope_pattern(pattern, num_layers, shown=value)


def check_no_rope_pattern(pattern: Sequence[int], num_layers: int,
                          shown: object = None) -> tuple[int, ...]:
    """An already expanded pattern (a checkpoint's, or Megatron-LM's parsed flag) as a tuple,
    checked: one 0/1 entry per layer. `shown` is how the flag was written, for messages."""
    shown = list(pattern) if shown is None else shown
    if any(type(item) is not int or item not in (0, 1) for item in pattern):
        raise ValueError(f"{FLAG} {shown!r}: list items must be 0 (rotary) or 1 (no rotary)")
    if len(pattern) != num_layers:
        raise ValueError(
            f"{FLAG} {shown!r} gives {len(pattern)} layers, --num-layers is {num_layers}")
    return tuple(pattern)


def _evaluate_pattern(text: str) -> list[int]:
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as error:
        raise ValueError(f"{FLAG} {text!r} is not a list expression such as "
                         "\"([0]*3+[1])*2\"") from error
    result = _evaluate(tree.body, text)
    if not isinstance(result, list):
        raise ValueError(f"{FLAG} {text!r} is not a list of 0/1 per layer")
    return result


def _evaluate(node: ast.AST, text: str):
    if isinstance(node, ast.List):
        items = [_evaluate(item, text) for item in node.elts]
        if any(item not in (0, 1) or isinstance(item, (bool, list)) for item in items):
            raise ValueError(f"{FLAG} {text!r}: list items must be 0 (rotary) or 1 (no rotary)")
        return items
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
        left, right = _evaluate(node.left, text), _evaluate(node.right, text)
        if isinstance(node.op, ast.Add) and isinstance(left, list) and isinstance(right, list):
            return left + right
        if isinstance(node.op, ast.Mult) and {type(left), type(right)} == {list, int}:
            count, items = (left, right) if isinstance(left, int) else (right, left)
            if not 0 <= count * max(1, len(items)) <= MAX_LAYERS:
                raise ValueError(f"{FLAG} {text!r}: a repeat count is negative or gives more "
                                 f"than {MAX_LAYERS} layers")
            return items * count
    raise ValueError(f"{FLAG} {text!r}: only lists of 0/1, '+' and '*' by an integer are allowed")
