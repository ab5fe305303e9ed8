"""The fleet's records from hostile input: bounded, sanitised, every skip counted; the row keys."""

from __future__ import annotations

import json

from edge_runtime.fleet.records import MAX_ITEMS, MAX_TEXT, FleetState
from edge_runtime.fleet.view import row, table

ROW_KEYS = {
    "device",
    "online",
    "since",
    "offline_reason",
    "session",
    "runtime_version",
    "groups",
    "models",
    "update",
    "pipelines",
    "outbox_pending",
    "health_ts",
    "last_error",
}


def birth(**extra: object) -> bytes:
    body = {
        "state": "online",
        "session": "s1",
        "version": "0.1.0",
        "groups": ["lab"],
        "ts": 100.0,
        "models": {"m": {"name": "vib", "version": "1", "sha256": "x"}},
        "pipelines": ["p"],
    }
    return json.dumps({**body, **extra}).encode()


def test_a_device_from_its_three_topics() -> None:
    s = FleetState("edge")
    s.feed("edge/d1/status", birth(), retained=True)
    s.feed(
        "edge/d1/model/status",
        json.dumps(
            {
                "state": "active",
                "update": "u1",
                "name": "vib",
                "version": "2",
                "active_version": "2",
                "ts": 150.0,
            }
        ).encode(),
        retained=True,
    )
    health = {
        "ts": 160.0,
        "pipelines": {"p": {"fps": 2.0, "source_state": "streaming", "source_error": None}},
        "outbox": {"pending": 3, "error": None},
    }
    s.feed("edge/d1/health", json.dumps(health).encode())
    r = row(s.devices["d1"])
    assert set(r) == ROW_KEYS
    assert r["online"] is True and r["groups"] == ["lab"] and r["since"] == 100.0
    # the update committed after the birth: the model status's active_version wins
    assert r["models"] == {"m": {"name": "vib", "version": "2"}}
    assert r["update"]["state"] == "active" and r["pipelines"] == {"p": {"fps": 2.0, "state": "streaming"}}
    assert r["outbox_pending"] == 3 and r["last_error"] is None
    assert "d1" in table([r]) and "vib@2" in table([r])


def test_a_will_keeps_the_groups_and_an_old_style_will_keeps_what_the_birth_said() -> None:
    s = FleetState("edge")
    s.feed("edge/d1/status", birth())
    s.feed(
        "edge/d1/status", json.dumps({"state": "offline", "reason": "connection lost", "ts": 200}).encode()
    )
    r = row(s.devices["d1"])
    assert r["online"] is False and r["offline_reason"] == "connection lost" and r["groups"] == ["lab"]
    assert r["models"]["m"]["version"] == "1"


def test_a_failed_update_is_the_last_error_unless_health_names_one() -> None:
    s = FleetState("edge")
    s.feed("edge/d1/model/status", b'{"state": "rolled_back", "version": "3", "reason": "errors"}')
    assert row(s.devices["d1"])["last_error"] == "update 3: rolled_back: errors"
    s.feed("edge/d1/health", b'{"pipelines": {"p": {"source_error": "no camera"}}, "outbox": {}}')
    assert row(s.devices["d1"])["last_error"] == "p: no camera"


def test_hostile_messages_are_skipped_and_counted() -> None:
    s = FleetState("edge", max_bytes=64 * 1024)
    s.feed("edge/d1/status", b"\xff garbage")
    s.feed("edge/d1/status", b"[" * 30_000 + b"]" * 30_000)
    s.feed("edge/d1/status", b"{" + b" " * 70_000 + b"}")
    s.feed("edge/d1/status", b"[1, 2]")
    s.feed("edge/d1/status", b"")
    s.feed("edge/d1/extra/status", birth())
    s.feed("edge/" + "x" * 500 + "/status", birth())
    assert s.devices == {}
    assert dict(s.skipped) == {
        "not JSON or too deep": 2,
        "too big": 1,
        "not a JSON object": 1,
        "empty (cleared)": 1,
        "other topic": 1,
        "bad device id": 1,
    }


def test_values_are_cut_short_capped_and_made_printable() -> None:
    s = FleetState("edge")
    evil = "\x1b[2J\x1b[31mred" + "y" * 1000
    s.feed("edge/d\x1b1/status", birth())  # not printable: refused
    s.feed(
        "edge/d1/status",
        birth(
            groups=[evil, *map(str, range(100))],
            reason=evil,
            session={"a": 1},
            models={str(i): {"name": evil} for i in range(100)},
            ts="soon",
        ),
    )
    r = row(s.devices["d1"])
    assert list(s.devices) == ["d1"] and s.skipped["bad device id"] == 1
    assert len(r["groups"]) == MAX_ITEMS and all(len(g) <= MAX_TEXT and "\x1b" not in g for g in r["groups"])
    assert len(r["models"]) == MAX_ITEMS and r["session"] == "?" and r["since"] is None
    assert "\x1b" not in table([r])


def test_thousands_of_fake_devices_stop_at_the_limit() -> None:
    s = FleetState("edge", max_devices=1000)
    for i in range(20_000):
        s.feed(f"edge/fake-{i}/status", birth())
    assert len(s.devices) == 1000 and s.skipped["over the device limit"] == 19_000
