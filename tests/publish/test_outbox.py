"""The SQLite outbox: order, per-topic seq across restarts, drop policies, acknowledgements."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from edge_runtime.errors import OutboxUnavailableError
from edge_runtime.publish.outbox import Outbox, Outgoing


def _payload(seq: int) -> bytes:
    return json.dumps({"seq": seq}).encode()


def _seqs(box: Outbox) -> list[int]:
    return [json.loads(m.payload)["seq"] for m in box.fetch(0, 10_000)]


def test_messages_come_out_in_order_and_leave_only_when_acked(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    for _ in range(5):
        box.put("a", _payload)
    first = box.fetch(0, 3)
    assert [json.loads(m.payload)["seq"] for m in first] == [1, 2, 3]
    assert [m.id for m in box.fetch(first[-1].id, 10)] == [first[-1].id + 1, first[-1].id + 2]
    box.ack([first[0].id, first[2].id])
    assert _seqs(box) == [2, 4, 5] and box.pending == 3
    box.close()


def test_seq_is_per_topic_and_survives_reopening(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    assert box.put_many([Outgoing("a", _payload), Outgoing("b", _payload), Outgoing("a", _payload)]) == [
        1,
        1,
        2,
    ]
    box.ack(m.id for m in box.fetch(0, 10))
    box.close()
    again = Outbox(tmp_path / "o.db")
    assert again.put("a", _payload) == 3 and again.put("b", _payload) == 2
    assert again.pending == 2
    again.close()


def test_pending_messages_survive_reopening(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    for _ in range(3):
        box.put("a", _payload)
    box.close()
    again = Outbox(tmp_path / "o.db")
    assert again.pending == 3 and _seqs(again) == [1, 2, 3]
    again.close()


def test_drop_oldest_keeps_the_newest_and_counts_drops(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", max_messages=10, drop_policy="oldest")
    for _ in range(25):
        box.put("a", _payload)
    assert _seqs(box) == list(range(16, 26))
    assert box.dropped == 15 and box.pending == 10
    box.close()
    assert Outbox(tmp_path / "o.db").dropped == 15  # persisted


def test_drop_newest_keeps_the_oldest_but_still_consumes_seq(tmp_path: Path) -> None:
    """A dropped newest message still uses its seq, so subscribers see the gap."""
    box = Outbox(tmp_path / "o.db", max_messages=10, drop_policy="newest")
    for _ in range(25):
        box.put("a", _payload)
    assert _seqs(box) == list(range(1, 11)) and box.dropped == 15
    box.ack(m.id for m in box.fetch(0, 10))
    assert box.put("a", _payload) == 26
    assert _seqs(box) == [26]


def test_byte_cap_applies_too(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", max_messages=1000, max_bytes=64 * 1024)
    big = b"x" * 10_000
    for _ in range(10):
        box.put("a", lambda seq: big)
    assert box.pending == 6 and box.pending_bytes == 60_000 and box.dropped == 4


def test_refused_message_is_given_up_after_max_attempts(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", max_attempts=3)
    box.put("a", _payload)
    row = box.fetch(0, 1)[0].id
    assert not box.refused(row) and not box.refused(row)
    assert box.refused(row)
    assert box.pending == 0 and box.rejected == 1


def test_seq_survives_a_crash_both_while_rows_wait_and_after_they_are_deleted(tmp_path: Path) -> None:
    """A plain insert does not touch ``meta``: the seq is in the row itself until the row is
    deleted, and the deleting transaction keeps it in ``meta`` from then on."""
    box = Outbox(tmp_path / "o.db", max_messages=10, drop_policy="newest")
    for _ in range(3):
        box.put("a", _payload)
    crashed = Outbox(tmp_path / "o.db")  # what a restart sees: the first was never closed
    assert crashed.put("a", _payload) == 4
    crashed.ack(m.id for m in crashed.fetch(0, 10))
    crashed.close()
    again = Outbox(tmp_path / "o.db", max_messages=2, drop_policy="newest")
    assert again.pending == 0 and again.put("a", _payload) == 5
    for _ in range(3):  # seq 6 is stored, 7 and 8 are dropped: their seqs are used all the same
        again.put("a", _payload)
    del again  # no close
    last = Outbox(tmp_path / "o.db")
    assert _seqs(last) == [5, 6] and last.put("a", _payload) == 9
    last.close()


def test_an_outbox_written_before_seq_was_kept_in_the_rows_opens_and_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,"
        " payload BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL, created REAL NOT NULL,"
        " attempts INTEGER NOT NULL DEFAULT 0);"
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
        "INSERT INTO meta VALUES ('seq:a', 7), ('dropped', 2);"
        "INSERT INTO messages (topic, payload, qos, retain, created)"
        """ VALUES ('a', CAST('{"seq": 7}' AS BLOB), 1, 0, 0);"""
    )
    old.commit()
    old.close()
    box = Outbox(path)
    sql = box._db.execute("SELECT sql FROM sqlite_master WHERE name = 'messages'").fetchone()[0]
    assert "AUTOINCREMENT" not in sql.upper()  # the rows moved to the current table
    assert box.pending == 1 and box.dropped == 2 and box.put("a", _payload) == 8
    assert _seqs(box) == [7, 8]
    box.ack(m.id for m in box.fetch(0, 10))
    box.close()
    again = Outbox(path)
    assert again.pending == 0 and again.put("a", _payload) == 9
    again.close()


def test_a_message_costs_one_page_write(tmp_path: Path) -> None:
    """One WAL frame per committed message (a row's page), not three (the row's, AUTOINCREMENT's
    counter and the seq in ``meta``): a third of the flash wear, measured on the WAL itself."""
    box = Outbox(tmp_path / "o.db")
    box.put("a", _payload)  # the first commit writes the new tables' pages too
    wal = tmp_path / "o.db-wal"
    frame = 24 + 4096
    before = wal.stat().st_size
    for _ in range(50):
        box.put("a", _payload)
    frames = (wal.stat().st_size - before) / frame
    assert 50 <= frames <= 55, frames
    box.close()


def test_delivered_rows_make_room_before_anything_is_dropped(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", max_messages=5, drop_policy="oldest")
    for _ in range(5):
        box.put("a", _payload)
    box.delivered(m.id for m in box.fetch(0, 3))
    assert box.pending == 2 and box.delivered_waiting[0] == 3
    for _ in range(3):  # room is made by the delivered rows, not by dropping pending ones
        box.put("a", _payload)
    assert box.dropped == 0 and box.pending == 5 and box.delivered_waiting[0] == 0
    assert _seqs(box) == [4, 5, 6, 7, 8]
    box.delivered([box.fetch(0, 1)[0].id])
    box.flush_delivered()  # the publisher's turn when nothing new commits
    assert _seqs(box) == [5, 6, 7, 8] and box.pending == 4
    box.close()
    again = Outbox(tmp_path / "o.db")
    assert again.pending == 4 and again.put("a", _payload) == 9
    again.close()


def test_a_failed_commit_leaves_the_store_as_it_was_and_counts_the_refused_messages(tmp_path: Path) -> None:
    """A full disk (a trigger stands in for it) fails the insert: the drop policy's deletions and
    the delivered rows' deletion in that transaction are rolled back. A caller that can wait gets
    OutboxUnavailableError and nothing is used; otherwise the messages are dropped: counted, their
    seqs used (a gap). The next write that works ends the state."""
    box = Outbox(tmp_path / "o.db", max_messages=10, drop_policy="oldest", retry_s=0.0)
    for _ in range(10):
        box.put("a", lambda seq: b"x" * 100)
    box.delivered([box.fetch(0, 1)[0].id])
    box._db.execute(
        "CREATE TRIGGER full BEFORE INSERT ON messages WHEN NEW.topic = 'boom'"
        " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
    )
    for _ in range(3):
        with pytest.raises(OutboxUnavailableError, match="disk is full"):
            box.put_many([Outgoing("boom", _payload), Outgoing("boom", _payload)], drop=False)
    assert box.error is not None and "disk is full" in box.error and box.last_seq("boom") == 0
    rows, size = box._db.execute("SELECT COUNT(*), SUM(LENGTH(payload)) FROM messages").fetchone()
    assert (rows, size) == (10, 1000) and box.pending_bytes == 1000
    assert box.pending == 9 and box.delivered_waiting[0] == 1 and box.dropped == 0
    assert box.put_many([Outgoing("boom", _payload), Outgoing("boom", _payload)]) == [1, 2]
    assert box.dropped == 2 and box.pending == 9
    box._db.execute("DROP TRIGGER full")  # the disk is back
    assert box.put("boom", _payload) == 3  # the gap stays: seq 1 and 2 were dropped
    assert box.error is None and box.pending == 10 and box.dropped == 2  # the delivered row made room
    box.close()
    again = Outbox(tmp_path / "o.db")
    assert again.dropped == 2 and again.put("boom", _payload) == 4
    again.close()
