"""Desired state end to end: a device that is off while ``push --group`` runs gets the update when it
starts, from ``fleet serve`` alone; restarts repeat nothing; an expired retained manifest is refused
once. Real mosquitto, real daemons (the person detector on a looping video), the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.broker import Broker, Recorder, wait_for
from tests.daemon import ROOT, cli
from tests.update.test_updates import Device, kit, signed, update_id  # noqa: F401 (kit: a fixture)

pytestmark = pytest.mark.slow


class Serve:
    """``edge-runtime fleet serve DIR`` in a child process, its log in a file."""

    def __init__(self, folder: Path, port: int, log: Path) -> None:
        self.log_path = log
        args = [str(folder), "--broker", f"127.0.0.1:{port}", "--rescan", "1"]
        with log.open("ab") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge_runtime", "fleet", "serve", *args],
                stdout=fh,
                stderr=fh,
                cwd=ROOT,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(15)


@pytest.fixture
def serve(tmp_path: Path, broker: Broker) -> Iterator[Serve]:
    (tmp_path / "bundles").mkdir()
    s = Serve(tmp_path / "bundles", broker.port, tmp_path / "serve.log")
    yield s
    s.stop()


def _push_group(bundle: Path, broker: Broker) -> subprocess.CompletedProcess[str]:
    """``push --group g`` with no device online: it publishes (retained) and exits."""
    done = cli("push", bundle, "--group", "g", "--broker", f"127.0.0.1:{broker.port}", "--serve-timeout", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def _quiet_after_restart(device: Device, update: str) -> None:
    """Restart the daemon; once it has served 20 frames (connected, the broker's copies handled),
    no status about ``update`` was published and nothing was downloaded again."""
    before = len(device.statuses(update))
    device.process.terminate()  # type: ignore[union-attr]
    device.restart()
    seen = len(device.predictions())
    assert wait_for(lambda: len(device.predictions()) >= seen + 20, 60), device.log()[-2000:]
    assert len(device.statuses(update)) == before, device.statuses(update)[before:]


def test_a_device_off_during_the_push_updates_when_it_starts_with_only_fleet_serve(
    tmp_path: Path,
    broker: Broker,
    kit: dict[str, Path],  # noqa: F811
    serve: Serve,
) -> None:
    """The group's v2 is pushed while the device is off (push exits); the device starts later,
    finds the retained manifest, gets the chunks from ``fleet serve`` and becomes active on v2.
    A restart then repeats nothing. An expiring v3 pushed while it is off again is refused with
    its reason once, at the next start; the restart after that is silent too."""
    device = Device(tmp_path / "dev", broker, kit, device="cam-a", groups=["g"])
    try:
        v2 = signed(kit, tmp_path / "bundles" / "person-2.tar")
        uid = update_id(v2)
        assert "no device of the group is online" in _push_group(v2, broker).stderr
        assert wait_for(lambda: f"serving person-2.tar: update {uid}" in serve.log(), 30), serve.log()
        started = time.time()
        device.start()
        active = device.final(uid, timeout=120)
        assert active["state"] == "active" and active["version"] == "2", (active, device.log()[-3000:])
        print(f"\nfleet serve only: device start -> active on v2 in {active['ts'] - started:.1f} s")
        assert wait_for(lambda: device.versions_after(active["ts"] + 0.5) == {"2"}, 20)
        _quiet_after_restart(device, uid)
        assert device.log().count("accepted; downloading") == 1, device.log()[-3000:]

        device.process.terminate()  # type: ignore[union-attr]
        v3 = signed(kit, tmp_path / "bundles" / "person-3.tar", version="3", sign_args=("--expires-in", "2"))
        expires = json.loads(json.loads(Path(f"{v3}.manifest.json").read_text())["manifest"])["expires"]
        _push_group(v3, broker)
        assert wait_for(lambda: time.time() > expires + 1, 30)
        uid3 = update_id(v3)
        device.restart()
        refused = device.final(uid3, timeout=60)
        assert refused["state"] == "rejected" and "expired" in refused["reason"], refused
        assert refused["active_version"] == "2"
        _quiet_after_restart(device, uid3)
        assert len(device.statuses(uid3)) == 1
    finally:
        device.stop()
    assert serve.stop() == 0
    assert "fleet serve: stopped" in serve.log(), serve.log()[-2000:]


def test_the_update_path_through_a_mosquitto_bridge(
    tmp_path: Path,
    broker: Broker,
    kit: dict[str, Path],  # noqa: F811
    serve: Serve,
) -> None:
    """Operator (``push``) and ``fleet serve`` on a central broker, the device on a site broker
    bridged to it with the topic lines of docs/broker.md: the retained manifest crosses the bridge
    to a device that starts after the push, its chunk requests reach ``fleet serve``, the chunks
    and its states cross back, and it becomes active."""
    central = broker
    bridge = (
        f"connection central\naddress 127.0.0.1:{central.port}\n"
        "topic edge/+/model/update in 1\ntopic edge/groups/+/model/update in 1\n"
        "topic edge/updates/+/chunk/+ in 1\ntopic edge/updates/+/request out 0\n"
        "topic edge/# out 1\n"
    )
    (tmp_path / "site").mkdir()
    site = Broker(tmp_path / "site", extra=bridge).start()
    status = None
    try:
        v2 = signed(kit, tmp_path / "bundles" / "person-2.tar")
        uid = update_id(v2)
        _push_group(v2, central)
        assert wait_for(lambda: f"serving person-2.tar: update {uid}" in serve.log(), 30), serve.log()
        device = Device(tmp_path / "dev", site, kit, device="cam-b", groups=["g"])
        operator = Recorder(central.port, "edge/cam-b/model/status")
        try:
            started = time.time()
            device.start()
            status = device.final(uid, timeout=120)
            print(f"\nthrough a bridge: device start -> active on v2 in {status['ts'] - started:.1f} s")
            seen = lambda: [s.get("state") for s in operator.on("/model/status") if isinstance(s, dict)]  # noqa: E731
            assert wait_for(lambda: "active" in seen(), 30), seen()  # the operator's side sees it
        finally:
            device.stop()
            operator.close()
        assert status["state"] == "active", (status, device.log()[-3000:])
    finally:
        site.kill()
