"""Rate limits for things anyone on the broker can trigger: log lines, status messages, counters.

A hostile or broken publisher can send thousands of messages a second; each must not cost a log
line or an outbox row. :class:`Throttle` lets ``burst`` events per key through in each ``per_s``
window and counts the rest, so the next line that gets through can say how many were held back.
Keys are bounded (the oldest is forgotten), so hostile topic names cannot grow memory. A leaf
module: every stage may use it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any


class Throttle:
    """At most ``burst`` events per key in each window of ``per_s`` seconds; thread-safe."""

    def __init__(
        self,
        *,
        per_s: float = 60.0,
        burst: int = 5,
        max_keys: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_s, self.burst, self.max_keys, self.clock = per_s, burst, max_keys, clock
        self._windows: OrderedDict[str, tuple[float, int, int]] = OrderedDict()  # start, let through, held
        self._lock = threading.Lock()

    def allow(self, key: str = "") -> int | None:
        """None when this event is held back; else how many of this key were held back before it."""
        now = self.clock()
        with self._lock:
            start, passed, held = self._windows.pop(key, (now, 0, 0))
            if now - start >= self.per_s:
                start, passed = now, 0
            if passed < self.burst:
                self._windows[key] = (start, passed + 1, 0)
                result: int | None = held
            else:
                self._windows[key] = (start, passed, held + 1)
                result = None
            while len(self._windows) > self.max_keys:
                self._windows.popitem(last=False)
        return result

    def log(self, logger: logging.Logger, level: int, key: str, msg: str, *args: Any) -> bool:
        """Log ``msg % args`` unless held back (then it only counts); True when it was logged."""
        held = self.allow(key)
        if held is None:
            return False
        suffix = f" ({held} similar line(s) held back)" if held else ""
        logger.log(level, "%s%s", msg % args, suffix)
        return True
