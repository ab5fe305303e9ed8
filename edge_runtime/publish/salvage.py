"""A damaged outbox file: keep it aside, re-queue what can still be read, start a fresh one.

A power cut on an SD card, a failing flash block or a full file system can leave ``outbox.db``
(or its WAL) unreadable. The daemon must not stay dark for that: :func:`recover` moves the damaged
files aside (``outbox.db.damaged-<UTC time>``, with its ``-wal``), copies every row SQLite can
still read into a fresh outbox at the old path, in order, and reports what it did
(:class:`Recovery`, shown in health as ``outbox.recovered``).

Only SQLite reads the damaged file (no page parsing of our own): opened read-only with
``writable_schema`` (so a file shorter than its header says still opens), rows are read in rowid
order in batches; where a batch hits an unreadable page, rows are read one at a time up to it,
and the scan jumps over the damage by probing ever further rowids (then bisecting back). A row is
kept only if it is complete: a topic that can be published, a payload that is a JSON object (every
payload the daemon stores is one), sane qos, retain and seq.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sqlite3
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime.durable import fsync_dir

logger = logging.getLogger(__name__)

KEEP_DAMAGED = 3  # damaged copies kept next to the outbox (the oldest go): bounded disk
SALVAGE_S = 60.0  # reading a damaged file gives up after this long (systemd's start timeout is longer)
_BATCH = 256
_MIN_ROWID = -(2**63)
_MAX_ROWID = 2**63 - 1
_WAL_MAGIC = (0x377F0682, 0x377F0683)
_WAL_VERSION = 3007000
_DAMAGE_CODES = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB (extended codes keep them in the low byte)
_NO_ROOM_CODES = (10, 13)  # SQLITE_IOERR, SQLITE_FULL


@dataclass(frozen=True, slots=True)
class Recovery:
    """What a start did with a damaged outbox."""

    at: float  # Unix time
    kept_as: str  # the damaged file, moved aside
    rows: int  # rows read back and queued again
    reason: str  # what was wrong

    def report(self) -> dict[str, Any]:
        """The health field ``outbox.recovered``."""
        return {"at": round(self.at, 3), "kept_as": self.kept_as, "rows": self.rows, "reason": self.reason}


class DamagedError(Exception):
    """The outbox file (or its WAL) cannot be used as it is (internal to the outbox's open)."""


def is_damage(exc: sqlite3.Error) -> bool:
    """True when SQLite says the file is corrupt or not a database (not: locked, full, no access)."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python >= 3.11
    if code is not None:
        return code & 0xFF in _DAMAGE_CODES
    text = str(exc)
    return "malformed" in text or "not a database" in text


def is_no_room(exc: sqlite3.Error) -> bool:
    """True for a full disk or an I/O error (a -shm file that cannot grow on a full disk)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _NO_ROOM_CODES
    return "disk" in str(exc)


def wal_problem(path: Path) -> str | None:
    """Why the WAL next to ``path`` is not one SQLite wrote, or None (absent, empty or sound).

    SQLite silently ignores a WAL whose header is not its own, so damage there would go unseen:
    the header's magic, version, page size and checksum are checked (its frames are SQLite's
    business: it stops at the first frame whose checksum fails, as after any crash).
    """
    wal = Path(f"{path}-wal")
    try:
        with wal.open("rb") as fh:
            head = fh.read(32)
    except FileNotFoundError:
        return None
    if not head:
        return None
    if len(head) < 32:
        return f"{wal.name}: {len(head)} bytes, shorter than a WAL header"
    magic, version, page_size, _seq, _s1, _s2, sum1, sum2 = struct.unpack(">8I", head)
    sound = (
        magic in _WAL_MAGIC
        and version == _WAL_VERSION
        and 512 <= page_size <= 65536
        and page_size & (page_size - 1) == 0
        and _wal_checksum(head[:24], big_endian=bool(magic & 1)) == (sum1, sum2)
    )
    return None if sound else f"{wal.name}: not a WAL file (its header does not check)"


def _wal_checksum(data: bytes, *, big_endian: bool) -> tuple[int, int]:
    """SQLite's WAL checksum over ``data`` (pairs of 32-bit words in the order the magic says)."""
    words = struct.unpack(("<", ">")[big_endian] + f"{len(data) // 4}I", data)
    s0 = s1 = 0
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


def recover(path: Path, reason: str, schema: str) -> Recovery:
    """Move the damaged outbox at ``path`` aside and leave at ``path`` a fresh one (``schema``)
    holding every row that could be read; returns what was done.

    The fresh file is built under a temporary name and takes the old name only after the damaged
    files are moved: a crash while reading leaves the damaged file where it was (the next start
    tries again; :func:`finish_interrupted` completes a crash between the renames), and no WAL is
    ever left next to a file it does not belong to.
    """
    now = time.time()
    kept = _unused(path.with_name(f"{path.name}.damaged-{_stamp(now)}"))
    fresh, wal = _fresh(path), Path(f"{path}-wal")
    _remove(fresh)
    moved = wal_problem(path) is not None
    if moved:  # SQLite would ignore it anyway; it only gets in the way
        wal.replace(f"{kept}-wal")
    try:
        rows = _salvage(path, fresh, schema, time.monotonic() + SALVAGE_S) if path.exists() else 0
    except (sqlite3.Error, OSError) as exc:  # e.g. no room for the copy: start empty rather than not at all
        logger.error("outbox %s: could not copy the readable rows (%s); starting empty", path, exc)
        _remove(fresh)
        rows = 0
    if moved:  # one the reading made
        wal.unlink(missing_ok=True)
    with contextlib.suppress(FileNotFoundError):
        wal.replace(f"{kept}-wal")  # a WAL goes with its database
    with contextlib.suppress(FileNotFoundError):
        path.replace(kept)
    Path(f"{path}-shm").unlink(missing_ok=True)  # derived from the WAL; SQLite rebuilds it
    if fresh.exists():
        fresh.replace(path)
    fsync_dir(path.parent)
    _prune(path)
    return Recovery(now, str(kept if kept.exists() else Path(f"{kept}-wal")), rows, reason)


def finish_interrupted(path: Path) -> None:
    """Complete a recovery that a crash stopped between its renames.

    The fresh copy is renamed only after it was committed, and the damaged file moved only after
    that: a fresh copy without the outbox next to it is complete.
    """
    fresh = _fresh(path)
    if fresh.exists() and not path.exists():
        logger.warning("outbox %s: completing an interrupted recovery", path)
        Path(f"{path}-wal").unlink(missing_ok=True)
        Path(f"{path}-shm").unlink(missing_ok=True)
        fresh.replace(path)


def _fresh(path: Path) -> Path:
    return path.with_name(f"{path.name}.recovering")


def _stamp(now: float) -> str:
    """UTC time to the millisecond: names that sort by when the copy was kept."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


def _unused(candidate: Path) -> Path:
    n, name = 1, candidate
    while name.exists() or Path(f"{name}-wal").exists():
        n += 1
        name = candidate.with_name(f"{candidate.name}-{n}")
    return name


def _remove(db: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


def _prune(path: Path) -> None:
    """Keep the newest ``KEEP_DAMAGED`` damaged copies (their names sort by time)."""
    copies = sorted(
        p for p in path.parent.glob(f"{path.name}.damaged-*") if not p.name.endswith(("-wal", "-shm"))
    )
    for old in copies[:-KEEP_DAMAGED]:
        logger.info("outbox %s: removing an old damaged copy %s", path, old.name)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{old}{suffix}").unlink(missing_ok=True)


# -- reading what SQLite can still read --------------------------------------------------------
_COLUMNS = "topic, payload, qos, retain, created, attempts, seq"
_Row = tuple[str, bytes, int, int, float, int, int | None]


def _salvage(damaged: Path, fresh: Path, schema: str, deadline: float) -> int:
    """Copy the readable rows of ``damaged`` into a new database ``fresh``; how many."""
    src = sqlite3.connect(f"file:{damaged}?mode=ro", uri=True, isolation_level=None)
    dst = sqlite3.connect(str(fresh), isolation_level=None)
    try:
        src.text_factory = bytes  # a damaged text column must not stop the scan (decoded below)
        src.execute("PRAGMA writable_schema=ON")  # open a file shorter than its header says
        dst.executescript(schema)
        dst.execute("BEGIN")
        count, seqs = 0, dict[str, int]()
        batch: list[tuple[Any, ...]] = []
        for raw in _readable(src, "messages", _COLUMNS, deadline):
            row = _message(raw[1:])
            if row is None:
                continue
            count += 1
            if row[6] is not None:
                seqs[row[0]] = max(seqs.get(row[0], 0), row[6])
            batch.append((count, *row))
            if len(batch) >= _BATCH:
                _insert(dst, batch)
                batch = []
        _insert(dst, batch)
        meta = _meta(src, deadline)
        for topic, seq in seqs.items():
            meta[f"seq:{topic}"] = max(meta.get(f"seq:{topic}", 0), seq)
        dst.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", meta.items())
        dst.execute("COMMIT")
        return count
    finally:
        src.close()
        dst.close()


def _insert(db: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    db.executemany(
        "INSERT INTO messages (id, topic, payload, qos, retain, created, attempts, seq)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )


def _readable(db: sqlite3.Connection, table: str, columns: str, deadline: float) -> Iterator[tuple[Any, ...]]:
    """``(rowid, *columns)`` of every row of ``table`` that can be read, in rowid order."""
    sql = f"SELECT rowid, {columns} FROM {table} WHERE rowid > ? ORDER BY rowid LIMIT ?"

    def read(after: int, limit: int) -> list[tuple[Any, ...]] | None:
        """Rows past ``after`` in rising rowid order; None where damage stops the read."""
        try:
            rows = db.execute(sql, (after, limit)).fetchall()
        except sqlite3.DatabaseError:
            return None
        last = after  # a damaged tree may hand back rows out of order: that is damage too
        for i, row in enumerate(rows):
            if not isinstance(row[0], int) or row[0] <= last:
                return rows[:i] or None
            last = row[0]
        return rows

    after = _MIN_ROWID
    while time.monotonic() < deadline:
        rows = read(after, _BATCH) or read(after, 1)  # one at a time up to a bad page
        if rows is None:
            resume = _past_damage(read, after)
            if resume is None:
                return
            after = resume
            continue
        if not rows:
            return
        yield from rows
        after = rows[-1][0]
    logger.warning("outbox: reading the damaged file took too long; the rest is left in the kept copy")


def _past_damage(read: Any, after: int) -> int | None:
    """The smallest rowid bound past ``after`` from which a read works again (None: none does).

    Probes ``after + 1, + 2, + 4, ...`` until a read works, then bisects back between the last
    failing and the first working probe: a damaged page costs a few dozen reads, not one per rowid.
    """
    failing, step = after, 1
    while True:
        probe = after + step
        if probe >= _MAX_ROWID:
            return None
        if read(probe, 1) is not None:
            break
        failing, step = probe, step * 2
    while probe - failing > 1:
        middle = (failing + probe) // 2
        if read(middle, 1) is not None:
            probe = middle
        else:
            failing = middle
    return probe


def _message(raw: tuple[Any, ...]) -> _Row | None:
    """A complete message row, or None for one that damage changed beyond use."""
    topic, payload, qos, retain, created, attempts, seq = raw
    try:
        name = topic.decode() if isinstance(topic, bytes) else None
        body = json.loads(payload) if isinstance(payload, bytes) else None
    except (UnicodeDecodeError, ValueError):
        return None
    good = (
        name is not None
        and _publishable(name)
        and isinstance(body, dict)
        and qos in (0, 1, 2)
        and retain in (0, 1)
        and isinstance(created, (int, float))
        and math.isfinite(created)
        and isinstance(attempts, int)
        and attempts >= 0
        and (seq is None or (isinstance(seq, int) and seq > 0))
    )
    return (name, payload, qos, retain, float(created), attempts, seq) if good else None  # type: ignore[return-value]


def _publishable(topic: str) -> bool:
    """A topic name paho will publish to: 1..65535 bytes of UTF-8, no wildcard, no NUL."""
    return 0 < len(topic.encode()) <= 65535 and not any(c in topic for c in "+#\x00")


def _meta(db: sqlite3.Connection, deadline: float) -> dict[str, int]:
    """The counters of ``meta`` that can be read (seq per topic, dropped, rejected)."""
    out: dict[str, int] = {}
    for _rowid, key, value in _readable(db, "meta", "key, value", deadline):
        try:
            name = key.decode() if isinstance(key, bytes) else ""
        except UnicodeDecodeError:
            continue
        known = name in ("dropped", "rejected") or (name.startswith("seq:") and _publishable(name[4:]))
        if known and isinstance(value, int) and value >= 0:
            out[name] = value
    return out
