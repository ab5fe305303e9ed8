"""Moves messages from the outbox to the broker, in order, deleting each only on its PUBACK.

A window of ``max_inflight`` messages is in flight at once, so a backlog drains at full speed.
After a disconnect everything unacknowledged is sent again from the oldest row (subscribers
de-duplicate by ``id``); a refused message (PUBACK reason code >= 0x80) is retried a few times and
then given up and counted, so one poisoned message cannot block the queue forever.
"""

from __future__ import annotations

import logging
import queue
import threading

from edge_runtime.publish.mqtt import Ack, MqttLink
from edge_runtime.publish.outbox import Outbox
from edge_runtime.scheduling import yield_to_inference

logger = logging.getLogger(__name__)


class Publisher:
    """The publisher thread."""

    def __init__(self, outbox: Outbox, link: MqttLink, *, max_inflight: int = 100) -> None:
        self.outbox, self.link, self.max_inflight = outbox, link, max_inflight
        self.published = 0
        self.stop_event = threading.Event()
        self._inflight: dict[int, int] = {}  # mid -> row id
        self._cursor = 0  # highest row id handed to paho in this connection
        self._rewind = False
        # One wake-up for both kinds of work: a new row (the outbox calls _rows_added) or an ack
        # (the link sets it), so neither waits behind a timeout meant for the other.
        self._wake = threading.Event()
        # The window (_inflight, _cursor, _rewind) belongs to whoever holds this lock: the
        # publisher thread, or a committing thread that sends its own rows (_rows_added).
        self._lock = threading.Lock()
        outbox.on_added = self._rows_added
        link.ack_event = self._wake
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread (what is not acknowledged stays in the outbox)."""
        self.stop_event.set()
        self._wake.set()
        self._thread.join(timeout)

    def idle(self) -> bool:
        """True when nothing is pending or in flight."""
        return self.outbox.pending == 0 and not self._inflight

    def _rows_added(self) -> None:
        """New rows are committed (called on the committing thread).

        While messages are in flight, their PUBACKs wake this thread within a round trip, and it
        sends every new row then, in one go: at a high rate, one wake-up per batch of rows rather
        than one per row and another per ack. With nothing in flight (a low rate) the committing
        thread sends its rows itself, unless this thread is busy with the window: a frame's result
        then leaves without waiting for a thread to wake. Offline, this thread wakes at once. If an
        ack never comes, the wait's own timeout sends the rows.
        """
        connected = self.link.connected.is_set()
        if connected and self._inflight:
            return
        if connected and not self._rewind and not self.stop_event.is_set() and self._lock.acquire(False):
            try:
                if self._send_window():
                    return
            except Exception:  # the publisher thread tries again (and logs what stays wrong)
                logger.debug("publisher: sending from the committing thread failed", exc_info=True)
            finally:
                self._lock.release()
        self._wake.set()

    def _run(self) -> None:
        yield_to_inference()
        while not self.stop_event.is_set():
            try:
                self._step()
            except Exception:  # keep publishing whatever one bad step did
                logger.exception("publisher step failed")
                self.stop_event.wait(1.0)

    def _step(self) -> None:
        if not self.link.connected.wait(0.2):
            with self._lock:
                self._reset()
            return
        self._wake.clear()  # before looking for work: a row or an ack arriving later wakes us
        with self._lock:
            sent = self._send_window()
            acked = self._collect_acks()
            if self._rewind and not self._inflight:
                self._cursor, self._rewind = 0, False
        if not sent and not acked:
            self._wake.wait(0.2)

    def _reset(self) -> None:
        """Connection lost: forget in-flight mids; start again from the oldest pending row."""
        if self._inflight or self._cursor:
            self._inflight.clear()
            self._cursor = 0
        while True:  # acks from the old connection are meaningless now
            try:
                self.link.acks.get_nowait()
            except queue.Empty:
                break

    def _send_window(self) -> int:
        room = self.max_inflight - len(self._inflight)
        if room <= 0:
            return 0
        sent = 0
        for msg in self.outbox.fetch(self._cursor, room):
            mid = self.link.publish(msg.topic, msg.payload, msg.qos, msg.retain)
            if mid is None:
                break
            self._inflight[mid] = msg.id
            self._cursor = msg.id
            sent += 1
        return sent

    def _collect_acks(self) -> int:
        acks: list[Ack] = []
        try:
            while len(acks) < 5000:
                acks.append(self.link.acks.get_nowait())
        except queue.Empty:
            pass
        delivered = []
        for ack in acks:
            row_id = self._inflight.pop(ack.mid, None)
            if row_id is None:
                continue
            if ack.ok:
                delivered.append(row_id)
            elif self.outbox.refused(row_id):
                logger.error(
                    "publisher: broker refused message %d %d times (%s); giving it up",
                    row_id,
                    self.outbox.max_attempts,
                    ack.reason,
                )
            else:
                logger.warning("publisher: broker refused message %d (%s); will retry", row_id, ack.reason)
                self._rewind = True
        self.outbox.ack(delivered)
        self.published += len(delivered)
        return len(acks)
