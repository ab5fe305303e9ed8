"""Moves messages from the outbox to the broker, in order, deleting each only on its PUBACK.

A window of ``max_inflight`` messages is in flight at once, so a backlog drains at full speed.
Delivered rows are marked in the outbox (``Outbox.delivered``) and deleted by this thread in
batches, a few tenths of a second after their PUBACK: no transaction, page write or thread
wake-up of their own per message. A crash in between sends those few again on the next
start, as after a lost PUBACK. After a disconnect everything unacknowledged is sent again from
the oldest row (subscribers de-duplicate by ``id``); a refused message (PUBACK reason code
>= 0x80) is retried a few times and then given up and counted, so one poisoned message cannot
block the queue forever.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from edge_runtime.publish.mqtt import Ack, MqttLink
from edge_runtime.publish.outbox import Outbox
from edge_runtime.scheduling import yield_to_inference
from edge_runtime.throttle import Throttle

logger = logging.getLogger(__name__)

DELETE_AT = 256  # delivered rows that wake this thread to delete them
DELETE_AFTER_S = 0.1  # delivered rows this old are deleted at this thread's next turn


class Publisher:
    """The publisher thread."""

    def __init__(self, outbox: Outbox, link: MqttLink, *, max_inflight: int = 100) -> None:
        self.outbox, self.link, self.max_inflight = outbox, link, max_inflight
        self.published = 0
        # an ACL that denies a topic refuses every message on it, each several times: a few lines
        # a minute say so (health counts them all in outbox.rejected)
        self._refusals = Throttle(per_s=60.0, burst=3)
        self.stop_event = threading.Event()
        self._inflight: dict[int, int] = {}  # mid -> row id
        self._cursor = 0  # highest row id handed to paho in this connection
        self._rewind = False
        # One wake-up for both kinds of work: a new row (the outbox calls _rows_added) or an ack
        # that frees room for waiting rows (_ack_arrived), so neither waits behind a timeout.
        self._wake = threading.Event()
        # The window (_inflight, _cursor, _rewind) belongs to whoever holds this lock: the
        # publisher thread, or a committing thread that sends its own rows (_rows_added).
        self._lock = threading.Lock()
        outbox.on_added = self._rows_added
        link.on_ack = self._ack_arrived
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread (what is not acknowledged stays in the outbox)."""
        self.stop_event.set()
        self._wake.set()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout)

    def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` s until nothing is pending or in flight (only while connected)."""
        deadline = time.monotonic() + timeout
        while self.link.connected.is_set() and not self.idle() and time.monotonic() < deadline:
            time.sleep(0.05)

    def idle(self) -> bool:
        """True when nothing is pending or in flight (delivered rows may wait for deletion)."""
        return self.outbox.pending == 0 and not self._inflight

    def _ack_arrived(self, ok: bool) -> None:
        """An ack is queued (paho's thread): wake this thread only if it has work now.

        Work is rows waiting for room in the window, a refusal (and the retry after the acks
        that empty the window), or a full batch of deletions; a plain ack at a steady rate waits
        for the next commit or wake-up (or the wait's timeout), so acks cost no thread switch each.
        The checks run after the ack is queued and the committing thread updates the outbox
        before it collects acks (_rows_added): one of the two sees the other, and a row never
        waits for a timeout.
        """
        many = self.outbox.delivered_waiting[0] + self.link.acks.qsize() >= DELETE_AT
        work = not ok or self._rewind or many or self.outbox.last_id > self._cursor
        if work and not self._wake.is_set():
            self._wake.set()

    def _rows_added(self) -> None:
        """New rows are committed (called on the committing thread).

        While messages are in flight, the PUBACK that frees the window wakes this thread within a
        round trip (_ack_arrived), and it sends every new row then, in one go: at a high rate, one
        wake-up per batch of rows rather than one per row and another per ack. With nothing in
        flight (a low rate, or their acks have come) the committing thread sends its rows itself,
        unless this thread is busy with the window: a frame's result then leaves without waiting
        for a thread to wake. Offline, this thread wakes at once. If an
        ack never comes, the wait's own timeout sends the rows.
        """
        connected = self.link.connected.is_set()
        if connected and not self._rewind and not self.stop_event.is_set() and self._lock.acquire(False):
            try:
                self._collect_acks()
                if self._inflight and not self._rewind:  # their acks wake the publisher thread
                    return
                if not self._rewind and self._send_window():
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
        with self._lock:
            self._collect_acks()
            self.outbox.flush_delivered()

    def _step(self) -> None:
        if not self.link.connected.wait(0.2):
            with self._lock:
                self._reset()
            return
        self._wake.clear()  # before looking for work: a row or an ack arriving later wakes us
        with self._lock:
            acked = self._collect_acks()
            if self._rewind and not self._inflight:
                self.outbox.flush_delivered()  # what was delivered must not go again
                self._cursor, self._rewind = 0, False
            sent = self._send_window()
            waiting, age = self.outbox.delivered_waiting
            if waiting >= DELETE_AT or age >= DELETE_AFTER_S:
                self.outbox.flush_delivered()
        if not sent and not acked:
            self._wake.wait(DELETE_AFTER_S if self.outbox.delivered_waiting[0] else 0.2)

    def _reset(self) -> None:
        """Connection lost: forget in-flight mids; start again from the oldest pending row."""
        self._collect_acks()  # what the broker acknowledged before the loss is delivered
        self.outbox.flush_delivered()
        if self._inflight or self._cursor:
            self._inflight.clear()
            self._cursor = 0

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
                self._refusals.log(
                    logger,
                    logging.ERROR,
                    "given up",
                    "publisher: broker refused message %d %d times (%s); giving it up",
                    row_id,
                    self.outbox.max_attempts,
                    ack.reason,
                )
            else:
                self._refusals.log(
                    logger,
                    logging.WARNING,
                    "refused",
                    "publisher: broker refused message %d (%s); will retry",
                    row_id,
                    ack.reason,
                )
                self._rewind = True
        if delivered:
            self.outbox.delivered(delivered)
        self.published += len(delivered)
        return len(acks)
