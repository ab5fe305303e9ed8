"""What the update manager refuses: counted for health, logged at a bounded rate, rarely published.

Anyone who may publish on the device's topics can send update messages and chunks by the
thousand. So (docs/updates.md, Hostile messages):

- a message that fails authentication belongs to no update: it is counted and logged (a few
  lines a minute), and no status is published for it;
- a refusal of an authenticated message is published as ``rejected`` on ``model/status``, at
  most once per update and reason in ``repeat_s`` and ``budget`` times a minute in all (the rest
  is counted as ``held_statuses``);
- a chunk that is not right is ignored and counted.
"""

from __future__ import annotations

import logging
import threading

from edge_runtime.throttle import Throttle

logger = logging.getLogger(__name__)

COUNTERS = ("refused", "unauthenticated", "ignored_chunks", "dropped", "held_statuses")


class Refusals:
    """The counters of refused update traffic (health ``updates``), with bounded logging."""

    def __init__(self, *, repeat_s: float = 10.0, budget: int = 10, log_burst: int = 5) -> None:
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._lock = threading.Lock()  # paho's thread counts some, the manager the rest
        self._log = Throttle(per_s=60.0, burst=log_burst)
        self._same = Throttle(per_s=repeat_s, burst=1)  # the same refusal of the same update
        self._budget = Throttle(per_s=60.0, burst=budget)  # refusal statuses a minute, in all

    def snapshot(self) -> dict[str, int]:
        """The counters since the daemon started."""
        with self._lock:
            return dict(self._counts)

    def _add(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def unauthenticated(self, reason: str) -> None:
        """An update message that failed authentication: counted and logged, nothing published."""
        self._add("refused")
        self._add("unauthenticated")
        self._log.log(logger, logging.WARNING, "unauthenticated", "update message ignored: %s", reason)

    def refused(self, update: str, reason: str) -> bool:
        """An authenticated update message refused; True when its status may be published now."""
        self._add("refused")
        self._log.log(logger, logging.WARNING, "refused", "update %s refused: %s", update, reason)
        if self._same.allow(f"{update}:{reason}") is None or self._budget.allow() is None:
            self._add("held_statuses")
            return False
        return True

    def chunk(self, reason: str) -> None:
        """A chunk message ignored (no download for it, index out of range, wrong size or bytes)."""
        self._add("ignored_chunks")
        self._log.log(logger, logging.WARNING, "chunk", "update chunk ignored: %s", reason)

    def dropped(self, kind: str) -> None:
        """A message dropped because the manager's inbox was full (counted; logged rarely)."""
        self._add("dropped")
        self._log.log(logger, logging.WARNING, "dropped", "update: inbox full, a %s message dropped", kind)
