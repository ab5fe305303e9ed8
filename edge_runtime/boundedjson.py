"""Bounded parsing of what arrives from the broker: anyone who may publish there may send anything.

A leaf module: model updates (update/) and remote control (control/) parse their messages with it.

``json.loads`` recurses once per nesting level: ``[`` x 30,000 (well under any size limit) raises
RecursionError, and a deeper input could exhaust the C stack of another parser. So the size and
the nesting depth are checked first, each in a bounded number of linear passes that run in C:
strings are cut out (an unterminated one runs to the end, so no pattern ever backtracks), every
byte but brackets is deleted, and each pass removes the innermost ``[]``/``{}`` pairs. Whatever
is left after ``max_depth`` passes is nested too deeply (or unbalanced, which JSON refuses anyway).
"""

from __future__ import annotations

import json
import re
from typing import Any

from edge_runtime.errors import InputError, UpdateError

_STRING = re.compile(rb'"(?:[^"\\]+|\\.?)*"?', re.S)  # never fails once it has its opening quote
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_INNERMOST = re.compile(rb"\[\]|\{\}")


def nesting_ok(data: bytes, max_depth: int) -> bool:
    """True when JSON text ``data`` nests arrays and objects at most ``max_depth`` deep."""
    return not _leftover(data, max_depth)


def _leftover(data: bytes, max_depth: int) -> bytes:
    """The brackets left once ``max_depth`` levels of pairs are removed (empty: shallow enough)."""
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    for _ in range(max_depth):
        if not brackets:
            break
        brackets = _INNERMOST.sub(b"", brackets)
    return brackets


def parse_json(
    payload: bytes, *, max_bytes: int, max_depth: int, what: str, error: type[InputError] = UpdateError
) -> Any:
    """``payload`` parsed as JSON, or ``error`` saying why not (too big, too deep, not JSON)."""
    if len(payload) > max_bytes:
        raise error(f"{what} is {len(payload)} bytes (limit {max_bytes})")
    left = _leftover(payload, max_depth)
    if left:
        balanced = left.count(b"[") == left.count(b"]") and left.count(b"{") == left.count(b"}")
        raise error(
            f"{what} nests deeper than {max_depth} levels" if balanced else f"{what} is not JSON (unbalanced)"
        )
    try:
        return json.loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise error(f"{what} is not JSON: {exc}") from exc
