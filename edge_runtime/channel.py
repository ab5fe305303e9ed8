"""A bounded FIFO between two threads that wakes a blocked producer in bursts, not per item.

``queue.Queue`` wakes a producer blocked on a full queue as soon as one slot frees: when the
consumer is the slower side (a model at full speed), the producer then sleeps and wakes once per
item, and each wake costs a context switch, a GIL hand-over and cold caches on a busy core. A
:class:`Channel` lets the producer sleep until the queue has drained to ``resume_at`` items, so it
wakes once per ``maxsize - resume_at`` items and does them in a row. The consumer is woken as
soon as there is an item, as with ``queue.Queue``; a channel that never fills behaves the same.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Channel(Generic[T]):
    """Bounded FIFO: ``put`` blocks while full, then until at most ``resume_at`` items are left."""

    def __init__(self, maxsize: int, resume_at: int | None = None) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self.resume_at = maxsize - 1 if resume_at is None else max(0, min(resume_at, maxsize - 1))
        self._items: deque[T] = deque()
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)
        self._producer_waiting = 0

    def put(self, item: T, timeout: float | None = None) -> bool:
        """Append ``item``; False when the channel stayed full for ``timeout`` seconds."""
        with self._lock:
            if len(self._items) >= self.maxsize:
                self._producer_waiting += 1
                try:
                    if not self._not_full.wait_for(lambda: len(self._items) <= self.resume_at, timeout):
                        return False
                finally:
                    self._producer_waiting -= 1
            self._items.append(item)
            self._not_empty.notify()
            return True

    @property
    def waiting(self) -> int:
        """Items in the channel now (a hint: other threads may change it at once)."""
        return len(self._items)

    def put_nowait(self, item: T) -> bool:
        """Append ``item`` unless the channel is full (then False)."""
        return self.put(item, timeout=0)

    def get(self, timeout: float | None = None) -> T:
        """The oldest item; raises ``queue.Empty`` when none came within ``timeout`` seconds."""
        with self._lock:
            if not self._items and not self._not_empty.wait_for(lambda: self._items, timeout):
                raise queue.Empty
            return self._take()

    def get_nowait(self) -> T:
        """The oldest item, or ``queue.Empty``."""
        with self._lock:
            if not self._items:
                raise queue.Empty
            return self._take()

    def _take(self) -> T:
        item = self._items.popleft()
        if self._producer_waiting and len(self._items) <= self.resume_at:
            self._not_full.notify()
        return item
