"""What the outbox keeps when it is full, and what goes: the drop policy, retained states, deletions.

Every function here runs inside the outbox's write transaction (its lock held) on the rows about
to be inserted, a copy of the :class:`~edge_runtime.publish.outbox_file.Tally` and the ``meta``
counters that the transaction commits.

Retained rows are states (``model/status``): only the newest of a topic stays queued; they do not
count against the caps, the drop policy never drops them, nor drops a result to make room for one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from edge_runtime.publish.outbox_file import Tally

Row = tuple[int, str, bytes, int, int, float, int]  # id, topic, payload, qos, retain, created, seq


def coalesce(rows: list[Row], tally: Tally) -> list[int]:
    """Retained rows: only the last of each topic in ``rows`` stays; the stored ids it replaces."""
    if not any(r[4] for r in rows):
        return []
    last = {r[1]: i for i, r in enumerate(rows) if r[4]}
    rows[:] = [r for i, r in enumerate(rows) if not r[4] or last[r[1]] == i]
    return [tally.retained[t] for t in last if t in tally.retained]


@dataclass(frozen=True, slots=True)
class Caps:
    """The outbox's size caps for data rows, and what goes when they are reached."""

    max_messages: int
    max_bytes: int
    drop_policy: Literal["oldest", "newest"]

    def over(self, rows: list[Row], tally: Tally) -> tuple[int, int]:
        """How far the data rows (not retained ones) would be over the caps: (messages, bytes)."""
        count = tally.rows - tally.control_rows - self.max_messages
        size = tally.size - tally.control_size - self.max_bytes
        for row in rows:
            if not row[4]:
                count, size = count + 1, size + len(row[2])
        return max(0, count), max(0, size)

    def make_room(self, db: sqlite3.Connection, rows: list[Row], meta: dict[str, int], tally: Tally) -> int:
        """Apply the drop policy: drops from ``rows`` in place (newest) or deletes the oldest
        stored data rows (oldest); returns how many messages were dropped (added to ``meta``).
        """
        over_count, over_bytes = self.over(rows, tally)
        if over_count <= 0 and over_bytes <= 0:
            return 0
        if self.drop_policy == "newest":
            count = tally.rows - tally.control_rows
            size = tally.size - tally.control_size
            keep: list[Row] = []
            for r in rows:
                if r[4] or (count + 1 <= self.max_messages and size + len(r[2]) <= self.max_bytes):
                    keep.append(r)
                    count, size = count + (not r[4]), size + (0 if r[4] else len(r[2]))
            dropped = len(rows) - len(keep)
            rows[:] = keep
        else:
            victims: list[int] = []
            freed = 0
            query = "SELECT id, LENGTH(payload) FROM messages WHERE NOT retain ORDER BY id"
            for row_id, length in db.execute(query):
                if len(victims) >= over_count and freed >= over_bytes:
                    break
                victims.append(row_id)
                freed += length
            db.executemany("DELETE FROM messages WHERE id = ?", ((v,) for v in victims))
            tally.rows, tally.size = tally.rows - len(victims), tally.size - freed
            dropped = len(victims)
        meta["dropped"] = int(meta.get("dropped", 0)) + dropped
        return dropped


def delete_rows(db: sqlite3.Connection, ids: Iterable[int], meta: dict[str, int], tally: Tally) -> None:
    """Delete rows, counting them out of ``tally``.

    The seq of each topic that lost rows is written to ``meta``'s table: it must outlive its rows.
    """
    id_list = list(ids)
    topics: set[str] = set()
    for at in range(0, len(id_list), 500):
        chunk = id_list[at : at + 500]
        marks = ",".join("?" * len(chunk))
        gone = db.execute(
            f"DELETE FROM messages WHERE id IN ({marks}) RETURNING id, topic, retain, LENGTH(payload)",
            chunk,
        ).fetchall()
        # an id may be gone already (dropped by the size policy, or a state replaced)
        for row_id, topic, retain, length in gone:
            tally.gone(int(row_id), str(topic), int(retain), int(length))
            topics.add(str(topic))
    seqs = [(k, meta[k]) for k in (f"seq:{t}" for t in topics) if k in meta]
    db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", seqs)
