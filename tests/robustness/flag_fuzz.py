"""Command lines drawn from a CLI's own argparse actions, and what counts as a clean outcome.

Flags come from the parser itself (`parser._actions`, subcommands included), so a flag added
tomorrow is fuzzed tomorrow without touching the tests. Each value is drawn from a mix of what
a user gets wrong: valid values, out-of-range and huge numbers, wrong types, empty strings, and
paths that do not exist. A command line must end in one of two ways:

- a run: the CLI reaches the first step of real work, which the test replaces by a stub raising
  `ReachedWork` (no training, no export, no evaluation);
- exit status 2 (argparse's usage error) with a message that names one of the CLI's flags.

Anything else, a traceback above all, fails the test with the command line that caused it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FUZZ_SETTINGS = dict(
    deadline=None,  # the first example pays for imports; timing is not what is tested
    derandomize=True,  # CI sees the same command lines every run
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                           HealthCheck.data_too_large],
    database=None,  # derandomized: nothing to replay, and no .hypothesis/ in the checkout
)


def fuzz_settings(max_examples: int) -> settings:
    return settings(max_examples=max_examples, **FUZZ_SETTINGS)


class ReachedWork(Exception):
    """Raised by the stub standing in for a CLI's first step of real work."""


def reach_work(*_args, **_kwargs):
    raise ReachedWork


# Values any flag may get, whatever its type: the mistakes users make.
WRONG_VALUES = ("", " ", "abc", "-1", "0", "1.5", "nan", "inf", "-inf", "1e309", "x:y", "none",
                "ü", "1,2,,x", "9" * 30)
INT_VALUES = st.one_of(st.integers(-2, 8), st.sampled_from([2**31, 2**63, -(2**63), 10**30]))
FLOAT_VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 0.5, 1.0, 1e-8, 1e300, -1.0]),
)
# Free text, but never a path separator: every relative path the CLIs create lands in the
# test's temporary working directory.
FREE_TEXT = st.text(st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)),
                    max_size=12)


@dataclass(frozen=True)
class Paths:
    """Paths a string flag may get: real ones, so that valid runs happen, and bad ones."""

    valid: Mapping[str, str]
    """Real inputs by what they are (`tokenizer`, `data_prefix`, `jsonl`, ...)."""
    missing: str
    """Under the temporary directory, does not exist."""
    directory: str
    """An existing, empty directory (where a file is expected)."""
    file: str
    """An existing file with junk content (where a directory or another format is expected)."""

    def values(self) -> list[str]:
        return [*self.valid.values(), self.missing, self.directory, self.file]


def value_strategy(action: argparse.Action, paths: Paths,
                   examples: Mapping[str, Sequence[str]]) -> st.SearchStrategy[str]:
    """One value for `action`: valid ones (choices, `examples[dest]`, real paths) mixed with
    wrong types, out-of-range numbers, empty strings and missing paths."""
    valid = list(examples.get(action.dest, ()))
    if action.choices:
        valid += [str(choice) for choice in action.choices]
    if action.type is int:
        typed = INT_VALUES.map(str)
    elif action.type is float:
        typed = FLOAT_VALUES.map(repr)
    else:
        typed = st.sampled_from(paths.values())
    options = [st.sampled_from(valid)] if valid else []
    return st.one_of(*options, typed, st.sampled_from(WRONG_VALUES), FREE_TEXT)


def _takes_values(action: argparse.Action) -> bool:
    return action.nargs != 0 and not isinstance(
        action, (argparse._StoreConstAction, argparse._CountAction, argparse.BooleanOptionalAction)
    )


@st.composite
def _action_tokens(draw, action: argparse.Action, paths: Paths, examples, positional=False):
    flag = [] if positional else [draw(st.sampled_from(action.option_strings))]
    if not _takes_values(action):
        return flag
    value = value_strategy(action, paths, examples)
    if action.nargs in ("+", "*"):
        # Sometimes none at all, which `+` refuses (a usage error naming the flag).
        return flag + draw(st.lists(value, min_size=0 if not positional else 1, max_size=3))
    if isinstance(action.nargs, int):
        return flag + draw(st.lists(value, min_size=action.nargs, max_size=action.nargs))
    return [*flag, draw(value)]


def _optionals(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [action for action in parser._actions
            if action.option_strings and not isinstance(action, argparse._HelpAction)]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


@st.composite
def command_lines(draw, parser: argparse.ArgumentParser, paths: Paths,
                  examples: Mapping[str, Sequence[str]] | None = None,
                  base: Mapping[str | None, Sequence[str]] | None = None) -> list[str]:
    """argv for `parser`: a subcommand if it has them, then usually `base[subcommand]` (a valid
    command line, so that the drawn flags reach the checks behind the first error), its
    positionals, its required flags (each left out now and then) and any of its other flags, in
    any order. A flag drawn after `base` overrides it, as on a real command line."""
    examples = examples or {}
    commands = _subparsers(parser)
    argv: list[str] = []
    command = None
    if commands:
        command = draw(st.sampled_from(sorted(commands)))
        argv, parser = [command], commands[command]
    if base and command in base and draw(st.integers(0, 3)):  # a valid start 3 times in 4
        argv += list(base[command])
    optionals = _optionals(parser)
    required = [action for action in optionals if action.required]
    chosen = [action for action in required if draw(st.integers(0, 9))]  # rarely left out
    others = [action for action in optionals if not action.required]
    chosen += draw(st.lists(st.sampled_from(others), unique=True, max_size=6)) if others else []
    chosen = draw(st.permutations(chosen))
    argv += [token for action in chosen for token in draw(_action_tokens(action, paths, examples))]
    for action in parser._actions:
        if not action.option_strings and not isinstance(action, argparse._SubParsersAction):
            argv += draw(_action_tokens(action, paths, examples, positional=True))
    return argv


def positional_values(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The values `argv` gives to positional arguments (what a message names instead of a
    flag: `hope-eval report RUN_DIR...`)."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            namespace, _ = parser.parse_known_args(argv)
    except SystemExit:
        return set()
    values: set[str] = set()
    for sub in [parser, *_subparsers(parser).values()]:
        for action in sub._actions:
            if action.option_strings or isinstance(action, argparse._SubParsersAction):
                continue
            value = getattr(namespace, action.dest, None)
            values.update(value if isinstance(value, list) else [value] if value else [])
    return values


def flag_names(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string of `parser` and its subcommands."""
    names: set[str] = set()
    for action in parser._actions:
        names.update(action.option_strings)
    for sub in _subparsers(parser).values():
        names |= flag_names(sub)
    return names


@dataclass(frozen=True)
class Outcome:
    status: int | None
    """Exit status; None when the CLI reached real work (the flags were accepted)."""
    stderr: str


def run_cli(main: Callable[[list[str]], int], argv: list[str]) -> Outcome:
    """`main(argv)` in process, its exit status whether returned or raised (argparse)."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = main(argv)
        except SystemExit as exit_:
            status = exit_.code
        except ReachedWork:
            status = None
    return Outcome(status, stderr.getvalue())


_FLAG = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")


def assert_clean(outcome: Outcome, parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """A run, or exit status 2 and a message naming one of the CLI's flags."""
    if outcome.status in (None, 0):
        return
    assert outcome.status == 2, (
        f"exit status {outcome.status!r} (expected 2 for a usage error) for {argv}:\n"
        f"{outcome.stderr}")
    names = flag_names(parser)
    named = {match for match in _FLAG.findall(outcome.stderr) if match in names}
    named |= {value for value in positional_values(parser, argv)
              if (value.strip() and value in outcome.stderr) or repr(value) in outcome.stderr}
    assert named, f"exit status 2 without naming a flag for {argv}:\n{outcome.stderr}"


def fuzz_cli(main: Callable[[list[str]], int], parser: argparse.ArgumentParser, paths: Paths,
             examples: Mapping[str, Sequence[str]], base: Mapping[str | None, Sequence[str]],
             stubs: Mapping[str, Callable], max_examples: int) -> None:
    """Run `main` on `max_examples` drawn command lines with `stubs` (`{"module.attribute":
    replacement}`, the first step of real work raising `ReachedWork`) in place; fails with the
    first command line whose outcome is not clean (hypothesis shrinks it first)."""

    @fuzz_settings(max_examples)
    @given(command_lines(parser, paths, examples, base))
    def check(argv):
        with contextlib.ExitStack() as stack:
            for target, replacement in stubs.items():
                stack.enter_context(mock.patch(target, replacement))
            assert_clean(run_cli(main, argv), parser, argv)

    check()
