"""SQLite store-and-forward: every outgoing message is on disk before anyone tries to send it.

Rows are published in insertion order and deleted only when the broker's PUBACK arrives, so a
broker outage, a network loss or a daemon crash loses nothing that was committed. ``seq`` is kept
per topic: in the message's own row, and in ``meta`` by the transaction that deletes the newest
row of a topic, so it survives restarts and never repeats. A message costs one page write: row
ids are given here, not by ``AUTOINCREMENT`` (whose counter table is another page each commit),
and ``meta`` is not touched by a plain insert.

Durability: WAL journal with ``synchronous=NORMAL`` by default — a committed message survives a
crash or SIGKILL of the daemon (the WAL is in the OS page cache), and commits need no fsync, which
keeps an SD card alive and commits fast. A power cut may lose the last moments of data; choose
``synchronous: full`` to fsync every commit when that matters more than flash wear and speed.

Retained messages are states (``model/status``): a newer one replaces the one of its topic still
queued, so they are at most one row per topic. They do not count against ``max_messages`` and
``max_bytes`` and the drop policy never drops them, nor drops a result to make room for them
(retention.py).

When the outbox cannot write (a full disk, an I/O error) or the file system's free space (with
the database's own free pages) is below ``reserve_bytes``, new messages are refused: counted in
``dropped`` with their ``seq`` used, so subscribers see the gap, or, for a caller that can wait
(``drop=False``), refused with :class:`OutboxUnavailableError` and nothing used. The reserve keeps
room for what must still write: deletions of delivered rows, the counters, retained states.
:attr:`error` says why; one log line when it starts and one when writes work again. A damaged
file is moved aside at open and its readable rows queued again (salvage.py).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edge_runtime.config.sections import OutboxConfig
from edge_runtime.errors import EdgeRuntimeError, OutboxClosedError, OutboxUnavailableError
from edge_runtime.publish import salvage
from edge_runtime.publish.outbox_file import SCHEMA, free_bytes, open_file
from edge_runtime.publish.retention import Caps, Row, coalesce, delete_rows
from edge_runtime.publish.writestate import WriteState

logger = logging.getLogger(__name__)

__all__ = ["SCHEMA", "Message", "Outbox", "Outgoing", "open_outbox"]

PayloadFactory = Callable[[int], bytes]  # seq -> payload bytes


@dataclass(frozen=True, slots=True)
class Message:
    """A stored message, as the publisher sees it."""

    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to store: its payload is built once its ``seq`` is known."""

    topic: str
    make_payload: PayloadFactory
    qos: int = 1
    retain: bool = False


def _nothing() -> None:
    pass


class Outbox:
    """The on-disk queue. Thread-safe: pipelines put, the publisher fetches and acknowledges."""

    def __init__(
        self,
        path: Path,
        *,
        max_messages: int = 100_000,
        max_bytes: int = 256 << 20,
        drop_policy: Literal["oldest", "newest"] = "oldest",
        synchronous: Literal["normal", "full"] = "normal",
        max_attempts: int = 5,
        reserve_bytes: int = 8 << 20,
        retry_s: float = 1.0,
        check_s: float = 0.25,
    ) -> None:
        self.path, self.max_attempts = path, max_attempts
        self.caps = Caps(max_messages, max_bytes, drop_policy)  # retention.py: what goes when full
        self._lock = threading.Lock()
        self._state = WriteState(
            path, self._free, reserve_bytes=reserve_bytes, retry_s=retry_s, check_s=check_s
        )
        self._unsaved = False  # counters changed in memory only (written by the next transaction)
        self._attempts: dict[int, int] = {}  # refusals that could not be written (see refused())
        self._done: set[int] = set()  # delivered rows, deleted in batches (delivered())
        self._done_since = 0.0
        # Set under the lock by close(): a thread that outlived the stop's bounded wait (a call
        # that could not be interrupted) is refused with OutboxClosedError, never reaches SQLite.
        self._closed = False
        self.on_added: Callable[[], None] = _nothing  # called after new rows are committed (publisher)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EdgeRuntimeError(f"{path}: cannot open the outbox: {exc}") from exc
        opened = open_file(path, synchronous)
        self._db, self._meta, self._tally = opened.db, opened.meta, opened.tally
        self._last_id, self._page_size = opened.last_id, opened.page_size
        self.recovered: salvage.Recovery | None = opened.recovered  # a damaged file moved aside at open
        logger.info(
            "outbox %s: %d pending message(s), %d dropped so far", path, self._tally.rows, self.dropped
        )

    # -- counters ----------------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Messages stored and not yet delivered."""
        return max(0, self._tally.rows - len(self._done))

    @property
    def pending_bytes(self) -> int:
        """Payload bytes stored (rows delivered in the last moments included)."""
        return self._tally.size

    @property
    def delivered_waiting(self) -> tuple[int, float]:
        """Delivered rows not deleted yet, and for how long the oldest has waited (s)."""
        return len(self._done), (time.monotonic() - self._done_since) if self._done else 0.0

    @property
    def dropped(self) -> int:
        """Messages dropped (the size policy, or refused while the outbox could not write), ever."""
        return int(self._meta.get("dropped", 0))

    @property
    def rejected(self) -> int:
        """Messages the broker refused ``max_attempts`` times and that were given up (persisted)."""
        return int(self._meta.get("rejected", 0))

    @property
    def error(self) -> str | None:
        """Why new messages are refused now (a failed write, too little free space), else None."""
        return self._state.error

    def _free(self) -> int | None:
        """Bytes the outbox may still use (outbox_file.free_bytes); None when unknown."""
        return free_bytes(self._db, self.path, self._page_size)

    def last_seq(self, topic: str) -> int:
        """The last ``seq`` given out on ``topic`` (0 before the first)."""
        return int(self._meta.get(f"seq:{topic}", 0))

    # -- put -----------------------------------------------------------------------------------------
    def put(
        self,
        topic: str,
        make_payload: PayloadFactory,
        qos: int = 1,
        retain: bool = False,
        *,
        drop: bool = True,
    ) -> int:
        """Store one message; returns its seq (see :meth:`put_many`)."""
        return self.put_many([Outgoing(topic, make_payload, qos, retain)], drop=drop)[0]

    def put_many(self, items: Sequence[Outgoing], *, drop: bool = True) -> list[int]:
        """Store messages in one transaction (one commit); returns their seqs.

        When the store is full, delivered rows not deleted yet are deleted in the same
        transaction before the drop policy looks: a delivered row is never counted as dropped.
        When the outbox cannot store them (:attr:`error`), the messages are dropped and counted,
        their seqs used; with ``drop=False`` it raises :class:`OutboxUnavailableError` instead and
        uses nothing (the caller keeps them and tries again).
        """
        if not items:
            return []
        seqs: list[int] = []
        stored = 0
        retained = False  # any retained (state) message: coalescing to do
        with self._lock:
            self._check_open()
            meta = dict(self._meta)
            for item in items:
                seq = int(meta.get(f"seq:{item.topic}", 0)) + 1
                meta[f"seq:{item.topic}"] = seq
                seqs.append(seq)
                retained = retained or item.retain
            state = self._state
            refusal = state.refusal(data=not retained or not all(i.retain for i in items))
            if refusal is None:
                now = time.time()
                rows = [
                    (0, i.topic, i.make_payload(s), i.qos, int(i.retain), now, s)
                    for i, s in zip(items, seqs, strict=True)
                ]
                try:
                    stored = self._commit(rows, meta, retained)
                except sqlite3.Error as exc:
                    state.failed(exc)
                    refusal = str(self.error)
            if refusal is not None:
                if not drop:
                    raise OutboxUnavailableError(f"outbox {self.path}: {refusal}")
                meta["dropped"] = self.dropped + len(items)
                self._meta, self._unsaved = meta, True
                state.dropped(len(items))
                return seqs
            if state.failure is not None:
                state.worked()
        if stored:
            self.on_added()
        return seqs

    def _commit(self, rows: list[Row], meta: dict[str, int], retained: bool) -> int:
        """The transaction of :meth:`put_many` (lock held); the rows stored. Raises sqlite3.Error."""
        tally = self._tally
        try:
            self._db.execute("BEGIN IMMEDIATE")
            replaced = coalesce(rows, tally) if retained else []
            full = self.caps.over(rows, tally) != (0, 0)
            if replaced or full:  # rows will go: count them on a copy until the commit
                tally = tally.copy()
            if replaced:  # superseded states leave in the same transaction
                delete_rows(self._db, replaced, meta, tally)
            deleted = bool(self._done) and full
            if deleted:  # delivered rows make room first (otherwise the publisher deletes them
                # in batches: one page write per batch, not one more per commit)
                delete_rows(self._db, self._done, meta, tally)
            dropped = self.caps.make_room(self._db, rows, meta, tally) if full else 0
            first = self._last_id + 1
            rows = [(first + i, *row[1:]) for i, row in enumerate(rows)]
            self._db.executemany(
                "INSERT INTO messages (id, topic, payload, qos, retain, created, seq)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            if dropped or self._unsaved:  # the drop count changed, and maybe a topic's newest row went
                self._save_meta(meta)
            self._db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        tally.added(rows)
        if retained:
            self._done.difference_update(replaced)
        if deleted:
            self._done.clear()
        self._meta, self._tally, self._unsaved = meta, tally, False
        self._last_id += len(rows)
        return len(rows)

    # -- delete ------------------------------------------------------------------------------------------
    def _rollback(self) -> None:
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                logger.exception("outbox %s: rollback failed", self.path)

    def _save_meta(self, meta: dict[str, int]) -> None:
        self._db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", meta.items())

    @property
    def last_id(self) -> int:
        """The id of the newest message stored (ids only grow)."""
        return self._last_id

    def fetch(self, after_id: int, limit: int) -> list[Message]:
        """Up to ``limit`` messages with id > ``after_id``, oldest first (delivered ones skipped)."""
        out: list[Message] = []
        while after_id < self._last_id and len(out) < limit:  # nothing newer: no query
            with self._lock:
                self._check_open()
                rows = self._db.execute(
                    "SELECT id, topic, payload, qos, retain FROM messages WHERE id > ? ORDER BY id LIMIT ?",
                    (after_id, limit - len(out)),
                ).fetchall()
                done = self._done  # delivered, not deleted yet (e.g. on a disk that cannot write)
                out += [
                    Message(r[0], r[1], bytes(r[2]), r[3], bool(r[4]))
                    for r in rows
                    if not done or r[0] not in done
                ]
            if not rows:
                break
            after_id = rows[-1][0]
        return out

    def ack(self, ids: Iterable[int]) -> None:
        """Delete messages now (one transaction, one statement per 500 ids); if the disk cannot
        write, they are deleted later and never sent again meanwhile."""
        id_list = list(ids)
        if not id_list:
            return
        with self._lock:
            self._mark_done(id_list)
            self._delete_now(id_list)

    def delivered(self, ids: Iterable[int]) -> None:
        """Mark messages delivered: they no longer count as pending, and are deleted in a batch by
        :meth:`flush_delivered` (or a commit that needs their room); a crash before that sends
        them again on the next start.
        """
        with self._lock:
            self._mark_done(ids)

    def _mark_done(self, ids: Iterable[int]) -> None:
        if not self._done:
            self._done_since = time.monotonic()
        self._done.update(ids)

    def flush_delivered(self) -> None:
        """Delete the delivered rows now (the publisher's turn when no new rows commit)."""
        with self._lock:
            if self._done and self._state.may_write():
                self._delete_now(list(self._done))

    def _delete_now(self, ids: list[int]) -> None:
        """Delete rows in a transaction of their own (lock held); a failed write keeps them marked.

        After close (a late ack) nothing is deleted: the rows are sent again at the next start.
        """
        if self._closed:
            return
        tally = self._tally.copy()
        try:
            self._db.execute("BEGIN IMMEDIATE")
            delete_rows(self._db, ids, self._meta, tally)
            if self._unsaved:
                self._save_meta(self._meta)
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            self._state.failed(exc)
            return
        except BaseException:
            self._rollback()
            raise
        self._done.difference_update(ids)
        if self._attempts:
            for row_id in ids:
                self._attempts.pop(row_id, None)
        self._tally, self._unsaved = tally, False
        self._state.worked()

    def refused(self, row_id: int) -> bool:
        """The broker refused a message; True when it was given up after ``max_attempts``.

        Where the count cannot be written (a full disk) it is kept in memory, so a message the
        broker always refuses is still given up.
        """
        with self._lock:
            try:
                row = self._db.execute(
                    "UPDATE messages SET attempts = attempts + 1 WHERE id = ? RETURNING attempts", (row_id,)
                ).fetchone()
                attempts = None if row is None else int(row[0])
            except sqlite3.Error as exc:
                self._state.failed(exc)
                attempts = self._attempts[row_id] = self._attempts.get(row_id, 0) + 1
        if attempts is None or attempts < self.max_attempts:
            return False
        with self._lock:
            self._meta["rejected"] = self.rejected + 1
            self._unsaved = True
        self.ack([row_id])  # writes the count with the deletion
        return True

    def _check_open(self) -> None:
        if self._closed:
            raise OutboxClosedError(f"outbox {self.path} is closed")

    def close(self) -> None:
        """Write what is only in memory, checkpoint and close the database (once)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self._unsaved:
                    self._db.execute("BEGIN IMMEDIATE")
                    self._save_meta(self._meta)
                    self._db.execute("COMMIT")
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                self._rollback()
                logger.warning("outbox %s: counters or checkpoint not written at close", self.path)
            self._db.close()


def open_outbox(cfg: OutboxConfig) -> Outbox:
    """The outbox the config's ``outbox:`` section describes."""
    return Outbox(
        cfg.path,
        max_messages=cfg.max_messages,
        max_bytes=cfg.max_bytes,
        drop_policy=cfg.drop_policy,
        synchronous=cfg.synchronous,
        reserve_bytes=cfg.reserve_bytes,
    )
