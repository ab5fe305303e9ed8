"""The SQLite outbox: order, per-topic seq across restarts, drop policies, acknowledgements."""

from __future__ import annotations

import json
from pathlib import Path

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
