"""A natural-text haystack made offline: English prose from the Python standard library's
docstrings (the needle test's stand-in for gkamradt's Paul Graham essays).

Every machine running this project has the text, it needs no network and this project ships
none of it. Paragraphs are taken in a fixed order (the modules of `HAYSTACK_MODULES`, then their
public members by name), keeping only prose: at least 120 characters, ending with a full stop,
at least 90 % letters and spaces, no doctest. Python 3.11 gives about 630 paragraphs, 158k
characters (about 35k tokens with a 32k BPE); a longer haystack repeats the text, as gkamradt's
does when it runs out of essays. Different Python minor versions give slightly different text,
so results name the version (`haystack_source`).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
import warnings

HAYSTACK_MODULES = (
    "argparse", "asyncio", "collections", "contextlib", "csv", "dataclasses", "decimal",
    "difflib", "email", "fractions", "functools", "heapq", "inspect", "json", "logging",
    "pathlib", "pickle", "random", "re", "shutil", "statistics", "string", "subprocess",
    "tarfile", "textwrap", "threading", "typing", "unittest", "zipfile", "datetime", "enum",
    "abc", "codecs", "configparser", "io", "os", "socket", "sqlite3", "http.client",
    "urllib.request", "calendar", "bisect", "queue", "sched", "selectors", "smtplib", "ftplib",
    "imaplib", "locale", "gettext", "doctest", "timeit", "trace", "tokenize", "ast", "dis",
    "weakref", "copy", "pprint", "reprlib", "numbers", "hashlib", "hmac", "secrets", "struct",
    "mailbox", "mimetypes", "base64", "quopri", "html.parser", "wave", "colorsys", "shlex",
)
MIN_PARAGRAPH_CHARS = 120


def haystack_source() -> str:
    return f"python-stdlib docstrings, Python {sys.version_info.major}.{sys.version_info.minor}"


def _is_prose(paragraph: str) -> bool:
    if len(paragraph) < MIN_PARAGRAPH_CHARS or ">>>" in paragraph or not paragraph.endswith("."):
        return False
    return sum(c.isalpha() or c == " " for c in paragraph) / len(paragraph) >= 0.9


@functools.lru_cache(maxsize=1)
def haystack_paragraphs() -> tuple[str, ...]:
    """The prose paragraphs, in their fixed order, each once."""
    paragraphs: list[str] = []
    seen: set[str] = set()
    for name in HAYSTACK_MODULES:
        with warnings.catch_warnings():  # deprecated modules and aliases warn when touched
            warnings.simplefilter("ignore")
            try:
                module = importlib.import_module(name)
            except ImportError:  # a module this Python lacks
                continue
            docs = [inspect.getdoc(module)]
            for attribute in sorted(vars(module)):
                member = getattr(module, attribute)
                if not attribute.startswith("_") and getattr(member, "__module__", None) == name:
                    docs.append(inspect.getdoc(member))
        for doc in filter(None, docs):
            for block in doc.split("\n\n"):
                paragraph = " ".join(block.split())
                if _is_prose(paragraph) and paragraph not in seen:
                    seen.add(paragraph)
                    paragraphs.append(paragraph)
    return tuple(paragraphs)


def haystack_text(min_chars: int, offset: int = 0) -> str:
    """At least `min_chars` characters of paragraphs joined by blank lines, starting at paragraph
    `offset` (mod their number) and repeating the text when it runs out."""
    paragraphs = haystack_paragraphs()
    if not paragraphs:
        raise ValueError("needle: the haystack is empty (no prose docstrings in this Python)")
    pieces, size, index = [], 0, offset
    while size < min_chars:
        paragraph = paragraphs[index % len(paragraphs)]
        pieces.append(paragraph)
        size += len(paragraph) + 2
        index += 1
    return "\n\n".join(pieces)
