"""A staged rollout's course against scripted devices (the MQTT client faked at its seam).

Each fake device answers the retained update on its topic with the state it is scripted for
(``active``, ``rejected``, ``rolled_back``), or not at all while offline; the rollout's waves,
abort rule, clearing and exit code are checked without a broker.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass

from edge_runtime.commands.staged import StagedPush, plan_from_args
from edge_runtime.fleet.records import FleetState
from edge_runtime.update.manifest import Manifest

UID = "0123456789abcdef"
MANIFEST = Manifest.model_validate(
    {"format": 1, "name": "vib", "version": "2", "sha256": "0" * 64, "size": 10, "target": None,
     "created": 0.0, "expires": None}
)  # fmt: skip


@dataclass
class Release:
    uid: str = UID
    payload: str = '{"manifest": "..."}'
    manifest: Manifest = MANIFEST


class FakeFleet:
    """Stands in for FleetWatcher: births at the start, a scripted answer to each publish."""

    def __init__(self, script: dict[str, str | None], serving: dict[str, str] | None = None) -> None:
        self.state = FleetState("edge")
        self.script = script  # device -> its answer; None: offline
        self.published: list[tuple[str, bytes | str, bool]] = []
        self._due: list[tuple[str, bytes]] = []
        for device, answer in script.items():
            birth = {"state": "online" if answer else "offline", "groups": ["g"], "ts": 1.0}
            version = (serving or {}).get(device, "1")
            birth["models"] = {"m": {"name": "vib", "version": version}}
            self.state.feed(f"edge/{device}/status", json.dumps(birth).encode(), retained=True)

    def drain(self, until: float, quiet: float | None = None) -> int:
        due, self._due = self._due, []
        for topic, payload in due:
            self.state.feed(topic, payload)
        if not due and quiet is None:
            time.sleep(max(0.0, min(0.02, until - time.monotonic())))
        return len(due)

    def publish(self, topic: str, payload: bytes | str, *, retain: bool = False, timeout: float = 10) -> None:
        self.published.append((topic, payload, retain))
        device = topic.split("/")[1]
        answer = self.script.get(device)
        if payload and answer:
            body = {"state": answer, "update": UID, "name": "vib", "version": "2", "reason": None, "ts": 2.0}
            self._due.append((f"edge/{device}/model/status", json.dumps(body).encode()))


def rollout(
    script: dict[str, str | None], waves: str, max_failures: str, serving: dict[str, str] | None = None
) -> tuple[int, FakeFleet, list[str]]:
    args = argparse.Namespace(
        group="g", prefix="edge", wait=None, no_retain=False, wave_timeout=0.3, waves=waves,
        max_failures=max_failures,
    )  # fmt: skip
    fleet, lines = FakeFleet(script, serving), []
    code = StagedPush(args, fleet, Release(), plan_from_args(args), out=lines.append).run()  # type: ignore[arg-type]
    return code, fleet, lines


def test_all_active_wave_by_wave_exits_0() -> None:
    code, fleet, lines = rollout({f"d{i}": "active" for i in range(5)}, "1,50%,100%", "0")
    assert code == 0
    assert [t for t, _, retain in fleet.published if retain] == [f"edge/d{i}/model/update" for i in range(5)]
    assert "wave 1/3: 1 device(s): d0" in lines and "wave 3/3: 2 device(s): d3, d4" in lines
    assert lines[-1] == "5 active, 0 failed, 0 pending, 0 not reached"


def test_failures_within_the_limit_let_the_rollout_go_on() -> None:
    script = {f"d{i}": "active" for i in range(10)} | {"d3": "rolled_back"}
    code, fleet, lines = rollout(script, "1,50%,100%", "20%")  # after wave 2: 1 of 5 (20% of 5 = 1)
    assert code == 1  # one targeted device is not active
    assert len([p for p in fleet.published if p[1]]) == 10 and not [p for p in fleet.published if not p[1]]
    assert "9 active, 1 failed, 0 pending, 0 not reached" in lines


def test_a_percentage_rounds_down_over_the_devices_targeted_so_far() -> None:
    script = {f"d{i}": "active" for i in range(10)} | {"d3": "rolled_back"}
    code, fleet, lines = rollout(script, "1,50%,100%", "10%")  # after wave 2: 1 of 5 > 10% of 5 = 0
    assert (
        code == 1 and "stopped after wave 2/3: 1 failed of 5 targeted, more than --max-failures 10%" in lines
    )
    assert len([p for p in fleet.published if p[1]]) == 5


def test_past_the_limit_the_rollout_stops_and_clears_what_is_not_active() -> None:
    script = {"a": "active", "b": "rejected", "c": None, "d": "active", "e": "active", "f": "active"}
    code, fleet, lines = rollout(script, "1,50%,100%", "0")
    assert code == 1
    assert "stopped after wave 2/3: 1 failed of 3 targeted, more than --max-failures 0" in lines
    sent = [t for t, p, _ in fleet.published if p]
    cleared = [t for t, p, _ in fleet.published if not p]
    assert sent == ["edge/a/model/update", "edge/b/model/update", "edge/c/model/update"]
    assert cleared == ["edge/b/model/update", "edge/c/model/update"]  # d, e, f: never sent anything
    assert "1 active, 1 failed, 1 pending, 3 not reached" in lines


def test_offline_devices_are_pending_not_failures() -> None:
    code, _, lines = rollout({"a": "active", "b": None, "c": "active"}, "100%", "0")
    assert code == 1 and "2 active, 0 failed, 1 pending, 0 not reached" in lines
    assert not any(line.startswith("stopped") for line in lines)
    assert any("pending devices get the update when they return" in line for line in lines)


def test_an_unknown_group_sends_nothing() -> None:
    code, fleet, lines = rollout({}, "100%", "0")
    assert code == 1 and fleet.published == [] and "nothing sent" in lines[0]


def test_a_device_that_serves_the_version_already_is_active_without_a_message() -> None:
    code, fleet, lines = rollout({"a": "active", "b": "rejected"}, "100%", "0", serving={"b": "2"})
    assert code == 0 and [t for t, _, _ in fleet.published] == ["edge/a/model/update"]
    assert "b: already serves version 2; nothing sent" in lines
