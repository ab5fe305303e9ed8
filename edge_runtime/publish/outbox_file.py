"""Opening the outbox's SQLite file: checks, recovery of a damaged file, schema upgrades, counters.

At every open the file is checked before anything writes to it (``PRAGMA quick_check``, and the
WAL's header, which SQLite itself would silently ignore): a damaged outbox is moved aside and a
fresh one holds whatever rows could be read (salvage.py), so a start never fails on damage. A
file that cannot be opened for another reason (no access, locked) is a clear error and is left
alone. On a full disk, where the shared-memory index (``-shm``) cannot be created, the file is
opened in exclusive locking mode, which keeps that index in the process's own memory.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.publish import salvage

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


@dataclass(slots=True)
class Tally:
    """What is stored: all rows, and the retained (control) rows among them.

    A transaction works on a copy, which replaces the outbox's only once it has committed.
    """

    rows: int = 0
    size: int = 0
    control_rows: int = 0
    control_size: int = 0
    retained: dict[str, int] = field(default_factory=dict)  # topic -> id of its queued retained row

    def copy(self) -> Tally:
        """An independent copy."""
        return Tally(self.rows, self.size, self.control_rows, self.control_size, dict(self.retained))

    def added(self, rows: list[tuple[int, str, bytes, int, int, float, int]]) -> None:
        """Rows were inserted (id, topic, payload, qos, retain, created, seq)."""
        self.rows += len(rows)
        self.size += sum(len(row[2]) for row in rows)
        for row in rows:
            if row[4]:
                self.control_rows, self.control_size = self.control_rows + 1, self.control_size + len(row[2])
                self.retained[row[1]] = row[0]

    def gone(self, row_id: int, topic: str, retain: int, length: int) -> None:
        """A row was deleted."""
        self.rows, self.size = self.rows - 1, self.size - length
        if retain:
            self.control_rows, self.control_size = self.control_rows - 1, self.control_size - length
            if self.retained.get(topic) == row_id:
                del self.retained[topic]


@dataclass(slots=True)
class Opened:
    """An outbox file, open, with what the outbox keeps in memory."""

    db: sqlite3.Connection
    meta: dict[str, int]  # seq:<topic>, dropped, rejected
    tally: Tally
    last_id: int
    page_size: int
    recovered: salvage.Recovery | None = None  # a damaged file this open moved aside


def open_file(path: Path, synchronous: str) -> Opened:
    """Open (or create) the outbox at ``path``, recovering a damaged one; EdgeRuntimeError when
    it cannot be opened at all."""
    try:
        return _open(path, synchronous)
    except salvage.DamagedError as damage:
        logger.error(
            "outbox %s is damaged (%s): moving it aside, queueing again what can be read", path, damage
        )
        try:
            recovered = salvage.recover(path, str(damage), SCHEMA)
        except OSError as exc:
            raise EdgeRuntimeError(f"{path}: damaged ({damage}); cannot move it aside: {exc}") from exc
        logger.error(
            "outbox %s: the damaged file is kept as %s; %d message(s) queued again",
            path,
            recovered.kept_as,
            recovered.rows,
        )
    try:
        opened = _open(path, synchronous)
    except salvage.DamagedError as exc:
        raise EdgeRuntimeError(f"{path}: the recovered outbox cannot be opened: {exc}") from exc
    opened.recovered = recovered
    return opened


def _open(path: Path, synchronous: str) -> Opened:
    salvage.finish_interrupted(path)
    problem = salvage.wal_problem(path)
    if problem is None and not path.exists() and Path(f"{path}-wal").exists():
        problem = "a WAL without its database"  # SQLite would lay its pages on an empty file
    if problem is not None:
        raise salvage.DamagedError(problem)
    empty = path.exists() and path.stat().st_size == 0
    try:
        return _connect(path, synchronous, empty=empty, exclusive=False)
    except sqlite3.Error as exc:
        if not salvage.is_no_room(exc):
            raise EdgeRuntimeError(f"{path}: cannot open the outbox: {exc}") from exc
        logger.warning("outbox %s: %s; opened in exclusive mode (no -shm)", path, exc)
    try:
        return _connect(path, synchronous, empty=empty, exclusive=True)
    except sqlite3.Error as exc:
        raise EdgeRuntimeError(f"{path}: cannot open the outbox: {exc}") from exc


def _connect(path: Path, synchronous: str, *, empty: bool, exclusive: bool) -> Opened:
    """Connect, check the file, bring the schema up to date, load the counters.

    Raises DamagedError for a damaged file, sqlite3.Error for anything else.
    """
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    try:
        if exclusive:  # before the first read: then SQLite never maps the -shm file
            db.execute("PRAGMA locking_mode=EXCLUSIVE")
        # checked before anything writes: a damaged file is kept as it was found
        if empty and db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0:
            raise salvage.DamagedError("an empty file (its queue and seq counters are lost)")
        check = [str(r[0]) for r in db.execute("PRAGMA quick_check(3)").fetchall()]
        if check != ["ok"]:
            raise salvage.DamagedError("; ".join(check))
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        db.executescript(SCHEMA)
        _upgrade(db, path)
        return _load(db, path)
    except salvage.DamagedError:
        db.close()
        raise
    except sqlite3.Error as exc:
        db.close()
        if salvage.is_damage(exc):
            raise salvage.DamagedError(str(exc)) from exc
        raise


def _load(db: sqlite3.Connection, path: Path) -> Opened:
    """The counters, from ``meta`` and the rows; older retained rows of a topic are coalesced."""
    meta = {str(k): int(v) for k, v in db.execute("SELECT key, value FROM meta")}
    for topic, seq in db.execute("SELECT topic, MAX(seq) FROM messages WHERE seq IS NOT NULL GROUP BY topic"):
        key = f"seq:{topic}"
        meta[key] = max(int(meta.get(key, 0)), int(seq))
    _coalesce_stored(db, path)
    tally = Tally()
    for retain, count, size in db.execute(
        "SELECT retain, COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM messages GROUP BY retain != 0"
    ):
        tally.rows, tally.size = tally.rows + int(count), tally.size + int(size)
        if retain:
            tally.control_rows, tally.control_size = int(count), int(size)
    if tally.control_rows:
        query = "SELECT topic, MAX(id) FROM messages WHERE retain GROUP BY topic"
        tally.retained = {str(t): int(i) for t, i in db.execute(query)}
    last_id = int(db.execute("SELECT COALESCE(MAX(id), 0) FROM messages").fetchone()[0])
    page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
    return Opened(db, meta, tally, last_id, page_size)


def _coalesce_stored(db: sqlite3.Connection, path: Path) -> None:
    """Keep only the newest retained row per topic (an outbox of an earlier version may hold many)."""
    total, topics = db.execute("SELECT COUNT(*), COUNT(DISTINCT topic) FROM messages WHERE retain").fetchone()
    if total == topics:
        return
    try:
        db.execute(
            "DELETE FROM messages WHERE retain AND id NOT IN"
            " (SELECT MAX(id) FROM messages WHERE retain GROUP BY topic)"
        )
    except sqlite3.OperationalError as exc:  # e.g. a full disk: they are sent as they are
        logger.warning("outbox %s: could not coalesce old retained messages: %s", path, exc)
    else:
        logger.info("outbox %s: %d superseded retained message(s) removed", path, total - topics)


def _upgrade(db: sqlite3.Connection, path: Path) -> None:
    """Bring an outbox written by an earlier version to this schema (it keeps its rows)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(messages)")}
    if "seq" not in columns:  # from before seq was kept in the rows (meta holds every seq)
        db.execute("ALTER TABLE messages ADD COLUMN seq INTEGER")
    sql = db.execute("SELECT sql FROM sqlite_master WHERE name = 'messages'").fetchone()[0]
    if "AUTOINCREMENT" not in sql.upper():
        return
    # Its counter costs a page write per message: the rows move to a table without it, in one
    # transaction (an interruption leaves the old table as it was). A long backlog stays where
    # it is until a later start finds it short: moving 100,000 rows took 4 s here, and a start
    # must not outlast systemd's timeout on a slow SD card.
    rows = db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
    if rows > _MOVE_AT_MOST:
        logger.info("outbox %s: %d pending message(s) keep the old table for now", path, rows)
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("ALTER TABLE messages RENAME TO messages_old")
        db.execute(MESSAGES_TABLE)
        db.execute(
            "INSERT INTO messages (id, topic, payload, qos, retain, created, attempts, seq)"
            " SELECT id, topic, payload, qos, retain, created, attempts, seq FROM messages_old"
        )
        db.execute("DROP TABLE messages_old")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    if rows:
        logger.info("outbox %s: %d pending message(s) moved to the current schema", path, rows)


def free_bytes(db: sqlite3.Connection, path: Path, page_size: int) -> int | None:
    """Bytes the outbox at ``path`` may still use: the file system's free space and the database's
    free pages (SQLite reuses them before the file grows); None when unknown."""
    try:
        stat = os.statvfs(path.parent)
        pages = int(db.execute("PRAGMA freelist_count").fetchone()[0])
    except (OSError, sqlite3.Error):
        return None
    return stat.f_bavail * stat.f_frsize + pages * page_size
