"""A damaged outbox file at open: kept aside, its readable rows queued again in order, a fresh start.

Every variant is a real outbox file written by the Outbox itself, then damaged on disk.
"""

from __future__ import annotations

import json
import logging
import random
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.publish import salvage
from edge_runtime.publish.outbox import Outbox, Outgoing

PRED, HEALTH, STATUS = "edge/d/predictions/front", "edge/d/health", "edge/d/model/status"
ROWS = 600  # predictions; a health message every 10th, one retained status at the end
PAGE = 4096


def _payload(topic: str) -> Callable[[int], bytes]:
    return lambda seq: json.dumps({"seq": seq, "topic": topic, "pad": "x" * 300}).encode()


def good_outbox(path: Path) -> dict[str, list[bytes]]:
    """A closed outbox with pending predictions, health and a status; its payloads per topic.

    The first 20 predictions were delivered and deleted, so ``meta`` holds their topic's seq too.
    """
    box = Outbox(path)
    for i in range(ROWS):
        items = [Outgoing(PRED, _payload(PRED))]
        if i % 10 == 9:
            items.append(Outgoing(HEALTH, _payload(HEALTH)))
        box.put_many(items)
    box.put(STATUS, lambda _seq: b'{"state": "active"}', retain=True)
    box.ack([m.id for m in box.fetch(0, 100) if m.topic == PRED][:20])
    payloads: dict[str, list[bytes]] = {}
    for m in box.fetch(0, 10 * ROWS):
        payloads.setdefault(m.topic, []).append(m.payload)
    box.close()
    return payloads


def _overwrite(at: int, size: int) -> Callable[[bytes], bytes]:
    def damage(data: bytes) -> bytes:
        return data[:at] + random.Random(at).randbytes(size) + data[at + size :]

    return damage


DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "empty file": lambda data: b"",
    "garbage header": _overwrite(0, 100),
    "random bytes": lambda data: random.Random(1).randbytes(len(data)),
    "truncated to half": lambda data: data[: len(data) // 2],
    "truncated to 1000 bytes": lambda data: data[:1000],
    "garbage in the middle": lambda data: _overwrite((len(data) // PAGE // 2) * PAGE, 2 * PAGE)(data),
}


def damaged(tmp_path: Path, variant: str) -> tuple[Path, dict[str, list[bytes]], bytes]:
    """An outbox damaged as ``variant`` says; its former payloads and the damaged bytes."""
    path = tmp_path / "outbox.db"
    payloads = good_outbox(path)
    if variant == "garbage WAL":
        Path(f"{path}-wal").write_bytes(random.Random(2).randbytes(64 * 1024))
    else:
        path.write_bytes(DAMAGE[variant](path.read_bytes()))
    return path, payloads, path.read_bytes()


def queued(box: Outbox) -> list[tuple[str, bytes, bool]]:
    return [(m.topic, m.payload, m.retain) for m in box.fetch(0, 10 * ROWS)]


@pytest.mark.parametrize("variant", [*DAMAGE, "garbage WAL"])
def test_a_damaged_outbox_is_kept_aside_and_its_readable_rows_are_queued_again(
    tmp_path: Path, variant: str, caplog: pytest.LogCaptureFixture
) -> None:
    path, before, damaged_bytes = damaged(tmp_path, variant)
    with caplog.at_level(logging.INFO):
        box = Outbox(path)
    assert box.recovered is not None, "the damage went unseen"
    kept = Path(box.recovered.kept_as)
    assert kept.parent == tmp_path and kept.name.startswith("outbox.db.damaged-")
    assert kept.read_bytes() == damaged_bytes, "the damaged file is kept as it was found"
    if variant == "garbage WAL":
        assert Path(f"{kept}-wal").read_bytes() == random.Random(2).randbytes(64 * 1024)
    assert "damaged" in caplog.text and box.recovered.kept_as in caplog.text
    rows = queued(box)
    assert box.recovered.rows == len(rows) == box.pending
    # what came back is what was there, in the same order, each topic's seqs rising
    for topic in (PRED, HEALTH):
        again = [p for t, p, _ in rows if t == topic]
        assert again == [p for p in before[topic] if p in again]
        seqs = [json.loads(p)["seq"] for p in again]
        assert seqs == sorted(seqs)
    counts = {t: sum(1 for r in rows if r[0] == t) for t in (PRED, HEALTH, STATUS)}
    if variant == "garbage WAL":  # the database itself was sound: every row is back
        assert counts == {PRED: ROWS - 20, HEALTH: ROWS // 10, STATUS: 1}
    elif variant == "garbage in the middle":  # two pages lost, the rest (both sides) back
        preds = [json.loads(p)["seq"] for t, p, _ in rows if t == PRED]
        assert ROWS - 20 - 40 <= len(preds) < ROWS - 20 and preds[0] == 21 and preds[-1] == ROWS
        assert counts[STATUS] == 1 and rows[-1] == (STATUS, b'{"state": "active"}', True)
    elif variant == "truncated to half":  # the first half of the rows
        preds = [json.loads(p)["seq"] for t, p, _ in rows if t == PRED]
        assert 0 < len(preds) < ROWS - 20 and preds[0] == 21
    else:  # nothing readable
        assert rows == []
    # seq goes on after the last one known (meta's, or the rows'), never back
    last = max((json.loads(p)["seq"] for t, p, _ in rows if t == PRED), default=0)
    meta_kept = variant in ("garbage WAL", "garbage in the middle", "truncated to half")
    assert box.put(PRED, _payload(PRED)) == (ROWS + 1 if meta_kept else last + 1)
    box.close()
    again = Outbox(path)
    assert again.recovered is None and again.pending == len(rows) + 1
    again.close()


def test_rows_that_damage_changed_beyond_use_are_not_queued_again(tmp_path: Path) -> None:
    """A topic paho cannot publish to, a payload that is not a JSON object, a bad qos: skipped."""
    path = tmp_path / "outbox.db"
    box = Outbox(path)
    box.put(PRED, _payload(PRED))
    box.close()
    db = sqlite3.connect(path)
    with db:
        db.executemany(
            "INSERT INTO messages (topic, payload, qos, retain, created, seq) VALUES (?, ?, ?, 0, 0, ?)",
            [
                ("edge/+/x", b"{}", 1, 2),
                ("edge/d/x", b"\xff\xfe", 1, 3),
                ("edge/d/x", b"[1]", 1, 4),
                ("edge/d/x", b"{}", 7, 5),
                ("edge/d/x", b'{"ok": 1}', 1, 6),
            ],
        )
    db.close()  # the rows reach the database file itself
    Path(f"{path}-wal").write_bytes(b"not a WAL")  # damage that sends it through the recovery
    box = Outbox(path)
    assert box.recovered is not None and box.recovered.rows == 2
    assert [(m.topic, m.payload) for m in box.fetch(0, 10)] == [
        (PRED, _payload(PRED)(1)),
        ("edge/d/x", b'{"ok": 1}'),
    ]
    box.close()


def test_only_the_newest_damaged_copies_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    kept = []
    for _ in range(salvage.KEEP_DAMAGED + 2):
        path.write_bytes(b"garbage" * 1000)
        box = Outbox(path)
        assert box.recovered is not None
        kept.append(box.recovered.kept_as)
        box.close()
    left = sorted(str(p) for p in tmp_path.glob("outbox.db.damaged-*"))
    assert len(set(kept)) == len(kept) and left == sorted(kept[-salvage.KEEP_DAMAGED :])


def test_a_sound_outbox_and_a_new_one_are_not_taken_for_damaged(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "new.db")
    assert box.recovered is None
    box.put(PRED, _payload(PRED))
    del box  # no close: a crash, the WAL holds the row
    again = Outbox(tmp_path / "new.db")
    assert again.recovered is None and again.pending == 1
    again.close()
    assert list(tmp_path.glob("*.damaged-*")) == []


def test_an_outbox_that_cannot_be_opened_for_another_reason_is_left_alone(tmp_path: Path) -> None:
    """Not damage (here: a directory where the file should be): a clear error, nothing moved."""
    (tmp_path / "outbox.db").mkdir()
    with pytest.raises(EdgeRuntimeError, match="cannot open the outbox"):
        Outbox(tmp_path / "outbox.db")
    assert (tmp_path / "outbox.db").is_dir() and list(tmp_path.glob("*.damaged-*")) == []


def test_the_wal_header_check_knows_sqlites_own_wal(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    box = Outbox(path)
    box.put(PRED, _payload(PRED))
    wal = Path(f"{path}-wal")
    assert wal.stat().st_size > 32 and salvage.wal_problem(path) is None
    head = bytearray(wal.read_bytes()[:32])
    head[12] ^= 1  # the checkpoint sequence: covered by the header's checksum
    assert salvage.wal_problem(path) is None
    other = tmp_path / "other.db"
    Path(f"{other}-wal").write_bytes(bytes(head))
    assert "does not check" in str(salvage.wal_problem(other))
    box.close()
