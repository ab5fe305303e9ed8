"""Retained states (model/status, config/reported) coalesce in the outbox and never cost a result."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from edge_runtime.config.sections import MqttConfig
from edge_runtime.publish.mqtt import MqttLink
from edge_runtime.publish.outbox import Outbox, Outgoing
from edge_runtime.publish.publisher import Publisher
from edge_runtime.publish.topics import Topics

from ..broker import Broker, Recorder, wait_for

PRED, STATUS, REPORTED = "t/dev/predictions/front", "t/dev/model/status", "t/dev/config/reported"


def _pred(seq: int) -> bytes:
    return json.dumps({"seq": seq}).encode()


def _state(n: int) -> bytes:
    return json.dumps({"n": n}).encode()


def _rows(box: Outbox) -> list[tuple[str, bytes, bool]]:
    return [(m.topic, m.payload, m.retain) for m in box.fetch(0, 100_000)]


def test_a_newer_retained_message_replaces_the_queued_one_of_its_topic(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    box.put(STATUS, lambda _s: _state(1), retain=True)
    box.put(PRED, _pred)
    box.put(STATUS, lambda _s: _state(2), retain=True)
    batch = [  # within one batch too: the last of each topic stays
        Outgoing(STATUS, lambda _s: _state(3), retain=True),
        Outgoing(REPORTED, lambda _s: _state(4), retain=True),
        Outgoing(STATUS, lambda _s: _state(5), retain=True),
    ]
    box.put_many(batch)
    assert _rows(box) == [(PRED, _pred(1), False), (REPORTED, _state(4), True), (STATUS, _state(5), True)]
    assert box.pending == 3 and box.dropped == 0
    box.close()
    again = Outbox(tmp_path / "o.db")
    again.put(REPORTED, lambda _s: _state(6), retain=True)
    assert _rows(again) == [(PRED, _pred(1), False), (STATUS, _state(5), True), (REPORTED, _state(6), True)]
    again.close()


def test_a_delivered_state_is_not_sent_again_when_a_newer_one_replaces_it(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    box.put(STATUS, lambda _s: _state(1), retain=True)
    box.delivered([box.fetch(0, 1)[0].id])  # acknowledged, not deleted yet
    box.put(STATUS, lambda _s: _state(2), retain=True)
    assert _rows(box) == [(STATUS, _state(2), True)] and box.pending == 1
    box.flush_delivered()
    assert box.pending == 1 and box.delivered_waiting[0] == 0
    box.close()


def test_retained_rows_left_by_an_earlier_version_are_coalesced_at_open(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    Outbox(path).close()
    db = sqlite3.connect(path)
    with db:
        db.executemany(
            "INSERT INTO messages (topic, payload, qos, retain, created) VALUES (?, ?, 1, ?, 0)",
            [(STATUS, _state(n), 1) for n in range(500)] + [(PRED, _pred(1), 0)],
        )
    db.close()
    box = Outbox(path, max_messages=10)
    assert _rows(box) == [(STATUS, _state(499), True), (PRED, _pred(1), False)]
    box.close()


@pytest.mark.parametrize("policy", ["oldest", "newest"])
def test_ten_thousand_states_while_results_flow_drop_no_result(
    tmp_path: Path, broker: Broker, recorder: Recorder, policy: str
) -> None:
    """The broker is away: 10,000 retained states on two topics go into a small outbox while a
    pipeline commits 150 results. No result is dropped (states neither count against the cap nor
    make room), one row per state topic is queued; once the broker is there, every result
    arrives in order with contiguous seqs, and each topic's last state."""
    results, cap = 150, 160
    box = Outbox(tmp_path / "o.db", max_messages=cap, max_bytes=64 * 1024, drop_policy=policy)

    def pipeline() -> None:
        for _ in range(results):
            box.put(PRED, _pred)
            time.sleep(0.002)

    flow = threading.Thread(target=pipeline)
    flow.start()
    for n in range(10_000):
        box.put(STATUS if n % 2 else REPORTED, lambda _s, n=n: _state(n), retain=True)
    flow.join()
    rows = _rows(box)
    assert box.dropped == 0 and box.pending == results + 2
    assert [json.loads(p)["seq"] for t, p, _ in rows if t == PRED] == list(range(1, results + 1))
    assert sorted((t, p) for t, p, r in rows if r) == [(REPORTED, _state(9998)), (STATUS, _state(9999))]

    cfg = MqttConfig(host="127.0.0.1", port=broker.port, topic_prefix="t")
    link = MqttLink(cfg, Topics("t", "dev"), client_id="dev", groups=[], status=dict)
    publisher = Publisher(box, link)
    link.start()
    publisher.start()
    try:
        assert wait_for(lambda: publisher.idle() and len(recorder.on("/predictions/front")) >= results, 30)
    finally:
        publisher.stop()
        link.stop()
        box.close()
    assert [p["seq"] for p in recorder.on("/predictions/front")] == list(range(1, results + 1))
    assert recorder.on("/model/status") == [{"n": 9999}] and recorder.on("/config/reported") == [{"n": 9998}]
