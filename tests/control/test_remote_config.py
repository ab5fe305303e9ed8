"""Remote configuration end to end: a real mosquitto, a real daemon, the real ``fleet config`` CLI.

One daemon (an endless synthetic pipeline) serves the module; the tests run in order, each
sending a newer config document and checking the retained report and what the daemon does.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from tests.broker import Broker, Recorder, free_port, wait_for
from tests.daemon import DaemonProcess, cli, synthetic_config

pytestmark = pytest.mark.slow

DEVICE = "cam-test"
WINDOW_S = 8
NO_FAMILY = Path(__file__).resolve().parents[1] / "data" / "no_family.onnx"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Keys, a broker, a subscriber and a running daemon, shared by the module's tests in order."""
    tmp = tmp_path_factory.mktemp("remote")
    assert cli("keys", "generate", "--out", tmp / "keys").returncode == 0
    broker = Broker(tmp).start()
    config = synthetic_config(
        tmp,
        broker.port,
        updates={"store": str(tmp / "state" / "models"), "public_keys": [str(tmp / "keys" / "signing.pub")]},
        control={"state_dir": str(tmp / "state" / "control"), "health_window_s": WINDOW_S},
    )
    recorder = Recorder(broker.port)
    daemon = DaemonProcess(config, tmp / "daemon.log")
    try:
        assert wait_for(lambda: len(recorder.on("/predictions/front")) >= 3, 60), daemon.log()
        yield {"tmp": tmp, "broker": broker, "recorder": recorder, "daemon": daemon, "config": config}
    finally:
        daemon.terminate()
        recorder.close()
        broker.kill()


def variant(site: dict[str, Any], name: str, change: Any) -> Path:
    """The running config file with ``change(data)`` applied, written as ``name``."""
    data = copy.deepcopy(yaml.safe_load(site["config"].read_text()))
    change(data)
    path = site["tmp"] / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def fleet_config(site: dict[str, Any], path: Path, *extra: str) -> Any:
    return cli(
        "fleet",
        "config",
        path,
        "--device",
        DEVICE,
        "--key",
        site["tmp"] / "keys" / "signing.key",
        "--broker",
        f"127.0.0.1:{site['broker'].port}",
        "--wait",
        "90",
        *extra,
        timeout=150,
    )


def reports(site: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in site["recorder"].on(f"{DEVICE}/config/reported") if isinstance(r, dict)]


def test_a_typo_is_rejected_with_key_and_line_and_the_old_config_keeps_running(site: dict[str, Any]) -> None:
    typo = variant(site, "typo.yaml", lambda d: d["health"].update(interval_z=2))
    done = fleet_config(site, typo)
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads(done.stdout)["devices"][DEVICE]
    assert report["state"] == "rejected"
    line = 1 + typo.read_text().splitlines().index("  interval_z: 2")
    assert re.search(rf"config v\d+:{line}: health\.interval_z", report["reason"]), report["reason"]
    before = len(site["recorder"].on("/predictions/front"))
    assert wait_for(lambda: len(site["recorder"].on("/predictions/front")) >= before + 3, 30)


def test_a_signed_config_is_applied_without_a_restart(site: dict[str, Any]) -> None:
    def change(d: dict[str, Any]) -> None:
        d["health"]["interval_s"] = 3
        d["pipelines"][0]["every_n_frames"] = 5

    done = fleet_config(site, variant(site, "applied.yaml", change))
    assert done.returncode == 0, done.stdout + done.stderr + site["daemon"].log()[-3000:]
    assert json.loads(done.stdout)["devices"][DEVICE]["state"] == "applied"
    assert site["daemon"].proc.poll() is None  # the same process: no restart
    rec = site["recorder"]
    start = len(rec.on("/predictions/front"))
    assert wait_for(lambda: len(rec.on("/predictions/front")) >= start + 4, 60)
    later = rec.on("/predictions/front")[start + 1 :]  # one might have been in flight
    assert all(p["frame"]["index"] % 5 == 0 for p in later), [p["frame"]["index"] for p in later]
    health_at = len(rec.on(f"{DEVICE}/health"))
    stamps: list[float] = []
    assert wait_for(lambda: len(rec.on(f"{DEVICE}/health")) >= health_at + 4, 60)
    stamps = [h["ts"] for h in rec.on(f"{DEVICE}/health")[health_at + 1 :]]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert min(gaps) >= 2.9, gaps  # the wait between health messages is 3 s now (was 1 s)


def test_unsigned_stale_and_repeated_documents_change_nothing(site: dict[str, Any]) -> None:
    rec = site["recorder"]
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="operator", protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", site["broker"].port)
    client.loop_start()
    unsigned = {
        "document": json.dumps({"kind": "config", "version": 10**15, "config": "x: 1"}),
        "signature": "",
    }
    client.publish(
        f"edge/{DEVICE}/config/desired", json.dumps(unsigned), qos=1, retain=True
    ).wait_for_publish(10)
    assert wait_for(lambda: reports(site)[-1]["state"] == "rejected", 30)
    assert "does not verify" in reports(site)[-1]["reason"]
    stale = fleet_config(site, site["config"], "--version", "5")
    assert stale.returncode == 1
    reason = json.loads(stale.stdout)["devices"][DEVICE]["reason"]
    assert "version 5 is not newer than version" in reason
    count = len(reports(site))
    retained = rec.on(f"{DEVICE}/config/desired")[-1]
    client.publish(
        f"edge/{DEVICE}/config/desired", json.dumps(retained), qos=1, retain=True
    ).wait_for_publish(10)
    probe = variant(site, "locked.yaml", lambda d: d["device"].update(id="someone-else"))
    locked = fleet_config(site, probe)  # the repeated one is skipped as seen, or replaced by this one
    client.loop_stop()
    client.disconnect()
    assert "device.id cannot be changed remotely" in json.loads(locked.stdout)["devices"][DEVICE]["reason"]
    assert len(reports(site)) == count + 1  # the stale document re-sent: nothing reported for it


def test_a_config_whose_pipelines_cannot_start_is_rolled_back(site: dict[str, Any]) -> None:
    """The file exists (validate passes) but is no model the daemon can run: nothing starts."""
    broken = variant(site, "broken.yaml", lambda d: d["models"]["person"].update(path=str(NO_FAMILY)))
    done = fleet_config(site, broken)
    assert done.returncode == 1
    report = json.loads(done.stdout)["devices"][DEVICE]
    assert report["state"] == "rolled_back" and report["reason"].startswith("did not start: "), report
    before = len(site["recorder"].on("/predictions/front"))
    assert wait_for(lambda: len(site["recorder"].on("/predictions/front")) >= before + 2, 60)


def test_a_config_that_loses_the_broker_is_rolled_back(site: dict[str, Any]) -> None:
    rec = site["recorder"]
    lost = variant(site, "lost.yaml", lambda d: d["mqtt"].update(port=free_port()))
    done = fleet_config(site, lost)
    assert done.returncode == 1
    report = json.loads(done.stdout)["devices"][DEVICE]
    assert report["state"] == "rolled_back", report
    assert "the broker is not connected" in report["reason"]
    online = [s for s in rec.on(f"{DEVICE}/status") if s.get("state") == "online"]
    assert online, "the device is back online"
    before = len(rec.on("/predictions/front"))
    assert wait_for(lambda: len(rec.on("/predictions/front")) >= before + 2, 60)


def test_a_restart_runs_the_last_applied_config_and_rereads_nothing(site: dict[str, Any]) -> None:
    """After the rollback above, the retained desired document is the one that lost the broker:
    a restarted daemon reads it again at connect and does nothing with it; it runs the config
    applied before (every 5th frame), not the file it was started with."""
    rec = site["recorder"]
    assert site["daemon"].terminate() == 0
    count = len(reports(site))
    before = len(rec.on("/predictions/front"))
    site["daemon"] = DaemonProcess(site["config"], site["tmp"] / "daemon2.log")
    assert wait_for(lambda: len(rec.on("/predictions/front")) >= before + 4, 60), site["daemon"].log()
    assert all(p["frame"]["index"] % 5 == 0 for p in rec.on("/predictions/front")[before:])
    assert "running remote config v" in site["daemon"].log()
    assert len(reports(site)) == count
