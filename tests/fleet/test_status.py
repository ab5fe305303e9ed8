"""``fleet status`` against real daemons and a broker full of hostile retained messages.

Two real daemons (the vibration detector, group ``sim``) beside 3,000 fake retained births, a
2 MiB retained status, a 30,000-deep JSON one, garbage on a model status and terminal escapes:
the command exits 0, lists the real devices right (online, groups, version, fps from their
health), counts what it skipped, and stays within ``--max-devices``.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.broker import Broker, wait_for
from tests.daemon import ROOT, cli
from tests.timeouts import scaled

sys.path.insert(0, str(ROOT / "scripts"))
import fleet_kit  # the simulated fleet's devices

pytestmark = pytest.mark.slow
FAKES = 3000


def _hostile_retained(port: int) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="hostile", protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    birth = {"state": "online", "groups": ["other"], "models": {"m": {"name": "x", "version": "9"}}, "ts": 1}
    infos = [
        client.publish(f"edge/fake-{i:04d}/status", json.dumps(birth), qos=1, retain=True)
        for i in range(FAKES)
    ]
    evil = {"state": "offline", "reason": "\x1b[2J\x1b]0;owned\x07", "groups": ["sim"]}
    infos = [
        client.publish("edge/huge/status", b'{"state": "online", "x": "' + b"A" * 2_000_000 + b'"}', 1, True),
        client.publish("edge/deep/status", b"[" * 30_000 + b"]" * 30_000, qos=1, retain=True),
        client.publish("edge/junk/model/status", b"\x00\xff not json", qos=1, retain=True),
        client.publish("edge/evil/status", json.dumps(evil), qos=1, retain=True),
    ]
    for info in infos:
        info.wait_for_publish(30)
    client.loop_stop()
    client.disconnect()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """The test broker, saving its retained store rarely (not after each of the fakes)."""
    b = Broker(tmp_path, extra="autosave_interval 3600").start()
    yield b
    b.kill()


def _watch(port: int) -> tuple[subprocess.Popen[str], queue.Queue[list[dict[str, object]]]]:
    """``fleet status --watch --json`` running, and a queue of the lists it prints."""
    args = [
        "--broker",
        f"127.0.0.1:{port}",
        "--group",
        "sim",
        "--json",
        "--watch",
        "--wait",
        "0",
        "--interval",
        "1",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_runtime", "fleet", "status", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[list[dict[str, object]]] = queue.Queue()
    reader = lambda: [lines.put(json.loads(line)) for line in proc.stdout]  # type: ignore[union-attr]  # noqa: E731
    threading.Thread(target=reader, daemon=True).start()
    return proc, lines


def _status(port: int, *flags: str) -> tuple[list[dict[str, object]], str]:
    done = cli("fleet", "status", "--broker", f"127.0.0.1:{port}", "--json", *flags, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), done.stderr


def test_status_lists_the_real_devices_among_hostile_retained_messages(
    tmp_path: Path, broker: Broker
) -> None:
    assert cli("keys", "generate", "--out", tmp_path / "keys").returncode == 0
    fleet = fleet_kit.Fleet(tmp_path / "devices", 2, broker.port, tmp_path / "keys" / "signing.pub")
    _hostile_retained(broker.port)
    try:
        fleet.start(fleet.ids)
        online = lambda: [r for r in _status(broker.port, "--group", "sim", "--wait", "0")[0] if r["online"]]  # noqa: E731
        assert wait_for(lambda: len(online()) == 2, 90, interval=1)
        rows, err = _status(broker.port, "--wait", "15")
        by_id = {r["device"]: r for r in rows}
        assert len(rows) == FAKES + 3  # the fakes, the two devices, "evil" (deep/huge/junk skipped)
        assert "huge" not in by_id and "deep" not in by_id and "junk" not in by_id
        assert "not JSON or too deep" in err, err
        for device in fleet.ids:
            r = by_id[device]
            assert r["online"] is True and r["groups"] == ["sim"] and r["offline_reason"] is None
            assert r["models"] == {"vibration": {"name": "vibration_anomaly", "version": "1"}}
            assert r["pipelines"]["pump"]["state"] == "streaming" and r["outbox_pending"] is not None
        assert "\x1b" not in json.dumps(by_id["evil"]) and by_id["evil"]["online"] is False

        watch, lines = _watch(broker.port)
        first = lines.get(timeout=scaled(60))
        assert [r["online"] for r in first] == [False, True, True]
        fleet.stop(fleet.ids[:1])
        while lines.get(timeout=scaled(60))[1]["online"]:  # a health message may change a row first
            pass
        watch.send_signal(signal.SIGINT)
        assert watch.wait(scaled(20)) == 0
        rows, _ = _status(broker.port, "--group", "sim", "--wait", "0")
        assert [(r["device"], r["online"], r["offline_reason"]) for r in rows] == [
            ("evil", False, "?[2J?]0;owned?"),
            ("sim-000", False, "shutdown"),
            ("sim-001", True, None),
        ]
        capped, err = _status(broker.port, "--wait", "0", "--max-devices", "100")
        assert len(capped) == 100 and "over the device limit" in err, err
        text = cli("fleet", "status", "--broker", f"127.0.0.1:{broker.port}", "--group", "sim", "--wait", "0")
        assert text.returncode == 0 and "sim-001" in text.stdout and "\x1b" not in text.stdout, text.stdout
        assert "vibration_anomaly@1" in text.stdout
    finally:
        fleet.close()
