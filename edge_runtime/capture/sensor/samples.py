"""Sensor lines -> samples: one sample per line, CSV or JSON.

CSV: the values in channel order; one extra leading column is the sample's own timestamp (Unix
seconds). A header line naming the channels (optionally after ``ts``/``time``/``timestamp``) is
skipped. JSON: an object keyed by channel name with an optional ``ts``, or an array in channel
order (an extra leading element is the timestamp). Blank lines are ignored; anything else that is
not a full, finite sample is malformed: the caller skips and counts it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from edge_runtime.errors import MalformedLineError

TIMESTAMP_NAMES = ("ts", "time", "timestamp")


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading of every channel; ``ts`` is the sample's own time when the line carries one."""

    values: tuple[float, ...]
    ts: float | None = None


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise MalformedLineError(f"not a number: {value!r}")
    try:
        number = float(value)
    except ValueError as exc:
        raise MalformedLineError(f"not a number: {value!r}") from exc
    if not math.isfinite(number):
        raise MalformedLineError(f"not a finite number: {value!r}")
    return number


class LineParser:
    """Parses lines of one format for one channel list."""

    def __init__(self, fmt: Literal["csv", "json"], channels: Sequence[str]) -> None:
        self.format, self.channels = fmt, tuple(channels)
        self._headers = {self.channels, *((t, *self.channels) for t in TIMESTAMP_NAMES)}

    def parse(self, line: bytes) -> Sample | None:
        """The sample on ``line``; None for a line to ignore (blank, CSV header); else MalformedLineError."""
        try:
            text = line.decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise MalformedLineError("not UTF-8") from exc
        if not text:
            return None
        return self._csv(text) if self.format == "csv" else self._json(text)

    def _csv(self, text: str) -> Sample | None:
        fields = [f.strip() for f in text.split(",")]
        if tuple(fields) in self._headers:
            return None
        return self._sequence(fields)

    def _json(self, text: str) -> Sample:
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise MalformedLineError("invalid JSON") from exc
        if isinstance(obj, list):
            return self._sequence(obj)
        if not isinstance(obj, dict):
            raise MalformedLineError("expected a JSON object or array")
        missing = [c for c in self.channels if c not in obj]
        if missing:
            raise MalformedLineError(f"missing channel(s) {', '.join(missing)}")
        ts = next((obj[k] for k in TIMESTAMP_NAMES if k in obj), None)
        values = tuple(_number(obj[c]) for c in self.channels)
        return Sample(values, None if ts is None else _number(ts))

    def _sequence(self, items: Sequence[Any]) -> Sample:
        n = len(self.channels)
        if len(items) == n:
            return Sample(tuple(_number(v) for v in items))
        if len(items) == n + 1:
            return Sample(tuple(_number(v) for v in items[1:]), _number(items[0]))
        raise MalformedLineError(f"{len(items)} values, expected {n} (or {n + 1} with a timestamp)")


class LineSplitter:
    """Bytes as they arrive -> complete lines.

    A line longer than ``max_line`` (a stream without newlines, a wrong baud rate) is dropped up to
    its newline and reported once, as None, so the caller counts it as malformed.
    """

    def __init__(self, max_line: int = 64 * 1024) -> None:
        self.max_line = max_line
        self._partial = b""
        self._skipping = False  # inside an overlong line: discard up to the next newline

    def feed(self, data: bytes) -> list[bytes | None]:
        """The complete lines in ``data`` (plus what was pending); keeps the incomplete tail."""
        *complete, self._partial = (self._partial + data).split(b"\n")
        lines: list[bytes | None] = list(complete)
        if self._skipping and lines:
            lines.pop(0)  # the rest of the overlong line
            self._skipping = False
        if len(self._partial) > self.max_line:
            self._partial = b""
            if not self._skipping:
                lines.append(None)
            self._skipping = True
        return lines

    def flush(self) -> list[bytes | None]:
        """The pending incomplete line, as a last line (the writer ended without a newline)."""
        rest, self._partial = self._partial, b""
        skipping, self._skipping = self._skipping, False
        return [rest] if rest.strip() and not skipping else []
