"""JSON from untrusted sources (request bodies, ZStack answers, signed tickets), bounded.

``json.loads`` recurses once per nesting level: a 30,000-deep ``[[[...`` raises RecursionError,
which no caller expects. :func:`loads` refuses nesting deeper than ``max_depth`` before parsing,
with a ValueError like every other malformed input, so callers need catch nothing new.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 32

# A JSON string, escapes included (the unrolled form runs in linear time).
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_INNERMOST = re.compile(r"\[\]|\{\}")
_OPENERS = re.compile(r"[\[{]+")


class TooDeep(ValueError):
    """The document nests arrays and objects deeper than allowed."""


def nesting_depth_exceeds(text: str, max_depth: int) -> bool:
    """Whether the brackets in ``text`` (outside strings) nest deeper than ``max_depth``."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    # Unclosed openers count too: the parser recurses into them before it finds the end.
    if any(len(run) > max_depth for run in _OPENERS.findall(brackets)):
        return True
    # Each pass removes the innermost pairs, one level; a document of depth d is gone after d.
    for _ in range(max_depth):
        brackets, removed = _INNERMOST.subn("", brackets)
        if not removed or not brackets:
            return False
    return _INNERMOST.search(brackets) is not None


def loads(data: str | bytes, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` that raises ValueError (never RecursionError) on any hostile input."""
    text = data.decode("utf-8") if isinstance(data, bytes | bytearray) else data
    if nesting_depth_exceeds(text, max_depth):
        raise TooDeep(f"JSON nested deeper than {max_depth} levels")
    try:
        return json.loads(text)
    except RecursionError:  # unreachable after the check above; kept as a last guard
        raise TooDeep(f"JSON nested deeper than {max_depth} levels") from None
