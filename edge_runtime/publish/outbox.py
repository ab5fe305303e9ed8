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
from edge_runtime.errors import EdgeRuntimeError

logger = logging.getLogger(__name__)

MESSAGES_TABLE = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    seq INTEGER
)"""
META_TABLE = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)"
SCHEMA = f"{MESSAGES_TABLE};\n{META_TABLE};\n"

_MOVE_AT_MOST = 10_000  # rows an old-schema outbox may hold to be moved to the current table at a start

PayloadFactory = Callable[[int], bytes]  # seq -> payload bytes
_Row = tuple[int, str, bytes, int, int, float, int]  # id, topic, payload, qos, retain, created, seq


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
    ) -> None:
        self.path, self.max_messages, self.max_bytes = path, max_messages, max_bytes
        self.drop_policy, self.max_attempts = drop_policy, max_attempts
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._db.executescript(SCHEMA)
            self._upgrade()
        except (OSError, sqlite3.Error) as exc:
            raise EdgeRuntimeError(f"{path}: cannot open the outbox: {exc}") from exc
        self._lock = threading.Lock()
        self._meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        for topic, seq in self._db.execute(
            "SELECT topic, MAX(seq) FROM messages WHERE seq IS NOT NULL GROUP BY topic"
        ):
            key = f"seq:{topic}"
            self._meta[key] = max(int(self._meta.get(key, 0)), int(seq))
        count, size = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM messages"
        ).fetchone()
        self._count, self._bytes = int(count), int(size)
        self._last_id = int(self._db.execute("SELECT COALESCE(MAX(id), 0) FROM messages").fetchone()[0])
        self._done: set[int] = set()  # delivered rows, deleted in batches (delivered())
        self._done_since = 0.0
        self.on_added: Callable[[], None] = _nothing  # called after new rows are committed (publisher)
        logger.info("outbox %s: %d pending message(s), %d dropped so far", path, self._count, self.dropped)

    def _upgrade(self) -> None:
        """Bring an outbox written by an earlier version to this schema (it keeps its rows)."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(messages)")}
        if "seq" not in columns:  # from before seq was kept in the rows (meta holds every seq)
            self._db.execute("ALTER TABLE messages ADD COLUMN seq INTEGER")
        sql = self._db.execute("SELECT sql FROM sqlite_master WHERE name = 'messages'").fetchone()[0]
        if "AUTOINCREMENT" not in sql.upper():
            return
        # Its counter costs a page write per message: the rows move to a table without it, in one
        # transaction (an interruption leaves the old table as it was). A long backlog stays where
        # it is until a later start finds it short: moving 100,000 rows took 4 s here, and a start
        # must not outlast systemd's timeout on a slow SD card.
        rows = self._db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
        if rows > _MOVE_AT_MOST:
            logger.info("outbox %s: %d pending message(s) keep the old table for now", self.path, rows)
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("ALTER TABLE messages RENAME TO messages_old")
            self._db.execute(MESSAGES_TABLE)
            self._db.execute(
                "INSERT INTO messages (id, topic, payload, qos, retain, created, attempts, seq)"
                " SELECT id, topic, payload, qos, retain, created, attempts, seq FROM messages_old"
            )
            self._db.execute("DROP TABLE messages_old")
            self._db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        if rows:
            logger.info("outbox %s: %d pending message(s) moved to the current schema", self.path, rows)

    @property
    def pending(self) -> int:
        """Messages stored and not yet delivered."""
        return max(0, self._count - len(self._done))

    @property
    def pending_bytes(self) -> int:
        """Payload bytes stored (rows delivered in the last moments included)."""
        return self._bytes

    @property
    def delivered_waiting(self) -> tuple[int, float]:
        """Delivered rows not deleted yet, and for how long the oldest has waited (s)."""
        return len(self._done), (time.monotonic() - self._done_since) if self._done else 0.0

    @property
    def dropped(self) -> int:
        """Messages dropped by the size policy, ever (persisted)."""
        return int(self._meta.get("dropped", 0))

    @property
    def rejected(self) -> int:
        """Messages the broker refused ``max_attempts`` times and that were given up (persisted)."""
        return int(self._meta.get("rejected", 0))

    def last_seq(self, topic: str) -> int:
        """The last ``seq`` given out on ``topic`` (0 before the first)."""
        return int(self._meta.get(f"seq:{topic}", 0))

    def put(self, topic: str, make_payload: PayloadFactory, qos: int = 1, retain: bool = False) -> int:
        """Store one message; returns its seq."""
        return self.put_many([Outgoing(topic, make_payload, qos, retain)])[0]

    def put_many(self, items: Sequence[Outgoing]) -> list[int]:
        """Store messages in one transaction (one commit); returns their seqs.

        When the store is full, delivered rows not deleted yet are deleted in the same
        transaction before the drop policy looks: a delivered row is never counted as dropped.
        """
        seqs: list[int] = []
        with self._lock:
            meta = dict(self._meta)
            rows: list[_Row] = []
            for item in items:
                seq = int(meta.get(f"seq:{item.topic}", 0)) + 1
                meta[f"seq:{item.topic}"] = seq
                seqs.append(seq)
                payload = item.make_payload(seq)
                rows.append((0, item.topic, payload, item.qos, int(item.retain), time.time(), seq))
            try:
                self._db.execute("BEGIN IMMEDIATE")
                count, size = self._count, self._bytes
                new_bytes = sum(len(r[2]) for r in rows)
                full = count + len(rows) > self.max_messages or size + new_bytes > self.max_bytes
                deleted = bool(self._done) and full
                if deleted:  # delivered rows make room first (otherwise the publisher deletes them
                    # in batches: one page write per batch, not one more per commit)
                    gone, freed_bytes = self._delete_rows(self._done, meta)
                    count, size = count - gone, size - freed_bytes
                dropped, gone, gone_bytes = self._make_room(rows, meta, count, size)
                rows = [(self._last_id + 1 + i, *row[1:]) for i, row in enumerate(rows)]
                self._db.executemany(
                    "INSERT INTO messages (id, topic, payload, qos, retain, created, seq)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                if dropped:  # the drop count changed, and maybe a topic's newest row went
                    self._db.executemany(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", meta.items()
                    )
                self._db.execute("COMMIT")
            except BaseException as exc:
                self._rollback()
                if isinstance(exc, sqlite3.Error):
                    raise EdgeRuntimeError(f"{self.path}: outbox write failed: {exc}") from exc
                raise
            if deleted:
                self._done.clear()
            self._meta = meta
            self._count = count - gone + len(rows)
            self._bytes = size - gone_bytes + sum(len(r[2]) for r in rows)
            self._last_id += len(rows)
        if rows:
            self.on_added()
        return seqs

    def _rollback(self) -> None:
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                logger.exception("outbox %s: rollback failed", self.path)

    def _make_room(
        self, rows: list[_Row], meta: dict[str, int], count: int, size: int
    ) -> tuple[int, int, int]:
        """Apply the drop policy to a store of ``count`` rows and ``size`` bytes (in the transaction).

        Drops from ``rows`` in place (newest) or deletes stored rows (oldest); returns how many
        messages were dropped, and the stored rows and bytes that left with them.
        """
        new_bytes = sum(len(r[2]) for r in rows)
        over_count = count + len(rows) - self.max_messages
        over_bytes = size + new_bytes - self.max_bytes
        if over_count <= 0 and over_bytes <= 0:
            return 0, 0, 0
        if self.drop_policy == "newest":
            keep: list[_Row] = []
            for r in rows:
                if count + 1 <= self.max_messages and size + len(r[2]) <= self.max_bytes:
                    keep.append(r)
                    count, size = count + 1, size + len(r[2])
            dropped = len(rows) - len(keep)
            meta["dropped"] = int(meta.get("dropped", 0)) + dropped
            rows[:] = keep
            return dropped, 0, 0
        victims: list[int] = []
        freed = 0
        for row_id, length in self._db.execute("SELECT id, LENGTH(payload) FROM messages ORDER BY id"):
            if len(victims) >= over_count and freed >= over_bytes:
                break
            victims.append(row_id)
            freed += length
        self._db.executemany("DELETE FROM messages WHERE id = ?", ((v,) for v in victims))
        meta["dropped"] = int(meta.get("dropped", 0)) + len(victims)
        return len(victims), len(victims), freed

    def _delete_rows(self, ids: Iterable[int], meta: dict[str, int]) -> tuple[int, int]:
        """Delete rows (in the transaction); the rows and bytes that went.

        The seq of each topic that lost rows is written to ``meta``: it must outlive its rows.
        """
        id_list = list(ids)
        count = size = 0
        topics: set[str] = set()
        for at in range(0, len(id_list), 500):
            chunk = id_list[at : at + 500]
            marks = ",".join("?" * len(chunk))
            gone = self._db.execute(
                f"DELETE FROM messages WHERE id IN ({marks}) RETURNING topic, LENGTH(payload)", chunk
            ).fetchall()
            count += len(gone)  # an id may be gone already (dropped by the size policy)
            size += sum(int(r[1]) for r in gone)
            topics.update(r[0] for r in gone)
        seqs = [(k, meta[k]) for k in (f"seq:{t}" for t in topics) if k in meta]
        self._db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", seqs)
        return count, size

    @property
    def last_id(self) -> int:
        """The id of the newest message stored (ids only grow)."""
        return self._last_id

    def fetch(self, after_id: int, limit: int) -> list[Message]:
        """Up to ``limit`` messages with id > ``after_id``, oldest first."""
        if after_id >= self._last_id:  # nothing newer: no query (the publisher asks after every ack)
            return []
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload, qos, retain FROM messages WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
        return [Message(r[0], r[1], bytes(r[2]), r[3], bool(r[4])) for r in rows]

    def ack(self, ids: Iterable[int]) -> None:
        """Delete messages now (one transaction, one statement per 500 ids)."""
        id_list = list(ids)
        if not id_list:
            return
        with self._lock:
            self._delete_now(id_list)

    def delivered(self, ids: Iterable[int]) -> None:
        """Mark messages delivered: they no longer count as pending, and are deleted in a batch by
        :meth:`flush_delivered` (or a commit that needs their room); a crash before that sends
        them again on the next start.
        """
        with self._lock:
            if not self._done:
                self._done_since = time.monotonic()
            self._done.update(ids)

    def flush_delivered(self) -> None:
        """Delete the delivered rows now (the publisher's turn when no new rows commit)."""
        with self._lock:
            if self._done:
                self._delete_now(list(self._done))

    def _delete_now(self, ids: list[int]) -> None:
        """Delete rows in a transaction of their own (lock held)."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            count, size = self._delete_rows(ids, self._meta)
            self._db.execute("COMMIT")
        except BaseException as exc:
            self._rollback()
            if isinstance(exc, sqlite3.Error):
                raise EdgeRuntimeError(f"{self.path}: outbox delete failed: {exc}") from exc
            raise
        self._done.difference_update(ids)
        self._count -= count
        self._bytes -= size

    def refused(self, row_id: int) -> bool:
        """The broker refused a message; True when it was given up after ``max_attempts``."""
        with self._lock:
            row = self._db.execute(
                "UPDATE messages SET attempts = attempts + 1 WHERE id = ? RETURNING attempts", (row_id,)
            ).fetchone()
        if row is None or row[0] < self.max_attempts:
            return False
        self.ack([row_id])
        with self._lock:
            self._meta["rejected"] = self.rejected + 1
            self._db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('rejected', ?)", (self.rejected,)
            )
        return True

    def close(self) -> None:
        """Checkpoint and close the database."""
        with self._lock:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                logger.warning("outbox %s: checkpoint failed at close", self.path)
            self._db.close()


def open_outbox(cfg: OutboxConfig) -> Outbox:
    """The outbox the config's ``outbox:`` section describes."""
    return Outbox(
        cfg.path,
        max_messages=cfg.max_messages,
        max_bytes=cfg.max_bytes,
        drop_policy=cfg.drop_policy,
        synchronous=cfg.synchronous,
    )
