"""Inbound requests on ``P/D/cmd/<name>``: taken at a bounded rate into a bounded queue, handled
one at a time by the ``control`` thread, answered on the request's response topic.

paho's thread only counts and enqueues (:meth:`Requests.offer`). A flood costs neither inference
time nor results: what is over ``per_s`` or finds the queue full is dropped and counted, and the
answers go out at most as fast as requests are taken. Log lines are throttled.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge_runtime.control.ports import Link
from edge_runtime.throttle import Throttle

logger = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 16 * 1024  # a signed command is under 1 KB
MAX_RESPONSE_TOPIC = 256


@dataclass(frozen=True, slots=True)
class Request:
    """One command request as it arrived (nothing in it is trusted yet)."""

    name: str
    payload: bytes
    response_topic: str | None
    correlation: bytes | None


class _Bucket:
    """A token bucket: ``per_s`` tokens a second, at most ``burst`` saved up (paho's thread only)."""

    def __init__(self, per_s: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_s, self.burst, self.clock = per_s, burst, clock
        self._tokens, self._at = burst, clock()

    def take(self) -> bool:
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.per_s)
        self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


class Requests:
    """The bounded intake and the ``control`` thread that answers."""

    def __init__(
        self,
        handle: Callable[[Request], dict[str, Any]],
        link: Link,
        *,
        per_s: float,
        max_pending: int,
    ) -> None:
        self.handle, self.link = handle, link
        self.counters = {"received": 0, "dropped": 0, "answered": 0, "failed": 0, "unanswerable": 0}
        self._bucket = _Bucket(per_s, burst=max(max_pending, per_s))
        self._log = Throttle(per_s=60.0, burst=5)
        self._queue: queue.Queue[Request | None] = queue.Queue(maxsize=max_pending)
        self._thread = threading.Thread(target=self._run, name="control", daemon=True)

    def offer(self, topic: str, payload: bytes, response: str | None, correlation: bytes | None) -> None:
        """paho's thread: count, rate-limit, enqueue; nothing else."""
        self.counters["received"] += 1
        if len(payload) > MAX_REQUEST_BYTES or not self._bucket.take():
            self._dropped("over the rate limit or too big")
            return
        if response is not None and (len(response) > MAX_RESPONSE_TOPIC or any(c in response for c in "+#")):
            response = None  # not a topic we may publish on
        try:
            self._queue.put_nowait(Request(topic.rpartition("/")[2], payload, response, correlation))
        except queue.Full:
            self._dropped("queue full")

    def _dropped(self, why: str) -> None:
        self.counters["dropped"] += 1
        self._log.log(logger, logging.WARNING, "dropped", "control: a command dropped (%s)", why)

    def start(self) -> None:
        """Start answering."""
        self._thread.start()

    def close(self, timeout: float = 2.0) -> None:
        """Stop after the request being handled (the rest are dropped)."""
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        with contextlib.suppress(queue.Full):  # emptied just above
            self._queue.put_nowait(None)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            request = self._queue.get()
            if request is None:
                return
            try:
                answer = self.handle(request)
            except Exception as exc:  # the control loop must outlive any one command
                self.counters["failed"] += 1
                self._log.log(logger, logging.ERROR, "failed", "control: command %r failed", request.name)
                logger.debug("control: command failure", exc_info=True)
                answer = {"ok": False, "error": f"internal error: {type(exc).__name__}"}
            self._answer(request, answer)

    def _answer(self, request: Request, answer: dict[str, Any]) -> None:
        if request.response_topic is None:
            self.counters["unanswerable"] += 1
            self._log.log(
                logger,
                logging.WARNING,
                "noreply",
                "control: %r had no response topic; no answer sent",
                request.name,
            )
            return
        body = json.dumps(answer, separators=(",", ":")).encode()
        if self.link.respond(request.response_topic, body, request.correlation):
            self.counters["answered"] += 1
