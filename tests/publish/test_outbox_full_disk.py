"""A full disk under the outbox is a state: refused messages are counted and leave seq gaps,
the reason is visible, one log line per change, and writes resume by themselves.

The outbox lives on a real small file system (a tmpfs mounted for the test) that the test fills.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import pytest

from edge_runtime.errors import OutboxUnavailableError
from edge_runtime.publish.outbox import Outbox

from ..broker import wait_for
from .conftest import fill, free_bytes

PRED, STATUS = "edge/d/predictions/front", "edge/d/model/status"


def _pred(seq: int) -> bytes:
    return json.dumps({"seq": seq, "pad": "x" * 400}).encode()


def _seqs(box: Outbox) -> list[int]:
    return [json.loads(m.payload)["seq"] for m in box.fetch(0, 100_000) if m.topic == PRED]


def _state_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    words = ("nearly full", "cannot write", "writes again")
    return [r.getMessage() for r in caplog.records if any(w in r.getMessage() for w in words)]


def test_below_the_reserve_results_are_refused_and_counted_while_the_store_still_writes(
    small_fs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Free space under the reserve: new results are dropped (counted, a seq gap) or refused to a
    caller that waits; deletions, retained states and the counters still commit in the reserve.
    When space returns, results are stored again, and the gap stays exactly what was counted."""
    path = small_fs / "outbox.db"
    box = Outbox(path, reserve_bytes=2 << 20, check_s=0.0)
    for _ in range(20):
        box.put(PRED, _pred)
    with caplog.at_level(logging.INFO):
        filler = fill(small_fs, leave=1 << 20)
        assert box.put(PRED, _pred) == 21 and box.put(PRED, _pred) == 22  # dropped, seqs used
        assert box.error is not None and "disk nearly full" in box.error
        with pytest.raises(OutboxUnavailableError, match="disk nearly full"):
            box.put(PRED, _pred, drop=False)
        assert box.dropped == 2 and _seqs(box) == list(range(1, 21))
        box.put(STATUS, lambda _s: b'{"state": "active"}', retain=True)  # states still commit
        box.ack(m.id for m in box.fetch(0, 5))  # and so do deletions, with the counters
        with sqlite3.connect(path) as other:  # what a crash now would leave
            assert dict(other.execute("SELECT key, value FROM meta"))["dropped"] == 2
        filler.unlink()
        assert box.put(PRED, _pred) == 23
        assert box.error is None and _seqs(box) == [*range(6, 21), 23]
    lines = _state_lines(caplog)
    assert len(lines) == 2 and "nearly full" in lines[0] and "writes again" in lines[1], lines
    assert "2 message(s) dropped meanwhile" in lines[1]
    box.close()


def test_a_disk_that_cannot_write_at_all_loses_nothing_it_stored_and_counts_what_it_refused(
    small_fs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No reserve, no byte free: commits fail. Refused results are counted in memory (written
    with the first commit that works), delivered rows whose deletion fails are never sent again,
    and one line says so; the outbox retries by itself once space is back."""
    path = small_fs / "outbox.db"
    box = Outbox(path, reserve_bytes=0, retry_s=0.05)
    for _ in range(10):
        box.put(PRED, _pred)
    first = box.fetch(0, 3)
    with caplog.at_level(logging.INFO):
        filler = fill(small_fs)
        stored = 10
        while not box.dropped and stored < 60:  # until a commit needs a page the disk no longer has
            box.put(PRED, _pred)
            stored += not box.dropped
        assert box.dropped == 1 and box.error is not None and "cannot write" in box.error
        box.delivered(m.id for m in first)
        box.flush_delivered()  # fails: the rows stay, marked delivered
        assert box.pending == stored - 3 and box.delivered_waiting[0] == 3
        assert _seqs(box) == list(range(4, stored + 1))  # delivered rows are not sent again
        for _ in range(100):
            box.put(PRED, _pred)  # no log line each: counted
        dropped = box.dropped
        filler.unlink()
        assert wait_for(lambda: box.put(PRED, _pred) > 0 and box.error is None, 5)
        box.flush_delivered()
    lines = _state_lines(caplog)
    assert len(lines) == 2 and "cannot write" in lines[0] and "writes again" in lines[1], lines
    kept, last = _seqs(box), box.last_seq(PRED)
    assert kept[0] == 4 and box.delivered_waiting[0] == 0
    assert last - 3 - len(kept) == box.dropped >= dropped  # every gap counted
    box.close()
    again = Outbox(path)  # what was only in memory was written with the first commit that worked
    assert again.dropped == box.dropped and again.put(PRED, _pred) == last + 1
    again.close()


def test_an_outbox_on_a_full_disk_still_opens(small_fs: Path) -> None:
    """A restart while the disk is full: the daemon starts (reading needs no space)."""
    path = small_fs / "outbox.db"
    box = Outbox(path)
    for _ in range(5):
        box.put(PRED, _pred)
    box.close()
    fill(small_fs)
    assert free_bytes(small_fs) < 4096
    again = Outbox(path, reserve_bytes=1 << 20)
    assert again.pending == 5 and again.put(PRED, _pred) == 6 and again.dropped == 1
    again.close()
