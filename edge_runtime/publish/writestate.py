"""Can the outbox store new messages now? A full disk or a failing one is a state, not an error
per message: it is entered and left once each, with one log line each.

Two reasons to refuse new messages:

* **low**: the free space of the file system, with the database's own free pages (which SQLite
  reuses before the file grows), is below ``reserve_bytes``. The reserve is left for what must
  still write: deletions of delivered rows, the counters, retained states. It ends at 1.5 times
  the reserve, so a disk at the edge does not flap.
* **failed**: a write failed (``database or disk is full``, an I/O error). Writes are tried again
  every ``retry_s``; the first that works ends the state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from edge_runtime.throttle import Throttle

logger = logging.getLogger(__name__)

LEAVE_LOW = 1.5  # the low state ends at this multiple of the reserve
# One line per change; a disk that flaps (an I/O error now and then) still cannot fill the log.
_LINES = Throttle(per_s=60.0, burst=10)


class WriteState:
    """The outbox's write state (its lock held by every caller)."""

    def __init__(
        self,
        path: Path,
        free: Callable[[], int | None],
        *,
        reserve_bytes: int,
        retry_s: float,
        check_s: float,
    ) -> None:
        """``free``: bytes the outbox may still use (None when it cannot tell)."""
        self.path, self.free = path, free
        self.reserve_bytes, self.retry_s, self.check_s = reserve_bytes, retry_s, check_s
        self.failure: str | None = None
        self.low: str | None = None
        self._retry_at = self._next_check = 0.0
        self._lost = 0  # messages dropped since the state began (for the line that ends it)

    @property
    def error(self) -> str | None:
        """Why new messages are refused, else None."""
        return self.failure or self.low

    def refusal(self, *, data: bool) -> str | None:
        """Why messages cannot be stored now (``data``: any not retained), or None: try."""
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + self.check_s
            self._check_room()
        elif self.failure is None and self.low is None:  # the common case, first
            return None
        if self.failure is not None and now < self._retry_at:
            return self.failure
        if self.low is not None and data:  # the reserve is for retained states and bookkeeping
            return self.low
        return None

    def may_write(self) -> bool:
        """False while a failed write waits for its retry."""
        return self.failure is None or time.monotonic() >= self._retry_at

    def dropped(self, count: int) -> None:
        """Messages were refused and counted as dropped."""
        self._lost += count

    def failed(self, exc: Exception) -> None:
        """A write failed: refuse new messages until a retry after ``retry_s`` works."""
        self._retry_at = time.monotonic() + self.retry_s
        was = self.error
        self.failure = self.failure or f"cannot write: {exc}"
        self._changed(was)

    def worked(self) -> None:
        """A write worked."""
        if self.failure is not None:
            was, self.failure = self.error, None
            self._changed(was)

    def _check_room(self) -> None:
        if self.reserve_bytes <= 0:
            return
        free = self.free()
        if free is None:
            return
        was = self.error
        if self.low is None and free < self.reserve_bytes:
            self.low = (
                f"disk nearly full: {free} bytes free in {self.path.parent}, "
                f"less than the reserve of {self.reserve_bytes}"
            )
        elif self.low is not None and free >= self.reserve_bytes * LEAVE_LOW:
            self.low = None
        self._changed(was)

    def _changed(self, was: str | None) -> None:
        """One line when the outbox stops storing new messages, one when it stores them again."""
        key = f"outbox:{self.path}"
        if was is None and self.error is not None:
            text = f"{self.error}: new messages are dropped and counted (file sources wait)"
            _LINES.log(logger, logging.ERROR, key, "outbox %s: %s", self.path, text)
        elif was is not None and self.error is None:
            text = f"writes again; {self._lost} message(s) dropped meanwhile"
            _LINES.log(logger, logging.INFO, key, "outbox %s: %s", self.path, text)
            self._lost = 0
