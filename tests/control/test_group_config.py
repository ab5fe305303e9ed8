"""One config pushed to a group of three real daemons: each applies it, keeping its own device id."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.broker import Broker, Recorder, wait_for
from tests.daemon import DaemonProcess, cli, synthetic_config

pytestmark = pytest.mark.slow

DEVICES = ("cam-a", "cam-b", "cam-c")


def test_the_same_config_applies_on_all_three_devices_of_a_group(tmp_path: Path) -> None:
    assert cli("keys", "generate", "--out", tmp_path / "keys").returncode == 0
    broker = Broker(tmp_path).start()
    recorder = Recorder(broker.port)
    daemons, configs = [], []
    try:
        for device in DEVICES:
            folder = tmp_path / device
            folder.mkdir()
            path = synthetic_config(folder, broker.port, device={"id": device, "groups": ["lab"]})
            data = yaml.safe_load(path.read_text())
            del data["outbox"]  # its state lives under $STATE_DIRECTORY, as under systemd
            data["updates"] = {"public_keys": [str(tmp_path / "keys" / "signing.pub")]}
            data["control"] = {"health_window_s": 30}
            path.write_text(yaml.safe_dump(data, sort_keys=False))
            configs.append(path)
            state = {"STATE_DIRECTORY": str(folder / "state")}
            daemons.append(DaemonProcess(path, folder / "daemon.log", env=state))
        for device in DEVICES:
            assert wait_for(lambda d=device: bool(recorder.on(f"{d}/predictions/front")), 90)
        shared = yaml.safe_load(configs[0].read_text())
        del shared["device"]  # each device keeps its own id and groups
        shared["pipelines"][0]["every_n_frames"] = 3
        document = tmp_path / "lab.yaml"
        document.write_text(yaml.safe_dump(shared, sort_keys=False))
        done = cli(
            "fleet",
            "config",
            document,
            "--group",
            "lab",
            "--key",
            tmp_path / "keys" / "signing.key",
            "--broker",
            f"127.0.0.1:{broker.port}",
            "--wait",
            "150",
            timeout=200,
        )
        summary = json.loads(done.stdout)
        assert done.returncode == 0, done.stdout + done.stderr
        assert sorted(summary["devices"]) == list(DEVICES)
        assert {r["state"] for r in summary["devices"].values()} == {"applied"}
        for device in DEVICES:  # each runs it: every 3rd frame now, under its own device id
            topic = f"{device}/predictions/front"
            start = len(recorder.on(topic))
            assert wait_for(lambda t=topic, n=start: len(recorder.on(t)) >= n + 3, 60)
            assert all(p["frame"]["index"] % 3 == 0 for p in recorder.on(topic)[start + 1 :])
            assert {p["device"] for p in recorder.on(topic)[start:]} == {device}
    finally:
        for daemon in daemons:
            daemon.terminate()
        recorder.close()
        broker.kill()
